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

	"github.com/cespare/xxhash/v2"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/wire"
)

// dmUser is one simulated user of the dm scenario.
type dmUser struct {
	id   string
	peer string
	conn *client.Conn

	mu       sync.Mutex
	out      map[string]dmSent // id → a message sent whose receipts are awaited
	toAck    []string
	toRead   []string // ids received, to mark read after they are acked
	ackReady chan struct{}
	got      map[string]bool // message ids received
}

// dmSent is what a sender knows of one of its messages until its receipts
// are in. The sent answer and the receipts may come in either order: the
// node answers the sender after the store, and the recipient may be faster.
type dmSent struct {
	at              int64   // when it was sent (Unix ns); 0 until the sent answer comes
	delivered, read int64   // when its receipts came (Unix ns); read implies delivered
	wantRead        bool    // the recipient will mark it read
	counted         [2]bool // its delivered, read latency recorded
}

// dmLatency is a receipt latency to record.
type dmLatency struct {
	read  bool  // a read receipt; else delivered
	sent  int64 // when the message was sent (Unix ns)
	took  time.Duration
	early bool // the receipt came before the sent answer
}

// settleLocked stores st as the state of message id, appending to out the
// latencies that it newly allows to record, or forgets the message once
// all its receipts are in. early says the sent answer is what completed
// them.
func (u *dmUser) settleLocked(id string, st dmSent, early bool, out []dmLatency) []dmLatency {
	if st.at != 0 {
		for i, at := range [2]int64{st.delivered, st.read} {
			if at != 0 && !st.counted[i] {
				st.counted[i] = true
				out = append(out, dmLatency{read: i == 1, sent: st.at, took: time.Duration(at - st.at), early: early})
			}
		}
		if st.counted[0] && (st.counted[1] || !st.wantRead) {
			delete(u.out, id)
			return out
		}
	}
	u.out[id] = st
	return out
}

// dmReceipts counts receipts and records their latencies.
type dmReceipts struct {
	delivered, early, read atomic.Int64
	toDelivered, toRead    hist
	measureFrom            int64 // Unix ns
}

func (r *dmReceipts) record(lats []dmLatency) {
	for _, l := range lats {
		counter, h := &r.delivered, &r.toDelivered
		if l.read {
			counter, h = &r.read, &r.toRead
		} else if l.early {
			r.early.Add(1)
		}
		counter.Add(1)
		if l.sent > r.measureFrom {
			h.add(l.took)
		}
	}
}

