package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/wire"
)

type groupResult struct {
	Scenario      string  `json:"scenario"`
	Groups        int     `json:"groups"`
	Members       int     `json:"members"`
	OfferedRate   int     `json:"offered_rate"`
	DurationS     float64 `json:"duration_s"`
	Sent          int64   `json:"sent"`
	SentPerS      float64 `json:"group_messages_per_s"`
	Deliveries    int64   `json:"deliveries"`
	DeliveriesPS  float64 `json:"deliveries_per_s"`
	Receipts      int64   `json:"delivered_receipts"`
	Errors        int64   `json:"errors"`
	Lost          int64   `json:"lost_deliveries"`
	Misdelivered  int64   `json:"misdelivered"` // to a member of another group, or back to its sender
	Duplicates    int64   `json:"duplicate_deliveries"`
	FanOut        latency `json:"fan_out_completion"`
	SendToDeliver latency `json:"send_to_delivery"`
	NodeCPUUS     float64 `json:"node_cpu_us_per_group_msg"`
	ToolCPUUS     float64 `json:"tool_cpu_us_per_group_msg"`
}

// groupMsg tracks one group message until every member has it.
type groupMsg struct {
	sent    time.Time
	group   int // index of its group
	sender  int // index of its sender among the group's members
	pending atomic.Int64
	got     []atomic.Uint64 // members that have it, a bit each
}

func newGroupMsg(sent time.Time, group, sender, members int) *groupMsg {
	gm := &groupMsg{sent: sent, group: group, sender: sender, got: make([]atomic.Uint64, (members+63)/64)}
	gm.pending.Store(int64(members - 1))
	return gm
}

// deliver notes that member (an index among the group's members) got the
// message: it reports whether that is the member's first copy, and whether
// it completed the fan-out.
func (gm *groupMsg) deliver(member int) (first, complete bool) {
	bit := uint64(1) << (member % 64)
	if gm.got[member/64].Or(bit)&bit != 0 {
		return false, false
	}
	return true, gm.pending.Add(-1) == 0
}

