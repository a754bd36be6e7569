package delivery

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
)

// mode is where a device's delivery stands.
type mode int

const (
	// modeIdle: attached, catch-up not yet started.
	modeIdle mode = iota
	// modeCatchUp: a goroutine reads the message log; live records wait in
	// pending until it hands over.
	modeCatchUp
	// modeLive: live records go straight to the sink.
	modeLive
	// modeBehind: the ack window is full; nothing is delivered until acks
	// make room, then a catch-up resumes from the log.
	modeBehind
	// modeClosed: the device is gone.
	modeClosed
)

// maxPending bounds the live records kept while a catch-up runs; beyond it
// they are dropped and read from the log instead.
const maxPending = 1024

// slot is a record delivered to a device and not yet fully acknowledged.
type slot struct {
	seq   uint64
	idSeq uint64 // the sequence in the message id
	from  string
	kind  string
	parts int
	acked uint64 // bit i: part i acknowledged (receipts)
	done  bool
}

// Device is one connected device of a user. Its methods are safe for
// concurrent use.
type Device struct {
	svc  *Service
	user *userState
	id   string
	sink chat.Sink

	mu       sync.Mutex
	mode     mode
	last     uint64            // last sequence processed on the user's inbox subject
	floor    uint64            // every record up to floor is acknowledged
	pending  []*record         // live records that arrived during a catch-up
	overflow bool              // pending overflowed: re-read after the catch-up
	inflight []slot            // delivered, not fully acknowledged, in sequence order
	alias    map[uint64]uint64 // id sequence -> record sequence, where they differ
	closed   bool              // Close was called
}

// User is the device's user id.
func (d *Device) User() string { return d.user.id }

// ID is the device id.
func (d *Device) ID() string { return d.id }

// currentFloor is the highest sequence up to which everything is
// acknowledged (or was the device's own send).
func (d *Device) currentFloor() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.floor
}

// advanceFloorLocked pops acknowledged slots and moves the floor.
func (d *Device) advanceFloorLocked() {
	i := 0
	for i < len(d.inflight) && d.inflight[i].done {
		i++
	}
	if i > 0 {
		for _, s := range d.inflight[:i] {
			if s.idSeq != s.seq {
				delete(d.alias, s.idSeq)
			}
		}
		d.inflight = append(d.inflight[:0], d.inflight[i:]...)
	}
	f := d.last
	if len(d.inflight) > 0 {
		f = d.inflight[0].seq - 1
	}
	if f > d.floor {
		d.floor = f
	}
}

// isOwn reports whether r is this device's own send, which it already has.
func (d *Device) isOwn(r *record) bool {
	return r.device == d.id && r.from == d.user.id && (r.kind == KindMessage || r.kind == KindCopy)
}

// pushLocked delivers r if it is the next record. It returns false when
// delivery must stop: the window is full (mode becomes behind) or the sink
// overflowed (the device closes).
func (d *Device) pushLocked(r *record) bool {
	if r.seq <= d.last {
		return true
	}
	if r.frames == nil || d.isOwn(r) {
		d.last = r.seq
		d.advanceFloorLocked()
		return true
	}
	if len(d.inflight) >= d.svc.cfg.Window {
		d.mode = modeBehind
		d.pending = nil
		return false
	}
	for _, f := range r.frames {
		if !d.sink.Deliver(f) {
			d.svc.m.SlowClosed.Inc()
			d.closeLocked(ErrSlowClient)
			return false
		}
	}
	d.inflight = append(d.inflight, slot{seq: r.seq, idSeq: r.idSeq, from: r.from, kind: r.kind, parts: len(r.frames)})
	if r.idSeq != r.seq {
		if d.alias == nil {
			d.alias = map[uint64]uint64{}
		}
		d.alias[r.idSeq] = r.seq
	}
	d.last = r.seq
	return true
}

// onLive takes a record republished on the user's live subject.
func (d *Device) onLive(r *record) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.mode {
	case modeCatchUp, modeIdle:
		if len(d.pending) < maxPending {
			d.pending = append(d.pending, r)
		} else {
			d.overflow = true
		}
	case modeLive:
		if r.seq <= d.last {
			return
		}
		if r.last > d.last {
			// A record between the last one we processed and this one
			// never reached us: read the log from where we are.
			d.startCatchUpLocked()
			d.pending = append(d.pending, r)
			return
		}
		d.pushLocked(r)
	}
}

// resync switches a live device to a catch-up that checks the log.
func (d *Device) resync() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mode == modeLive {
		d.startCatchUpLocked()
	}
}

// startCatchUpLocked starts the goroutine that reads the log from d.last.
func (d *Device) startCatchUpLocked() {
	if d.mode == modeClosed || d.mode == modeCatchUp {
		return
	}
	d.mode = modeCatchUp
	d.overflow = false
	d.svc.wg.Add(1)
	go d.catchUp()
}

