package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"
)

type connectResult struct {
	Scenario        string      `json:"scenario"`
	Conns           int         `json:"conns"`
	Connect         latency     `json:"connect"`
	Before          serverStats `json:"server_before"`
	After           serverStats `json:"server_after"`
	RSSPerSession   float64     `json:"rss_bytes_per_session"`
	HeapPerSession  float64     `json:"heap_bytes_per_session"`
	GoroutinesPerSn float64     `json:"goroutines_per_session"`
}

func runConnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	conns := fs.Int("conns", 10000, "idle sessions to open (one per user)")
	hold := fs.Duration("hold", 10*time.Second, "how long to hold them before measuring")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkFlags(atLeast("conns", *conns, 1), notNegative("hold", *hold)); err != nil {
		return err
	}
	tokens, err := c.setup()
	if err != nil {
		return err
	}
	before, err := settle(ctx, c.url, 0)
	if err != nil {
		return fmt.Errorf("read the node's /metrics: %w", err)
	}
	names := make([]string, *conns)
	for i := range names {
		names[i] = fmt.Sprintf("%sc%d", c.prefix, i)
	}
	fmt.Fprintf(stderr, "connect: opening %d sessions at %d/s\n", *conns, c.dialRate)
	start := time.Now()
	open, lats, err := c.dialAll(ctx, names, tokens)
	if err != nil {
		return err
	}
	defer func() {
		for _, conn := range open {
			conn.Abort()
		}
	}()
	fmt.Fprintf(stderr, "connect: %d sessions open in %s; holding %s\n", len(open), time.Since(start).Truncate(time.Millisecond), *hold)
	after, err := settle(ctx, c.url, *hold)
	if err != nil {
		return err
	}
	var h hist
	for _, l := range lats {
		h.add(l)
	}
	n := float64(*conns)
	res := connectResult{
		Scenario: "connect", Conns: *conns, Connect: h.summary(), Before: before, After: after,
		RSSPerSession:   (after.RSS - before.RSS) / n,
		HeapPerSession:  (after.HeapInuse - before.HeapInuse) / n,
		GoroutinesPerSn: (after.Goroutines - before.Goroutines) / n,
	}
	report(stdout, c.jsonOut, res, [][2]string{
		{"scenario", fmt.Sprintf("connect: %d idle authenticated sessions", *conns)},
		{"connect latency", fmtLat(res.Connect)},
		{"server RSS", fmt.Sprintf("%s → %s: %.2f KiB per session", mib(before.RSS), mib(after.RSS), res.RSSPerSession/1024)},
		{"server heap in use", fmt.Sprintf("%s → %s: %.2f KiB per session", mib(before.HeapInuse), mib(after.HeapInuse), res.HeapPerSession/1024)},
		{"server goroutines", fmt.Sprintf("%.0f → %.0f: %.2f per session", before.Goroutines, after.Goroutines, res.GoroutinesPerSn)},
	})
	return nil
}