// wantRead says whether the recipient of message id marks it read: the
// same choice on both sides, a fraction of the ids.
func wantRead(id string, fraction float64) bool {
	switch {
	case fraction <= 0:
		return false
	case fraction >= 1:
		return true
	}
	return float64(xxhash.Sum64String(id)%10000) < fraction*10000
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
	ReadMarked    int64   `json:"read_marked"`
	ReadReceipts  int64   `json:"read_receipts"`
	Errors        int64   `json:"errors"`
	Lost          int64   `json:"lost"`
	Misdelivered  int64   `json:"misdelivered"`
	SendToSent    latency `json:"send_to_sent"`
	SendToDeliv   latency `json:"send_to_delivery"`
	SendToRcpt    latency `json:"send_to_delivered_receipt"`
	SendToRead    latency `json:"send_to_read_receipt"`
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
	readFraction := fs.Float64("read", 0, "fraction of the messages received (0 to 1) that the recipient marks read, right after acking them; the sender times the read receipts (the design's dm rows ack only: 0)")
	timeline := fs.Duration("timeline", 0, "if set, print send → delivery p50/p99/max per step of this length to stderr at the end (shows whether the tail comes in bursts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *users < 2 || *users%2 != 0 {
		return errors.New("--users must be an even number of at least 2")
	}
	if err := checkFlags(atLeast("rate", *rate, 0), atLeast("inflight", *inflight, 1), positive("duration", *dur),
		notNegative("warmup", *warmup), notNegative("drain", *drain), atLeast("body", *bodySize, 0),
		notNegative("ack-linger", *ackLinger), fraction("read", *readFraction), notNegative("timeline", *timeline)); err != nil {
		return err
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
		sent, delivered, errCount, misdelivered, readMarked atomic.Int64
		toSent, toDeliv                                     hist
		measureFrom                                         = time.Now().Add(*warmup)
		rc                                                  = &dmReceipts{measureFrom: measureFrom.UnixNano()}
	)
	us := make([]*dmUser, *users)
	for i := range us {
		peer := i ^ 1
		us[i] = &dmUser{id: names[i], peer: names[peer], conn: conns[i], out: map[string]dmSent{}, got: map[string]bool{}, ackReady: make(chan struct{}, 1)}
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
				if wantRead(m.ID, *readFraction) {
					u.toRead = append(u.toRead, m.ID)
				}
				u.mu.Unlock()
			case f.Receipt != nil || f.Receipts != nil:
				var buf [64]dmLatency // a receipts frame holds up to 64
				lats := buf[:0]
				u.mu.Lock()
				u.toAck = append(u.toAck, f.ID())
				for _, r := range f.ReceiptItems() {
					if r.Status != wire.StatusDelivered && r.Status != wire.StatusRead {
						continue
					}
					// Absent before the sent answer (or for a repeat
					// after all was counted: then never counted again).
					st := u.out[r.Msg]
					if st.delivered == 0 {
						st.delivered = now.UnixNano()
					}
					if r.Status == wire.StatusRead && st.read == 0 {
						st.read = now.UnixNano()
					}
					lats = u.settleLocked(r.Msg, st, false, lats)
				}
				u.mu.Unlock()
				rc.record(lats)
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
				ids, reads := u.toAck, u.toRead
				u.toAck, u.toRead = nil, nil
				u.mu.Unlock()
				for len(ids) > 0 {
					n := min(len(ids), 4096)
					if err := u.conn.Ack(ids[:n]...); err != nil {
						errCount.Add(1)
						break
					}
					ids = ids[n:]
				}
				// Read after the ack, as an app shows a message it
				// stored (a read before the ack would stand for both
				// receipts: read implies delivered).
				for len(reads) > 0 {
					n := min(len(reads), wire.MaxIDs)
					if err := u.conn.Read(reads[:n]...); err != nil {
						errCount.Add(1)
						break
					}
					readMarked.Add(int64(n))
					reads = reads[n:]
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
				var buf [2]dmLatency
				u.mu.Lock()
				st := u.out[s.ID]
				st.at, st.wantRead = t.UnixNano(), wantRead(s.ID, *readFraction)
				lats := u.settleLocked(s.ID, st, true, buf[:0])
				u.mu.Unlock()
				rc.record(lats)
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
		line := fmt.Sprintf("%4s sent=%d delivered=%d (+%d/s) receipts=%d errors=%d", el, sent.Load(), d, d-lastDel, rc.delivered.Load(), errCount.Load())
		if *readFraction > 0 {
			line += fmt.Sprintf(" read=%d/%d", rc.read.Load(), readMarked.Load())
		}
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
	sentAtEnd := sent.Load()

	// Let the last messages and receipts arrive.
	deadline := time.Now().Add(*drain)
	for time.Now().Before(deadline) && (delivered.Load() < sent.Load() || rc.delivered.Load() < sent.Load() || rc.read.Load() < readMarked.Load()) {
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
	if *timeline > 0 {
		fmt.Fprintln(stderr, "send → delivery by time of delivery:")
		toDeliv.timeline(stderr, *timeline)
	}
	res := dmResult{
		Scenario: "dm", Users: *users, OfferedRate: *rate, DurationS: elapsed.Seconds(),
		Sent: sent.Load(), Delivered: delivered.Load(), DeliveredPS: float64(sentAtEnd) / elapsed.Seconds(),
		Receipts: rc.delivered.Load(), ReceiptsFirst: rc.early.Load(), ReadMarked: readMarked.Load(), ReadReceipts: rc.read.Load(), Errors: errCount.Load(), Lost: lost, Misdelivered: misdelivered.Load(),
		SendToSent: toSent.summary(), SendToDeliv: toDeliv.summary(), SendToRcpt: rc.toDelivered.summary(), SendToRead: rc.toRead.summary(),
	}
	res.NodeCPUUS, res.ToolCPUUS = cpu.perUnit(sentAtEnd)
	rows := [][2]string{
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
	}
	if *readFraction > 0 {
		rows = append(rows,
			[2]string{"read receipts", fmt.Sprintf("%d (of %d marked read)", res.ReadReceipts, res.ReadMarked)},
			[2]string{"send → read receipt", fmtLat(res.SendToRead)})
	}
	rows = append(rows, [2]string{"CPU per message (while sending)", fmtCPU(res.NodeCPUUS, res.ToolCPUUS)})
	report(stdout, c.jsonOut, res, rows)
	if lost > 0 || res.Misdelivered > 0 {
		return fmt.Errorf("LOSS: %d sent messages were not delivered, %d delivered to the wrong user", lost, res.Misdelivered)
	}
	return nil
}