// catchUp reads the device's records from the log in batches and delivers
// them, then hands over to live delivery without gap or repeat: the records
// that arrived live meanwhile are delivered if they continue the sequence,
// and otherwise the log is read again.
func (d *Device) catchUp() {
	defer d.svc.wg.Done()
	ctx := d.svc.ctx
	subject := natsx.Inbox(d.user.id)
	backoff := 100 * time.Millisecond
	for {
		d.mu.Lock()
		if d.mode != modeCatchUp {
			d.mu.Unlock()
			return
		}
		from := d.last + 1
		d.mu.Unlock()

		var recs []*record
		res, err := natsx.GetBatch(ctx, d.svc.nc, natsx.StreamMsgs, natsx.BatchRequest{
			Subject: subject, Seq: from, Batch: d.svc.cfg.ReadBatch, MaxBytes: 4 << 20,
		}, func(m *nats.Msg) error {
			r, err := decodeRecord(m, false)
			if err != nil {
				d.svc.log.Warn("skipping undecodable record", "user_id", d.user.id, "err", err)
				r = &record{seq: natsx.Seq(m)} // no frames: skipped, but passed
			}
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.svc.log.Warn("catch-up read failed, retrying", "user_id", d.user.id, "device", d.id, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		for _, r := range recs {
			if err := d.sink.WaitRoom(ctx); err != nil {
				return
			}
			d.mu.Lock()
			if d.mode != modeCatchUp {
				d.mu.Unlock()
				return
			}
			ok := d.pushLocked(r)
			d.mu.Unlock()
			if !ok {
				return
			}
		}
		if res.Pending > 0 || len(recs) == d.svc.cfg.ReadBatch {
			continue
		}
		// At the end of the log as of this read: hand over to live.
		d.mu.Lock()
		if d.mode != modeCatchUp {
			d.mu.Unlock()
			return
		}
		if !d.overflow && d.drainPendingLocked() {
			d.mode = modeLive
			d.pending = nil
			d.advanceFloorLocked()
			d.mu.Unlock()
			return
		}
		d.overflow = false
		d.pending = d.pending[:0]
		d.mu.Unlock()
	}
}

// drainPendingLocked delivers the live records that arrived during the
// catch-up. It returns false when they leave a gap (the log must be read
// again) or delivery had to stop.
func (d *Device) drainPendingLocked() bool {
	for i, r := range d.pending {
		if r.seq <= d.last {
			continue
		}
		if r.last > d.last {
			d.pending = append(d.pending[:0], d.pending[i:]...)
			return false
		}
		if !d.pushLocked(r) {
			return false
		}
	}
	return true
}

// Ack records that the device stored the frames with these ids. Ids that
// are not pending for this device are ignored: acks are idempotent. The
// first ack of a message by any of the user's devices sends a delivered
// receipt to its sender.
func (d *Device) Ack(ids []string) {
	var acks []ack
	d.mu.Lock()
	for _, id := range ids {
		p, ok := parseID(id)
		if !ok {
			continue
		}
		i := d.findLocked(p)
		if i < 0 {
			continue
		}
		s := &d.inflight[i]
		if s.done || p.receipt != (s.kind == KindReceipts) {
			continue
		}
		if p.receipt {
			if p.part >= s.parts {
				continue
			}
			s.acked |= 1 << p.part
			if s.acked != (uint64(1)<<s.parts)-1 {
				continue
			}
		}
		s.done = true
		if s.kind == KindMessage && s.from != d.user.id {
			acks = append(acks, ack{seq: s.seq, id: s.idSeq, from: s.from})
		}
	}
	d.advanceFloorLocked()
	if d.mode == modeBehind && len(d.inflight) <= d.svc.cfg.Window/2 {
		d.startCatchUpLocked()
	}
	d.mu.Unlock()
	d.user.markDirty()
	if len(acks) > 0 {
		d.user.delivered(acks)
	}
}

// findLocked returns the index of the inflight slot an id names, or -1.
func (d *Device) findLocked(p parsedID) int {
	seq := p.seq
	if !p.receipt {
		if real, ok := d.alias[seq]; ok {
			seq = real
		}
	}
	i := sort.Search(len(d.inflight), func(i int) bool { return d.inflight[i].seq >= seq })
	if i == len(d.inflight) || d.inflight[i].seq != seq {
		return -1
	}
	if !p.receipt && d.inflight[i].idSeq != p.seq {
		return -1
	}
	return i
}

// Read sends read receipts for messages the user received. It returns an
// error wrapping ErrNotFound naming the ids that are not such messages
// (after handling the others), or ErrUnavailable when the log cannot be read.
func (d *Device) Read(ctx context.Context, ids []string) error {
	var missing []string
	for _, id := range ids {
		p, ok := parseID(id)
		if !ok || p.receipt {
			missing = append(missing, id)
			continue
		}
		from, ok, err := d.receivedFrom(ctx, p.seq)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, id)
			continue
		}
		d.user.readBy(p.seq, from)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %d of the ids are not messages you received (first: %s)", ErrNotFound, len(missing), missing[0])
	}
	return nil
}

// receivedFrom returns the sender of the message with id sequence idSeq
// when it was addressed to this device's user by someone else.
func (d *Device) receivedFrom(ctx context.Context, idSeq uint64) (string, bool, error) {
	d.mu.Lock()
	if i := d.findLocked(parsedID{seq: idSeq}); i >= 0 {
		s := d.inflight[i]
		d.mu.Unlock()
		return s.from, s.kind == KindMessage && s.from != d.user.id, nil
	}
	d.mu.Unlock()
	h, err := d.svc.lookupMessage(ctx, idSeq)
	if err != nil || h == nil {
		return "", false, err
	}
	from := h.from
	return from, h.to == d.user.id && from != d.user.id, nil
}

// Close detaches the device. Its acknowledged position is kept; what it did
// not acknowledge is delivered again on its next connection. Close is
// idempotent.
func (d *Device) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.mode = modeClosed
	d.pending = nil
	d.mu.Unlock()
	d.user.detach(d)
	d.svc.releaseUser(d.user)
}

// closeWith ends the device's session for reason; the session then calls
// Close.
func (d *Device) closeWith(reason error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked(reason)
}

func (d *Device) closeLocked(reason error) {
	if d.mode == modeClosed {
		return
	}
	d.mode = modeClosed
	d.pending = nil
	d.sink.Close(reason)
}
