package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetchat/jetchat/client"
)

type mixedSample struct {
	AtS        float64 `json:"at_s"`
	RSS        float64 `json:"rss_bytes"`
	HeapInuse  float64 `json:"heap_inuse_bytes"`
	HeapLive   float64 `json:"heap_live_bytes"`
	Goroutines float64 `json:"goroutines"`
}

type mixedResult struct {
	Scenario    string        `json:"scenario"`
	Users       int           `json:"users"`
	DurationS   float64       `json:"duration_s"`
	Sent        int64         `json:"sent"`
	Deliveries  int64         `json:"deliveries"`
	Receipts    int64         `json:"receipts"`
	Typing      int64         `json:"typing_frames"`
	Presence    int64         `json:"presence_frames"`
	Media       int64         `json:"media_round_trips"`
	Reconnects  int64         `json:"reconnects"`
	Aborted     int64         `json:"sends_cut_by_reconnect"`
	Errors      int64         `json:"errors"`
	Lost        int64         `json:"lost_deliveries"`
	Samples     []mixedSample `json:"server_samples"`
	SendToDeliv latency       `json:"send_to_delivery"`
}

// mixedUser is one simulated user of the mixed soak.
type mixedUser struct {
	name  string
	group int
	mu    sync.Mutex
	conn  *client.Conn
	churn bool // the tool is replacing conn
	got   map[string]bool
	acks  []string
	ready chan struct{}
}

