package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/auth"
)

// common are the flags every scenario shares.
type common struct {
	url      string
	data     string
	secret   string
	jsonOut  bool
	prefix   string
	dialRate int
	gateways string // several gateways' HTTP addresses (dialAll spreads users)
	route    bool   // dialAll connects each user to its owner (GET /v1/route)
	receipts string // how sessions take receipts: batch or single
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "the node's HTTP address (WebSockets go to its /v1/ws)")
	fs.StringVar(&c.data, "data", "./data", "the node's data folder, for its generated token secret")
	fs.StringVar(&c.secret, "jwt-secret", os.Getenv("JETCHAT_JWT_SECRET"), "the node's HS256 secret (instead of --data)")
	fs.BoolVar(&c.jsonOut, "json", false, "print the summary as JSON")
	fs.StringVar(&c.prefix, "prefix", "", "user id prefix (default: random per run, so runs do not share inboxes)")
	fs.IntVar(&c.dialRate, "dial-rate", 2000, "connections opened per second")
	fs.StringVar(&c.gateways, "gateways", "", "comma-separated HTTP addresses of several gateways: users are spread over them (instead of --url)")
	fs.StringVar(&c.receipts, "receipts", "batch", "how sessions take receipts: batch (a receipts frame per stored batch, ?receipts=batch) or single (a receipt frame each)")
	fs.BoolVar(&c.route, "route", false, "connect each user to the gateway that owns it: GET /v1/route at --url (or the --gateways in turn), following 421")
}

// dialURL connects user number i with tok: to its owner with --route, else
// to --url or the --gateways in turn.
func (c *common) dialURL(ctx context.Context, i int, tok string) (*client.Conn, error) {
	base := c.url
	if c.gateways != "" {
		gws := strings.Split(c.gateways, ",")
		base = strings.TrimSpace(gws[i%len(gws)])
	}
	if c.route {
		return client.DialRouteWith(ctx, base, tok, c.options())
	}
	return client.DialWith(ctx, (&common{url: base}).wsURL(), tok, c.options())
}

// options are the sessions' options (--receipts).
func (c *common) options() client.Options {
	return client.Options{BatchReceipts: c.receipts == "batch"}
}

func (c *common) setup() (tokens func(user, device string) (string, error), err error) {
	if err := checkFlags(atLeast("dial-rate", c.dialRate, 1)); err != nil {
		return nil, err
	}
	if c.receipts != "batch" && c.receipts != "single" {
		return nil, fmt.Errorf("--receipts must be batch or single, not %q", c.receipts)
	}
	var secret []byte
	if c.secret != "" {
		secret, err = auth.ParseSecret(c.secret)
	} else {
		secret, err = os.ReadFile(c.data + "/" + auth.SecretFile)
		if err == nil {
			secret, err = auth.ParseSecret(strings.TrimSpace(string(secret)))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("token secret: %w", err)
	}
	if c.prefix == "" {
		c.prefix = "b" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + "-"
	}
	return func(user, device string) (string, error) {
		return auth.Mint(secret, user, device, 24*time.Hour, time.Now())
	}, nil
}

func (c *common) wsURL() string {
	u := strings.TrimRight(c.url, "/")
	u = strings.Replace(u, "http://", "ws://", 1)
	u = strings.Replace(u, "https://", "wss://", 1)
	return u + "/v1/ws"
}

// dialAll connects users (device "bench") at the dial rate.
func (c *common) dialAll(ctx context.Context, users []string, tokens func(string, string) (string, error)) ([]*client.Conn, []time.Duration, error) {
	conns := make([]*client.Conn, len(users))
	lat := make([]time.Duration, len(users))
	var wg sync.WaitGroup
	var firstErr atomic.Value
	tick := time.NewTicker(time.Second / time.Duration(max(c.dialRate, 1)))
	defer tick.Stop()
	sem := make(chan struct{}, 256)
	for i, u := range users {
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-tick.C:
		}
		tok, err := tokens(u, "bench")
		if err != nil {
			return nil, nil, err
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			start := time.Now()
			conn, err := c.dialURL(dctx, i, tok)
			if err != nil {
				firstErr.CompareAndSwap(nil, fmt.Errorf("dial %s: %w", u, err))
				return
			}
			lat[i] = time.Since(start)
			conns[i] = conn
		}()
	}
	wg.Wait()
	if e, _ := firstErr.Load().(error); e != nil {
		for _, conn := range conns {
			if conn != nil {
				conn.Abort()
			}
		}
		return nil, nil, e
	}
	return conns, lat, nil
}