func runGroup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("group", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	groups := fs.Int("groups", 10, "groups")
	members := fs.Int("members", 100, "members per group, all online")
	rate := fs.Int("rate", 100, "offered group messages per second in all (open loop)")
	dur := fs.Duration("duration", 20*time.Second, "how long to send")
	warmup := fs.Duration("warmup", 2*time.Second, "latencies of this first part are not counted")
	drain := fs.Duration("drain", 20*time.Second, "how long to wait for the last deliveries")
	ackLinger := fs.Duration("ack-linger", 20*time.Millisecond, "how long a member collects ids before acking them in one frame")
	bodySize := fs.Int("body", 100, "message body size in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkFlags(atLeast("groups", *groups, 1), atLeast("members", *members, 2), atLeast("rate", *rate, 1),
		positive("duration", *dur), notNegative("warmup", *warmup), notNegative("drain", *drain),
		notNegative("ack-linger", *ackLinger), atLeast("body", *bodySize, 0)); err != nil {
		return err
	}
	tokens, err := c.setup()
	if err != nil {
		return err
	}
	n := *groups * *members
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%sg%d-%d", c.prefix, i / *members, i%*members)
	}
	fmt.Fprintf(stderr, "group: connecting %d members (%d groups of %d)\n", n, *groups, *members)
	conns, _, err := c.dialAll(ctx, names, tokens)
	if err != nil {
		return err
	}
	defer func() {
		for _, conn := range conns {
			conn.Abort()
		}
	}()
	ids := make([]string, *groups)
	for g := range ids {
		owner := names[g**members]
		tok, _ := tokens(owner, "bench")
		api := &client.API{BaseURL: c.url, Token: tok}
		var out struct{ ID string }
		if err := api.Do(ctx, "POST", "/v1/groups", map[string]any{"name": "bench", "members": names[g**members+1 : (g+1)**members]}, &out); err != nil {
			return fmt.Errorf("create group: %w", err)
		}
		ids[g] = out.ID
	}

	var (
		sent, deliveries, receipts, errCount atomic.Int64
		misdelivered, duplicates             atomic.Int64
		fanOut, toDeliver                    hist
		measureFrom                          = time.Now().Add(*warmup)
		inflight                             sync.Map // nonce (in the body) → *groupMsg
		nonce                                atomic.Int64
	)
	stopAck := make(chan struct{})
	var wg sync.WaitGroup
	for i, conn := range conns {
		group, member := i / *members, i%*members
		var mu sync.Mutex
		var toAck []string
		ready := make(chan struct{}, 1)
		conn.OnFrame(func(f *client.Frame) {
			now := time.Now()
			switch {
			case f.Message != nil:
				deliveries.Add(1)
				// body: <send time ns>|<nonce>|padding
				parts := strings.SplitN(f.Message.Body, "|", 3)
				if ns, err := strconv.ParseInt(parts[0], 10, 64); err == nil && time.Unix(0, ns).After(measureFrom) {
					toDeliver.add(now.Sub(time.Unix(0, ns)))
				}
				if f.Message.Group != ids[group] {
					misdelivered.Add(1)
				} else if v, ok := inflight.Load(parts[min(1, len(parts)-1)]); ok {
					gm := v.(*groupMsg)
					if gm.group != group || member == gm.sender {
						misdelivered.Add(1)
					} else if first, complete := gm.deliver(member); !first {
						duplicates.Add(1)
					} else if complete {
						inflight.Delete(parts[1])
						if gm.sent.After(measureFrom) {
							fanOut.add(now.Sub(gm.sent))
						}
					}
				}
				mu.Lock()
				toAck = append(toAck, f.Message.ID)
				mu.Unlock()
			case f.Receipt != nil || f.Receipts != nil:
				for _, r := range f.ReceiptItems() {
					if r.Status == wire.StatusDelivered {
						receipts.Add(1)
					}
				}
				mu.Lock()
				toAck = append(toAck, f.ID())
				mu.Unlock()
			default:
				return
			}
			select {
			case ready <- struct{}{}:
			default:
			}
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopAck:
					return
				case <-ready:
				}
				select {
				case <-stopAck:
				case <-time.After(*ackLinger):
				}
				mu.Lock()
				batch := toAck
				toAck = nil
				mu.Unlock()
				for len(batch) > 0 {
					k := min(len(batch), 4096)
					conn.Ack(batch[:k]...)
					batch = batch[k:]
				}
			}
		}()
	}

	var last int64
	stop := startProgress(stderr, func(el time.Duration) string {
		d := deliveries.Load()
		line := fmt.Sprintf("%4s sent=%d deliveries=%d (+%d/s) receipts=%d errors=%d", el, sent.Load(), d, d-last, receipts.Load(), errCount.Load())
		last = d
		return line
	})
	defer stop() // on an early return
	pad := strings.Repeat("x", max(*bodySize-20, 0))
	cpu := startCPU(ctx, c.nodes())
	sendCtx, stopSend := context.WithTimeout(ctx, *dur)
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	r := rand.New(rand.NewPCG(uint64(start.UnixNano()), 7))
	for done := false; !done; {
		select {
		case <-sendCtx.Done():
			done = true
			continue
		case <-tick.C:
		}
		g, from := r.IntN(*groups), r.IntN(*members)
		sender := conns[g**members+from]
		t0 := time.Now()
		gm := newGroupMsg(t0, g, from, *members)
		key := strconv.FormatInt(nonce.Add(1), 36)
		inflight.Store(key, gm)
		err := sender.SendFunc(client.SendRequest{Group: ids[g], Body: strconv.FormatInt(t0.UnixNano(), 10) + "|" + key + "|" + pad}, func(s client.Sent, err error) {
			if err != nil {
				errCount.Add(1)
				inflight.Delete(key)
				return
			}
			sent.Add(1)
		})
		if err != nil {
			errCount.Add(1)
		}
	}
	tick.Stop()
	stopSend()
	elapsed := time.Since(start)
	cpu.stop(ctx)
	sentAtEnd := sent.Load()
	deadline := time.Now().Add(*drain)
	for time.Now().Before(deadline) {
		pending := 0
		inflight.Range(func(_, _ any) bool { pending++; return pending < 2 })
		if pending == 0 && deliveries.Load() >= sent.Load()*int64(*members-1) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	close(stopAck)
	wg.Wait()
	var lost int64
	inflight.Range(func(_, v any) bool {
		lost += v.(*groupMsg).pending.Load()
		return true
	})
	res := groupResult{
		Scenario: "group", Groups: *groups, Members: *members, OfferedRate: *rate, DurationS: elapsed.Seconds(),
		Sent: sent.Load(), SentPerS: float64(sentAtEnd) / elapsed.Seconds(),
		Deliveries: deliveries.Load(), DeliveriesPS: float64(sentAtEnd*int64(*members-1)) / elapsed.Seconds(),
		Receipts: receipts.Load(), Errors: errCount.Load(), Lost: lost, Misdelivered: misdelivered.Load(), Duplicates: duplicates.Load(),
		FanOut: fanOut.summary(), SendToDeliver: toDeliver.summary(),
	}
	res.NodeCPUUS, res.ToolCPUUS = cpu.perUnit(sentAtEnd)
	report(stdout, c.jsonOut, res, [][2]string{
		{"scenario", fmt.Sprintf("group: %d groups of %d online members, offered %d msg/s, %s", *groups, *members, *rate, elapsed.Truncate(time.Millisecond))},
		{"sent (stored)", fmt.Sprintf("%d (%.0f group msg/s)", res.Sent, res.SentPerS)},
		{"deliveries", fmt.Sprintf("%d (%.0f/s)", res.Deliveries, res.DeliveriesPS)},
		{"delivered receipts", fmt.Sprint(res.Receipts)},
		{"errors", fmt.Sprint(res.Errors)},
		{"lost deliveries", fmt.Sprint(res.Lost)},
		{"misdelivered", fmt.Sprintf("%d (%d duplicates, tolerated)", res.Misdelivered, res.Duplicates)},
		{"fan-out completion", fmtLat(res.FanOut)},
		{"send → delivery", fmtLat(res.SendToDeliver)},
		{"CPU per group message (while sending)", fmtCPU(res.NodeCPUUS, res.ToolCPUUS)},
	})
	if lost > 0 || res.Misdelivered > 0 {
		return fmt.Errorf("LOSS: %d member deliveries missing, %d to the wrong user", lost, res.Misdelivered)
	}
	return nil
}