func runMixed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mixed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	users := fs.Int("users", 200, "online users (in groups of --group-size)")
	groupSize := fs.Int("group-size", 10, "members per group")
	perUser := fs.Float64("rate", 0.5, "actions per second per user")
	dur := fs.Duration("duration", 30*time.Minute, "how long to soak")
	every := fs.Duration("sample", 10*time.Second, "how often to read the node's memory and goroutines")
	churn := fs.Float64("churn", 0.02, "fraction of users that reconnect every sample interval")
	drain := fs.Duration("drain", 30*time.Second, "how long to wait for the last deliveries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !(*perUser > 0 && *perUser <= 1000) { // also NaN
		return fmt.Errorf("--rate %v: want actions per second per user, above 0 and at most 1000", *perUser)
	}
	if err := checkFlags(atLeast("group-size", *groupSize, 2), positive("duration", *dur), positive("sample", *every),
		fraction("churn", *churn), notNegative("drain", *drain)); err != nil {
		return err
	}
	tokens, err := c.setup()
	if err != nil {
		return err
	}
	if *users < 2**groupSize {
		return fmt.Errorf("--users must be at least twice --group-size")
	}
	us := make([]*mixedUser, *users)
	names := make([]string, *users)
	for i := range us {
		names[i] = fmt.Sprintf("%sx%d", c.prefix, i)
		us[i] = &mixedUser{name: names[i], group: i / *groupSize, got: map[string]bool{}, ready: make(chan struct{}, 1)}
	}
	ngroups := (*users + *groupSize - 1) / *groupSize
	gids := make([]string, ngroups)
	for g := range gids {
		lo, hi := g**groupSize, min((g+1)**groupSize, *users)
		tok, _ := tokens(names[lo], "bench")
		var out struct{ ID string }
		if err := (&client.API{BaseURL: c.url, Token: tok}).Do(ctx, "POST", "/v1/groups", map[string]any{"name": "soak", "members": names[lo+1 : hi]}, &out); err != nil {
			return fmt.Errorf("create group: %w", err)
		}
		gids[g] = out.ID
	}

	var (
		sent, deliveries, receipts, typing, presence, media, reconnects, errs, aborted atomic.Int64
		toDeliv                                                                        hist
		expectMu                                                                       sync.Mutex
		expect                                                                         = map[string][]*mixedUser{} // message id → recipients
	)
	attach := func(u *mixedUser, conn *client.Conn) {
		conn.OnFrame(func(f *client.Frame) {
			switch {
			case f.Message != nil:
				u.mu.Lock()
				if !u.got[f.Message.ID] {
					u.got[f.Message.ID] = true
					deliveries.Add(1)
					sentAt, _, _ := strings.Cut(f.Message.Body, "|") // the body starts with its send time
					if ns, err := strconv.ParseInt(sentAt, 10, 64); err == nil {
						toDeliv.add(time.Since(time.Unix(0, ns)))
					}
				}
				u.acks = append(u.acks, f.Message.ID)
				u.mu.Unlock()
				if f.Message.From != u.name && rand.IntN(2) == 0 {
					conn.Read(f.Message.ID)
				}
			case f.Receipt != nil || f.Receipts != nil:
				receipts.Add(int64(len(f.ReceiptItems())))
				u.mu.Lock()
				u.acks = append(u.acks, f.ID())
				u.mu.Unlock()
			case f.Typing != nil:
				typing.Add(1)
				return
			case f.Presence != nil:
				presence.Add(1)
				return
			case f.Error != nil:
				errs.Add(1)
				fmt.Fprintf(stderr, "error frame for %s: %s %s\n", u.name, f.Error.Code, f.Error.Message)
				return
			default:
				return
			}
			select {
			case u.ready <- struct{}{}:
			default:
			}
		})
		// Follow a few contacts.
		var follow []string
		for k := 0; k < 5; k++ {
			follow = append(follow, names[rand.IntN(len(names))])
		}
		conn.Subscribe(follow...)
	}
	conns, _, err := c.dialAll(ctx, names, tokens)
	if err != nil {
		return err
	}
	for i, u := range us {
		u.conn = conns[i]
		attach(u, conns[i])
	}
	runCtx, stopRun := context.WithTimeout(ctx, *dur)
	defer stopRun()
	var wg sync.WaitGroup
	// Ackers: each user acks what it received every 50 ms.
	for _, u := range us {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-u.ready:
				}
				time.Sleep(50 * time.Millisecond)
				u.mu.Lock()
				ids, conn := u.acks, u.conn
				u.acks = nil
				u.mu.Unlock()
				if len(ids) > 0 {
					conn.Ack(ids...)
				}
			}
		}()
	}
	httpc := &http.Client{Timeout: 30 * time.Second}
	// Actors.
	for i, u := range us {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 99))
			other := func() *mixedUser { // anyone but u: a note to self never comes back to its device
				k := r.IntN(len(us) - 1)
				if k >= i {
					k++
				}
				return us[k]
			}
			interval := time.Duration(float64(time.Second) / *perUser)
			select { // spread the users' actions over one interval, as people act unprompted by each other
			case <-runCtx.Done():
				return
			case <-time.After(time.Duration(r.Int64N(int64(interval) + 1))):
			}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
				}
				u.mu.Lock()
				conn := u.conn
				u.mu.Unlock()
				body := fmt.Sprint(time.Now().UnixNano(), "|soak")
				var req client.SendRequest
				var recipients []*mixedUser
				var mediaID string
				var mediaPeer *mixedUser
				switch p := r.Float64(); {
				case p < 0.55:
					peer := other()
					req = client.SendRequest{To: peer.name, Body: body}
					recipients = []*mixedUser{peer}
				case p < 0.85:
					req = client.SendRequest{Group: gids[u.group], Body: body}
					lo, hi := u.group**groupSize, min((u.group+1)**groupSize, len(us))
					for _, m := range us[lo:hi] {
						if m != u {
							recipients = append(recipients, m)
						}
					}
				case p < 0.95:
					conn.TypingTo(other().name)
					continue
				default:
					// A media round trip: upload, send, the recipient downloads.
					peer := other()
					tok, _ := tokens(u.name, "bench")
					hreq, _ := http.NewRequestWithContext(runCtx, "POST", c.url+"/v1/media", bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 10<<10)))
					hreq.Header.Set("Content-Type", "application/octet-stream")
					var info struct{ ID string }
					if err := (&client.API{BaseURL: c.url, Token: tok, HTTP: httpc}).DoRequest(hreq, &info); err != nil {
						if runCtx.Err() == nil {
							errs.Add(1)
							fmt.Fprintf(stderr, "upload by %s: %v\n", u.name, err)
						}
						continue
					}
					req = client.SendRequest{To: peer.name, Body: body, Media: info.ID}
					recipients = []*mixedUser{peer}
					mediaID, mediaPeer = info.ID, peer
				}
				sctx, cancel := context.WithTimeout(runCtx, 30*time.Second)
				s, err := conn.SendMsg(sctx, req)
				cancel()
				if err != nil {
					u.mu.Lock()
					churned := u.churn || u.conn != conn // the tool closed this connection meanwhile
					u.mu.Unlock()
					switch {
					case runCtx.Err() != nil:
					case churned && errors.Is(err, client.ErrClosed):
						aborted.Add(1) // unknown whether stored; not counted either way
					default:
						errs.Add(1)
						fmt.Fprintf(stderr, "send by %s: %v\n", u.name, err)
					}
					continue
				}
				sent.Add(1)
				expectMu.Lock()
				expect[s.ID] = recipients
				expectMu.Unlock()
				if mediaID != "" {
					// The recipient downloads what it was sent.
					go func(peer *mixedUser, id string) {
						ptok, _ := tokens(peer.name, "bench")
						greq, _ := http.NewRequestWithContext(runCtx, "GET", c.url+"/v1/media/"+id, nil)
						if err := (&client.API{BaseURL: c.url, Token: ptok, HTTP: httpc}).DoRequest(greq, nil); err == nil {
							media.Add(1)
						} else if runCtx.Err() == nil {
							errs.Add(1)
							fmt.Fprintf(stderr, "download by %s: %v\n", peer.name, err)
						}
					}(mediaPeer, mediaID)
				}
			}
		}()
	}
	// Sampler and churn.
	var samples []mixedSample
	start := time.Now()
	sampleTick := time.NewTicker(*every)
	defer sampleTick.Stop()
	for done := false; !done; {
		select {
		case <-runCtx.Done():
			done = true
			continue
		case <-sampleTick.C:
		}
		if st, err := scrape(ctx, c.url); err == nil {
			samples = append(samples, mixedSample{AtS: time.Since(start).Seconds(), RSS: st.RSS, HeapInuse: st.HeapInuse, HeapLive: st.HeapLive, Goroutines: st.Goroutines})
			fmt.Fprintf(stderr, "%5.0fs sent=%d deliveries=%d receipts=%d media=%d reconnects=%d errors=%d rss=%s heap=%s live=%s goroutines=%.0f\n",
				time.Since(start).Seconds(), sent.Load(), deliveries.Load(), receipts.Load(), media.Load(), reconnects.Load(), errs.Load(), mib(st.RSS), mib(st.HeapInuse), mib(st.HeapLive), st.Goroutines)
		}
		for _, u := range us {
			if rand.Float64() >= *churn {
				continue
			}
			u.mu.Lock()
			old := u.conn
			u.churn = true
			u.mu.Unlock()
			old.Close()
			tok, _ := tokens(u.name, "bench")
			nc, err := client.DialWith(ctx, c.wsURL(), tok, c.options())
			if err != nil {
				errs.Add(1)
				fmt.Fprintf(stderr, "reconnect %s: %v\n", u.name, err)
				u.mu.Lock()
				u.churn = false
				u.mu.Unlock()
				continue
			}
			attach(u, nc)
			u.mu.Lock()
			u.conn = nc
			u.churn = false
			u.mu.Unlock()
			reconnects.Add(1)
		}
	}
	elapsed := time.Since(start)
	wg.Wait()
	// Drain, then account for every stored message.
	var lost int64
	deadline := time.Now().Add(*drain)
	for {
		lost = 0
		expectMu.Lock()
		for id, rs := range expect {
			for _, r := range rs {
				r.mu.Lock()
				if !r.got[id] {
					lost++
				}
				r.mu.Unlock()
			}
		}
		expectMu.Unlock()
		if lost == 0 || time.Now().After(deadline) {
			break
		}
		for _, u := range us {
			u.mu.Lock()
			ids, conn := u.acks, u.conn
			u.acks = nil
			u.mu.Unlock()
			if len(ids) > 0 {
				conn.Ack(ids...)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if lost > 0 {
		shown := 0
		expectMu.Lock()
		for id, rs := range expect {
			for _, r := range rs {
				r.mu.Lock()
				miss := !r.got[id]
				r.mu.Unlock()
				if miss && shown < 10 {
					fmt.Fprintf(stderr, "lost: %s for %s\n", id, r.name)
					shown++
				}
			}
		}
		expectMu.Unlock()
	}
	for _, u := range us {
		u.conn.Abort()
	}
	res := mixedResult{
		Scenario: "mixed", Users: *users, DurationS: elapsed.Seconds(), Sent: sent.Load(), Deliveries: deliveries.Load(),
		Receipts: receipts.Load(), Typing: typing.Load(), Presence: presence.Load(), Media: media.Load(),
		Reconnects: reconnects.Load(), Aborted: aborted.Load(), Errors: errs.Load(), Lost: lost, Samples: samples, SendToDeliv: toDeliv.summary(),
	}
	rows := [][2]string{
		{"scenario", fmt.Sprintf("mixed: %d users, %.1f actions/s each, %s", *users, *perUser, elapsed.Truncate(time.Second))},
		{"sent (1:1, group, media)", fmt.Sprint(res.Sent)},
		{"deliveries / receipts", fmt.Sprintf("%d / %d", res.Deliveries, res.Receipts)},
		{"typing / presence frames", fmt.Sprintf("%d / %d", res.Typing, res.Presence)},
		{"media round trips", fmt.Sprint(res.Media)},
		{"reconnects (sends cut by them)", fmt.Sprintf("%d (%d)", res.Reconnects, res.Aborted)},
		{"errors", fmt.Sprint(res.Errors)},
		{"lost deliveries", fmt.Sprint(res.Lost)},
		{"send → first delivery to each recipient", fmtLat(res.SendToDeliv)},
	}
	if n := len(samples); n > 1 {
		a, b := samples[min(1, n-1)], samples[n-1]
		rows = append(rows,
			[2]string{"server RSS", fmt.Sprintf("%s at %.0fs → %s at %.0fs", mib(a.RSS), a.AtS, mib(b.RSS), b.AtS)},
			[2]string{"server heap in use", fmt.Sprintf("%s → %s", mib(a.HeapInuse), mib(b.HeapInuse))},
			[2]string{"server live heap (last GC)", fmt.Sprintf("%s → %s", mib(a.HeapLive), mib(b.HeapLive))},
			[2]string{"server goroutines", fmt.Sprintf("%.0f → %.0f", a.Goroutines, b.Goroutines)})
	}
	report(stdout, c.jsonOut, res, rows)
	if lost > 0 || res.Errors > 0 {
		return fmt.Errorf("FAILED: %d deliveries lost, %d errors", lost, res.Errors)
	}
	return nil
}
