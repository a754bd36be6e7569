package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetchat/jetchat/client"
)

type backlogResult struct {
	Scenario      string      `json:"scenario"`
	Users         int         `json:"users"`
	Messages      int         `json:"messages_each"`
	Fill          string      `json:"fill"`
	FillSeconds   float64     `json:"fill_s"`
	Before        serverStats `json:"server_before"`
	AfterFill     serverStats `json:"server_after_fill"`
	GrowthPerUser float64     `json:"rss_growth_bytes_per_offline_user"`
	CatchUp       latency     `json:"catch_up"`
	FirstMessage  latency     `json:"first_message"`
	NodeCPUUS     float64     `json:"node_cpu_us_per_catch_up"`
	ToolCPUUS     float64     `json:"tool_cpu_us_per_catch_up"`
	Measured      int         `json:"users_caught_up"`
	GapMS         float64     `json:"gap_ms"`    // the pause between one user's close and the next one's connect
	MeasureS      float64     `json:"measure_s"` // how long connecting the measured users one at a time took
	Lost          int64       `json:"lost"`
	Misdelivered  int64       `json:"misdelivered"` // another user's, or not one of the fill's
	Duplicates    int64       `json:"duplicates"`
}

func runBacklog(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backlog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	users := fs.Int("users", 100, "offline users to fill")
	msgs := fs.Int("messages", 1000, "messages waiting for each")
	senders := fs.Int("senders", 50, "online users that fill the backlogs")
	measure := fs.Int("measure", 100, "how many of the users to connect and time (0: all)")
	inflight := fs.Int("inflight", 8, "sends in flight per sender")
	gap := fs.Duration("gap", 0, "pause between one user's close and the next user's connect (0: back to back, each catch-up overlapping the node's work on the previous user's acks and close)")
	order := fs.String("fill", "interleaved", "order of the fill: interleaved (round robin over the users, so each user's messages are spread over the whole log) or each (one user's messages after the other's, so each backlog is contiguous)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkFlags(atLeast("users", *users, 1), atLeast("messages", *msgs, 1), atLeast("senders", *senders, 1),
		atLeast("measure", *measure, 0), atLeast("inflight", *inflight, 1), notNegative("gap", *gap)); err != nil {
		return err
	}
	if *order != "interleaved" && *order != "each" {
		return fmt.Errorf("--fill %q: want interleaved or each", *order)
	}
	tokens, err := c.setup()
	if err != nil {
		return err
	}
	before, err := settle(ctx, c.url, 0)
	if err != nil {
		return fmt.Errorf("read the node's /metrics: %w", err)
	}
	names := make([]string, *users)
	for i := range names {
		names[i] = fmt.Sprintf("%so%d", c.prefix, i)
	}
	snames := make([]string, *senders)
	for i := range snames {
		snames[i] = fmt.Sprintf("%ss%d", c.prefix, i)
	}
	sconns, _, err := c.dialAll(ctx, snames, tokens)
	if err != nil {
		return err
	}
	total := int64(*users) * int64(*msgs)
	fmt.Fprintf(stderr, "backlog: %d senders fill %d messages (%d users × %d)\n", *senders, total, *users, *msgs)
	var next, sent, errs atomic.Int64
	stop := startProgress(stderr, func(el time.Duration) string {
		return fmt.Sprintf("%4s filled=%d/%d errors=%d", el, sent.Load(), total, errs.Load())
	})
	defer stop() // on an early return
	start := time.Now()
	pad := strings.Repeat("x", 80)
	var wg sync.WaitGroup
	for _, sc := range sconns {
		for k := 0; k < *inflight; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= total || ctx.Err() != nil {
						return
					}
					// Each backlog fills in order, either round robin over
					// the users or one user after the other.
					u, k := i%int64(*users), i/int64(*users)
					if *order == "each" {
						u, k = i/int64(*msgs), i%int64(*msgs)
					}
					sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					_, err := sc.SendMsg(sctx, client.SendRequest{To: names[u], Body: fmt.Sprint(k, "|", pad)})
					cancel()
					if err != nil {
						errs.Add(1)
						return
					}
					sent.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	stop()
	fill := time.Since(start)
	for _, sc := range sconns {
		sc.Close()
	}
	if errs.Load() > 0 {
		return fmt.Errorf("filling failed: %d errors", errs.Load())
	}
	after, err := settle(ctx, c.url, 5*time.Second)
	if err != nil {
		return err
	}
	n := *measure
	if n == 0 || n > *users {
		n = *users
	}
	fmt.Fprintf(stderr, "backlog: filled in %s; connecting %d users one at a time\n", fill.Truncate(time.Millisecond), n)
	var h, first hist
	var lost, misdelivered, duplicates int64
	cpu := startCPU(ctx, c.nodes())
	measureStart := time.Now()
	for i := 0; i < n; i++ {
		if i > 0 && *gap > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(*gap):
			}
		}
		tok, _ := tokens(names[i], "bench")
		dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		conn, err := client.DialWith(dctx, c.wsURL(), tok, c.options())
		if err != nil {
			cancel()
			return err
		}
		hello := time.Now()
		got := 0
		seen := make([]bool, *msgs) // by the number in the body
		var ids []string
		for got < *msgs {
			f, err := conn.Next(dctx)
			if err != nil {
				break
			}
			if f.Message == nil {
				continue
			}
			if got == 0 {
				first.add(time.Since(hello))
			}
			ids = append(ids, f.Message.ID)
			k, err := strconv.Atoi(f.Message.Body[:strings.IndexByte(f.Message.Body+"|", '|')])
			switch {
			case f.Message.To != names[i] || err != nil || k < 0 || k >= *msgs:
				misdelivered++
			case seen[k]:
				duplicates++
			default:
				seen[k] = true
				got++
			}
		}
		h.add(time.Since(hello))
		lost += int64(*msgs - got)
		for len(ids) > 0 {
			k := min(len(ids), 4096)
			conn.Ack(ids[:k]...)
			ids = ids[k:]
		}
		conn.Close()
		cancel()
	}
	measured := time.Since(measureStart)
	cpu.stop(ctx)
	res := backlogResult{
		Scenario: "backlog", Users: *users, Messages: *msgs, Fill: *order, FillSeconds: fill.Seconds(),
		Before: before, AfterFill: after, GrowthPerUser: (after.RSS - before.RSS) / float64(*users),
		CatchUp: h.summary(), FirstMessage: first.summary(), Measured: n, GapMS: float64(*gap) / float64(time.Millisecond), MeasureS: measured.Seconds(), Lost: lost, Misdelivered: misdelivered, Duplicates: duplicates,
	}
	res.NodeCPUUS, res.ToolCPUUS = cpu.perUnit(int64(n))
	report(stdout, c.jsonOut, res, [][2]string{
		{"scenario", fmt.Sprintf("backlog: %d offline users × %d waiting messages", *users, *msgs)},
		{"fill", fmt.Sprintf("%s, %s (%.0f msg/s)", *order, fill.Truncate(time.Millisecond), float64(total)/fill.Seconds())},
		{"server RSS", fmt.Sprintf("%s → %s after fill: %.0f B per offline user", mib(before.RSS), mib(after.RSS), res.GrowthPerUser)},
		{"catch-up (hello → all delivered)", fmtLat(res.CatchUp)},
		{"hello → first message", fmtLat(res.FirstMessage)},
		{"CPU per catch-up (its connect, acks and close too)", fmtCPU(res.NodeCPUUS, res.ToolCPUUS)},
		{"lost", fmt.Sprint(lost)},
		{"misdelivered", fmt.Sprintf("%d (%d duplicates, tolerated)", misdelivered, duplicates)},
	})
	if lost > 0 || misdelivered > 0 {
		return fmt.Errorf("LOSS: %d waiting messages were not delivered, %d delivered were not the user's", lost, misdelivered)
	}
	return nil
}
