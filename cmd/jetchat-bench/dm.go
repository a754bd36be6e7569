package main

import (
	"context"
	"errors"
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

// dmUser is one simulated user of the dm scenario.
type dmUser struct {
	id   string
	peer string
	conn *client.Conn

	mu       sync.Mutex
	sentAt   map[string]time.Time // message id → send time (for receipt latency)
	early    map[string]time.Time // message id → arrival of its delivered receipt, come before its sent
	toAck    []string
	ackReady chan struct{}
	got      map[string]bool // message ids received
}

type dmResult struct {
	Scenario      string  `json:"scenario"`
	Users         int     `json:"users"`
	OfferedRate   int     `json:"offered_rate"`
	DurationS     float64 `json:"duration_s"`
	Sent          int64   `json:"sent"`
	Delivered     int64   `json:"delivered"`
	DeliveredPS   float64 `json:"delivered_per_s"`
	Receipts      int64   `json:"delivered_receipts"`
	ReceiptsFirst int64   `json:"delivered_receipts_before_sent"`
	Errors        int64   `json:"errors"`
	Lost          int64   `json:"lost"`
	Misdelivered  int64   `json:"misdelivered"`
	SendToSent    latency `json:"send_to_sent"`
	SendToDeliv   latency `json:"send_to_delivery"`
	SendToRcpt    latency `json:"send_to_delivered_receipt"`
	NodeCPUUS     float64 `json:"node_cpu_us_per_msg"`
	ToolCPUUS     float64 `json:"tool_cpu_us_per_msg"`
}

func runDM(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	users := fs.Int("users", 1000, "online users, in pairs")
	rate := fs.Int("rate", 3000, "offered messages per second in all (open loop); 0: closed loop, -inflight sends in flight per user")
	inflight := fs.Int("inflight", 2, "sends in flight per user when -rate 0")
	dur := fs.Duration("duration", 20*time.Second, "how long to send")
	warmup := fs.Duration("warmup", 2*time.Second, "latencies of this first part are not counted")
	drain := fs.Duration("drain", 15*time.Second, "how long to wait for the last deliveries")
	bodySize := fs.Int("body", 100, "message body size in bytes")
	ackLinger := fs.Duration("ack-linger", 20*time.Millisecond, "how long a client collects received ids before acking them in one frame (as an app acks what it stored)")
	ackOnSend := fs.Bool("ack-on-send", true, "a send carries the ids received since the last ack (the send frame's ack field), as a client acks with its reply; false: acks go only in ack frames")
	timeline := fs.Duration("timeline", 0, "if set, print send → delivery p50/p99/max per step of this length to stderr at the end (shows whether the tail comes in bursts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *users < 2 || *users%2 != 0 {
		return errors.New("--users must be an even number of at least 2")
	}
	tokens, err := c.setup()
	if err != nil {
		return err
	}
	names := make([]string, *users)
	for i := range names {
		names[i] = fmt.Sprintf("%su%d", c.prefix, i)
	}
	fmt.Fprintf(stderr, "dm: connecting %d users to %s\n", *users, c.wsURL())
	conns, _, err := c.dialAll(ctx, names, tokens)
	if err != nil {
		return err
	}
	defer func() {
		for _, conn := range conns {
			conn.Abort()
		}
	}()

	var (
		sent, delivered, receipts, errCount, misdelivered atomic.Int64
		receiptsFirst                                     atomic.Int64 // delivered receipts read before their sent answer
		toSent, toDeliv, toRcpt                           hist
		measureFrom                                       = time.Now().Add(*warmup)
	)
	us := make([]*dmUser, *users)
	byName := map[string]*dmUser{}
	for i := range us {
		peer := i ^ 1
		us[i] = &dmUser{id: names[i], peer: names[peer], conn: conns[i], sentAt: map[string]time.Time{}, early: map[string]time.Time{}, got: map[string]bool{}, ackReady: make(chan struct{}, 1)}
		byName[names[i]] = us[i]
	}
	sentTo := make([]map[string]bool, *users) // recipient index → ids sent to it
	var sentMu sync.Mutex
	for i := range sentTo {
		sentTo[i] = map[string]bool{}
	}
	index := map[string]int{}
	for i, n := range names {
		index[n] = i
	}

	var wg sync.WaitGroup
	stopAck := make(chan struct{})
	for _, u := range us {
		u.conn.OnFrame(func(f *client.Frame) {
			now := time.Now()
			switch {
			case f.Message != nil:
				m := f.Message
				if m.To != u.id {
					misdelivered.Add(1)
				}
				if ns, err := strconv.ParseInt(m.Body[:strings.IndexByte(m.Body+"|", '|')], 10, 64); err == nil {
					t := time.Unix(0, ns)
					if t.After(measureFrom) {
						toDeliv.add(now.Sub(t))
					}
				}
				u.mu.Lock()
				if !u.got[m.ID] {
					u.got[m.ID] = true
					delivered.Add(1)
				}
				u.toAck = append(u.toAck, m.ID)
				u.mu.Unlock()
			case f.Receipt != nil || f.Receipts != nil:
				var matched []time.Time // the send times of the receipts' messages
				u.mu.Lock()
				u.toAck = append(u.toAck, f.ID())
				for _, r := range f.ReceiptItems() {
					if r.Status != "delivered" {
						continue
					}
					if t, ok := u.sentAt[r.Msg]; ok {
						delete(u.sentAt, r.Msg)
						matched = append(matched, t)
					} else {
						// The recipient acked before this client read
						// the sent answer (the node answers the sender
						// after the store; the recipient may be faster):
						// counted when the answer comes.
						u.early[r.Msg] = now
					}
				}
				u.mu.Unlock()
				for _, t := range matched {
					receipts.Add(1)
					if t.After(measureFrom) {
						toRcpt.add(now.Sub(t))
					}
				}
			default:
				return
			}
			select {
			case u.ackReady <- struct{}{}:
			default:
			}
		})
		// One acker per connection: it acks everything received since its
		// last ack in one frame.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopAck:
					return
				case <-u.ackReady:
				}
				if *ackLinger > 0 {
					select {
					case <-stopAck:
					case <-time.After(*ackLinger):
					}
				}
				u.mu.Lock()
				ids := u.toAck
				u.toAck = nil
				u.mu.Unlock()
				for len(ids) > 0 {
					n := min(len(ids), 4096)
					if err := u.conn.Ack(ids[:n]...); err != nil {
						errCount.Add(1)
						break
					}
					ids = ids[n:]
				}
			}
		}()
	}

	pad := strings.Repeat("x", max(*bodySize-20, 0))
	sendOne := func(u *dmUser, done func()) {
		t := time.Now()
		body := strconv.FormatInt(t.UnixNano(), 10) + "|" + pad
		req := client.SendRequest{To: u.peer, Body: body}
		if *ackOnSend {
			u.mu.Lock()
			n := min(len(u.toAck), wire.MaxIDs)
			req.Ack = u.toAck[:n:n]
			u.toAck = u.toAck[n:]
			u.mu.Unlock()
		}
		err := u.conn.SendFunc(req, func(s client.Sent, err error) {
			if err != nil {
				errCount.Add(1)
			} else {
				sent.Add(1)
				if t.After(measureFrom) {
					toSent.add(time.Since(t))
				}
				u.mu.Lock()
				at, early := u.early[s.ID]
				if early {
					delete(u.early, s.ID)
				} else {
					u.sentAt[s.ID] = t
				}
				u.mu.Unlock()
				if early {
					receipts.Add(1)
					receiptsFirst.Add(1)
					if t.After(measureFrom) {
						toRcpt.add(at.Sub(t))
					}
				}
				sentMu.Lock()
				sentTo[index[u.peer]][s.ID] = true
				sentMu.Unlock()
			}
			if done != nil {
				done()
			}
		})
		if err != nil {
			errCount.Add(1)
			if done != nil {
				done()
			}
		}
	}

	var lastDel int64
	stopProgress := startProgress(stderr, func(el time.Duration) string {
		d := delivered.Load()
		line := fmt.Sprintf("%4s sent=%d delivered=%d (+%d/s) receipts=%d errors=%d", el, sent.Load(), d, d-lastDel, receipts.Load(), errCount.Load())
		lastDel = d
		return line
	})
	defer stopProgress() // on an early return

	cpu := startCPU(ctx, c.nodes())
	sendCtx, stopSend := context.WithTimeout(ctx, *dur)
	start := time.Now()
	var sg sync.WaitGroup
	for _, u := range us {
		sg.Add(1)
		go func() {
			defer sg.Done()
			if *rate <= 0 {
				slots := make(chan struct{}, *inflight)
				for {
					select {
					case <-sendCtx.Done():
						return
					case slots <- struct{}{}:
					}
					sendOne(u, func() { <-slots })
				}
			}
			interval := time.Duration(float64(time.Second) * float64(*users) / float64(*rate))
			select { // spread the users' first sends over one interval
			case <-sendCtx.Done():
				return
			case <-time.After(time.Duration(rand.Int64N(int64(interval) + 1))):
			}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				sendOne(u, nil)
				select {
				case <-sendCtx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	sg.Wait()
	stopSend()
	elapsed := time.Since(start)
	cpu.stop(ctx)
	deliveredAtEnd := delivered.Load()
	sentAtEnd := sent.Load()

	// Let the last messages and receipts arrive.
	deadline := time.Now().Add(*drain)
	for time.Now().Before(deadline) && (delivered.Load() < sent.Load() || receipts.Load() < sent.Load()) {
		time.Sleep(50 * time.Millisecond)
	}
	stopProgress()
	close(stopAck)
	wg.Wait()

	var lost int64
	sentMu.Lock()
	for i, ids := range sentTo {
		u := us[i]
		u.mu.Lock()
		for id := range ids {
			if !u.got[id] {
				lost++
			}
		}
		u.mu.Unlock()
	}
	sentMu.Unlock()
	_ = deliveredAtEnd
	if *timeline > 0 {
		fmt.Fprintln(stderr, "send → delivery by time of delivery:")
		toDeliv.timeline(stderr, *timeline)
	}
	res := dmResult{
		Scenario: "dm", Users: *users, OfferedRate: *rate, DurationS: elapsed.Seconds(),
		Sent: sent.Load(), Delivered: delivered.Load(), DeliveredPS: float64(sentAtEnd) / elapsed.Seconds(),
		Receipts: receipts.Load(), ReceiptsFirst: receiptsFirst.Load(), Errors: errCount.Load(), Lost: lost, Misdelivered: misdelivered.Load(),
		SendToSent: toSent.summary(), SendToDeliv: toDeliv.summary(), SendToRcpt: toRcpt.summary(),
	}
	res.NodeCPUUS, res.ToolCPUUS = cpu.perUnit(sentAtEnd)
	report(stdout, c.jsonOut, res, [][2]string{
		{"scenario", fmt.Sprintf("dm: %d users in %d pairs, offered %d msg/s, %s", *users, *users/2, *rate, elapsed.Truncate(time.Millisecond))},
		{"sent (stored)", fmt.Sprintf("%d (%.0f msg/s)", res.Sent, res.DeliveredPS)},
		{"delivered", fmt.Sprint(res.Delivered)},
		{"delivered receipts", fmt.Sprintf("%d (%d read before their sent answer)", res.Receipts, res.ReceiptsFirst)},
		{"errors", fmt.Sprint(res.Errors)},
		{"lost", fmt.Sprint(res.Lost)},
		{"misdelivered", fmt.Sprint(res.Misdelivered)},
		{"send → sent", fmtLat(res.SendToSent)},
		{"send → delivery", fmtLat(res.SendToDeliv)},
		{"send → delivered receipt", fmtLat(res.SendToRcpt)},
		{"CPU per message (while sending)", fmtCPU(res.NodeCPUUS, res.ToolCPUUS)},
	})
	if lost > 0 || res.Misdelivered > 0 {
		return fmt.Errorf("LOSS: %d sent messages were not delivered, %d delivered to the wrong user", lost, res.Misdelivered)
	}
	return nil
}