// hist collects latency samples.
type hist struct {
	mu sync.Mutex
	ns []int64
	at []int64 // when each sample was taken (Unix ns), for timeline
}

func (h *hist) add(d time.Duration) {
	now := time.Now().UnixNano()
	h.mu.Lock()
	h.ns = append(h.ns, int64(d))
	h.at = append(h.at, now)
	h.mu.Unlock()
}

// timeline writes one line per step of the run: the samples taken in it,
// their p50, p99 and max. It shows whether a tail is spread evenly or comes
// in bursts. Its first line says when the first step starts, to line the
// steps up with the node's logs.
func (h *hist) timeline(w io.Writer, step time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.at) == 0 {
		return
	}
	start := h.at[0]
	for _, t := range h.at {
		start = min(start, t)
	}
	fmt.Fprintf(w, "(steps from %s, Unix time %.3f)\n", time.Unix(0, start).UTC().Format("15:04:05.000"), float64(start)/1e9)
	buckets := map[int64][]int64{}
	last := int64(0)
	for i, t := range h.at {
		b := (t - start) / int64(step)
		buckets[b] = append(buckets[b], h.ns[i])
		last = max(last, b)
	}
	for b := int64(0); b <= last; b++ {
		s := buckets[b]
		if len(s) == 0 {
			continue
		}
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		q := func(p float64) float64 { return float64(s[int(p*float64(len(s)-1))]) / 1e6 }
		fmt.Fprintf(w, "%8.2fs n=%5d p50=%7.1fms p99=%7.1fms max=%7.1fms\n",
			(time.Duration(b) * step).Seconds(), len(s), q(.5), q(.99), q(1))
	}
}

// summary returns count and percentiles in milliseconds.
func (h *hist) summary() latency {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := append([]int64(nil), h.ns...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		i := int(p * float64(len(s)-1))
		return float64(s[i]) / 1e6
	}
	out := latency{N: len(s), P50: q(.5), P90: q(.9), P99: q(.99), P999: q(.999)}
	if len(s) > 0 {
		out.Max = float64(s[len(s)-1]) / 1e6
	}
	return out
}

// latency is a latency summary in milliseconds.
type latency struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
}

// serverStats are process figures read from the node's /metrics.
type serverStats struct {
	RSS        float64 `json:"rss_bytes"`
	HeapInuse  float64 `json:"heap_inuse_bytes"`
	HeapLive   float64 `json:"heap_live_bytes"` // as the last GC found it
	Goroutines float64 `json:"goroutines"`
	CPU        float64 `json:"cpu_seconds"` // user + system, since the node started
}

// nodes are the HTTP addresses of the nodes the run talks to.
func (c *common) nodes() []string {
	if c.gateways == "" {
		return []string{c.url}
	}
	var out []string
	for _, g := range strings.Split(c.gateways, ",") {
		out = append(out, strings.TrimSpace(g))
	}
	return out
}

// cpuMeter measures the CPU time the nodes (summed) and this tool spend
// between start and stop: the cost of the work, which unlike throughput
// does not depend on how busy the machine's cores were. With --gateways
// it counts the gateways' processes, not NATS servers of their own.
type cpuMeter struct {
	bases            []string
	node0, tool0     float64
	nodeSec, toolSec float64
	ok               bool
}

func startCPU(ctx context.Context, bases []string) *cpuMeter {
	m := &cpuMeter{bases: bases, tool0: toolCPU()}
	m.node0, m.ok = nodesCPU(ctx, bases)
	return m
}

func (m *cpuMeter) stop(ctx context.Context) {
	m.toolSec = toolCPU() - m.tool0
	if !m.ok {
		return
	}
	cpu, ok := nodesCPU(ctx, m.bases)
	if m.ok = ok; ok {
		m.nodeSec = cpu - m.node0
	}
}

// nodesCPU sums the nodes' process CPU seconds; ok is false when one of
// them did not answer.
func nodesCPU(ctx context.Context, bases []string) (sum float64, ok bool) {
	for _, b := range bases {
		st, err := scrape(ctx, b)
		if err != nil || st.CPU <= 0 {
			return 0, false
		}
		sum += st.CPU
	}
	return sum, true
}

// perUnit returns the node's and the tool's CPU microseconds per unit of
// work (0 for the node when its /metrics could not be read).
func (m *cpuMeter) perUnit(units int64) (node, tool float64) {
	if units <= 0 {
		return 0, 0
	}
	if m.ok {
		node = m.nodeSec * 1e6 / float64(units)
	}
	return node, m.toolSec * 1e6 / float64(units)
}

// fmtCPU formats perUnit's figures.
func fmtCPU(node, tool float64) string {
	n := "not measured (a node's /metrics did not answer)"
	if node > 0 {
		n = fmt.Sprintf("%.0f µs", node)
	}
	return fmt.Sprintf("node %s, load tool %.0f µs", n, tool)
}

// toolCPU is this process's user + system CPU time in seconds.
func toolCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func scrape(ctx context.Context, base string) (serverStats, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(base, "/")+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return serverStats{}, err
	}
	defer resp.Body.Close()
	var st serverStats
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			st.RSS = v
		case "go_memstats_heap_inuse_bytes":
			st.HeapInuse = v
		case "go_gc_heap_live_bytes":
			st.HeapLive = v
		case "go_goroutines":
			st.Goroutines = v
		case "process_cpu_seconds_total":
			st.CPU = v
		}
	}
	return st, sc.Err()
}

// settle waits for the server's heap to settle and scrapes it.
func settle(ctx context.Context, base string, wait time.Duration) (serverStats, error) {
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
	return scrape(ctx, base)
}

// startProgress prints a line to w every second until the returned stop
// is called; stop returns once it has printed its last.
func startProgress(w io.Writer, line func(elapsed time.Duration) string) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fmt.Fprintln(w, line(time.Since(start).Truncate(time.Second)))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// report prints rows as a table, or v as JSON.
func report(w io.Writer, asJSON bool, v any, rows [][2]string) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	tw.Flush()
}

func fmtLat(l latency) string {
	return fmt.Sprintf("n=%d p50=%.2fms p90=%.2fms p99=%.2fms p99.9=%.2fms max=%.2fms", l.N, l.P50, l.P90, l.P99, l.P999, l.Max)
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// bound is one condition on a scenario's flag, which checkFlags refuses up
// front, naming the flag and its value, before anything is dialled.
type bound struct {
	ok   bool
	flag string
	val  any
	want string
}

// checkFlags returns an error for the first bound not met, or nil.
func checkFlags(bs ...bound) error {
	for _, b := range bs {
		if !b.ok {
			return fmt.Errorf("--%s %v: want %s", b.flag, b.val, b.want)
		}
	}
	return nil
}

func atLeast(flag string, v, least int) bound {
	return bound{v >= least, flag, v, fmt.Sprintf("at least %d", least)}
}

func notNegative(flag string, d time.Duration) bound {
	return bound{d >= 0, flag, d, "0 or more"}
}

func positive(flag string, d time.Duration) bound {
	return bound{d > 0, flag, d, "more than 0"}
}

func fraction(flag string, f float64) bound {
	return bound{f >= 0 && f <= 1, flag, f, "a fraction from 0 to 1"} // also refuses NaN
}
