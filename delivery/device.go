package delivery

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/wire"
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

// source is one subject a device reads: its user's inbox, or a group it is
// a member of.
type source struct {
	subject string
	group   string // "" for the inbox
	last    uint64 // last sequence processed on subject
	until   uint64 // records from this sequence on are not the device's (0: none)
}

// accepts reports whether r on this source is the device's to deliver.
func (s *source) accepts(seq uint64) bool { return s.until == 0 || seq < s.until }

// slot is a record delivered to a device and not yet fully acknowledged.
type slot struct {
	seq   uint64
	idSeq uint64 // the sequence in the message id
	from  string
	kind  string
	parts int
	acked uint64 // bit i: part i acknowledged (receipts)
	done  bool
	late  bool // delivered after a later record: the floor may have passed it unacknowledged
}

// Device is one connected device of a user. Its methods are safe for
// concurrent use.
type Device struct {
	svc  *Service
	user *userState
	id   string
	sink chat.Sink
	// batch: the sink takes a receipts record as one receipts frame.
	batch bool

	mu       sync.Mutex
	mode     mode
	inbox    *source
	groups   map[string]*source // active group sources, by group id
	pos      uint64             // every source's records up to pos are processed
	floor    uint64             // every record up to floor is acknowledged
	acking   int                // Ack calls whose receipts are not queued yet
	safe     uint64             // the floor before the first of those calls
	frozen   bool               // the group sources are not known yet: floor stays
	unsure   bool               // a catch-up may have missed records: floor stays until verify passes
	catchUps uint64             // catch-ups started; a verification is for the latest
	thaw     bool               // groups were loaded: unfreeze after the next full catch-up
	pending  []*record          // live records that arrived during a catch-up
	overflow bool               // pending overflowed: re-read after the catch-up
	inflight []slot             // delivered, not fully acknowledged, in sequence order
	alias    map[uint64]uint64  // id sequence -> record sequence, where they differ
	closed   bool               // Close was called
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

// storableFloor is the floor that may be stored: it leaves out the acks
// whose receipts are still being made, so that once the queued receipts
// are stored, a stored floor never covers an ack whose receipt is lost.
func (d *Device) storableFloor() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.acking > 0 {
		return d.safe
	}
	return d.floor
}

// sourceLocked returns the source a record belongs to for this device, or
// nil when the device does not read that subject.
func (d *Device) sourceLocked(r *record) *source {
	if r.subject == d.inbox.subject {
		return d.inbox
	}
	if r.group != "" {
		if s := d.groups[r.group]; s != nil && s.subject == r.subject {
			return s
		}
	}
	return nil
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
	if d.frozen || d.unsure {
		return
	}
	f := d.pos
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

// pushResult tells the caller of pushLocked what happened.
type pushResult int

const (
	pushed   pushResult = iota // delivered or passed
	stopped                    // the window is full (behind) or the sink overflowed (closed)
	reshaped                   // a membership notice changed the sources: re-read them
)

// pushLocked delivers r, the next record of src in stream order.
func (d *Device) pushLocked(src *source, r *record) pushResult {
	if r.seq <= src.last || !src.accepts(r.seq) {
		return pushed
	}
	if r.kind == KindMember {
		src.last = r.seq
		d.pos = max(d.pos, r.seq)
		changed := src == d.inbox && d.applyNoticeLocked(r)
		d.advanceFloorLocked()
		if changed {
			return reshaped
		}
		return pushed
	}
	if r.frames == nil || d.isOwn(r) {
		src.last = r.seq
		d.pos = max(d.pos, r.seq)
		d.advanceFloorLocked()
		return pushed
	}
	if len(d.inflight) >= d.svc.cfg.Window {
		d.mode = modeBehind
		d.pending = nil
		return stopped
	}
	frames := r.frames
	if d.batch {
		if b := r.batchFrames(); b != nil {
			frames = b
		}
	}
	for _, f := range frames {
		if !d.sink.Deliver(f) {
			d.svc.m.SlowClosed.Inc()
			d.closeLocked(ErrSlowClient)
			return stopped
		}
	}
	sl := slot{seq: r.seq, idSeq: r.idSeq, from: r.from, kind: r.kind, parts: len(r.frames), late: r.seq < d.pos}
	if n := len(d.inflight); n == 0 || d.inflight[n-1].seq < r.seq {
		d.inflight = append(d.inflight, sl)
	} else {
		// A source added late (groups loaded after connect) delivers
		// records older than some already in flight: keep them sorted.
		i := sort.Search(n, func(i int) bool { return d.inflight[i].seq >= r.seq })
		d.inflight = append(d.inflight, slot{})
		copy(d.inflight[i+1:], d.inflight[i:])
		d.inflight[i] = sl
	}
	if r.idSeq != r.seq {
		if d.alias == nil {
			d.alias = map[uint64]uint64{}
		}
		d.alias[r.idSeq] = r.seq
	}
	src.last = r.seq
	d.pos = max(d.pos, r.seq)
	return pushed
}

// applyNoticeLocked starts or stops reading a group at a membership notice
// from the device's inbox, and reports whether the sources changed.
func (d *Device) applyNoticeLocked(r *record) bool {
	switch r.event {
	case EventJoined:
		if s := d.groups[r.group]; s != nil {
			if s.until != 0 && s.until <= r.seq {
				// Joined again after leaving.
				s.until = 0
				s.last = max(s.last, r.seq)
				return true
			}
			return false
		}
		d.addGroupLocked(chat.Interval{Group: r.group, From: r.seq})
		return true
	case EventLeft:
		if s := d.groups[r.group]; s != nil {
			d.removeGroupLocked(r.group)
			return true
		}
	}
	return false
}

// addGroupLocked starts reading a group from the start of iv.
func (d *Device) addGroupLocked(iv chat.Interval) {
	if d.groups == nil {
		d.groups = map[string]*source{}
	}
	// Records up to the inbox position were already processed (a device's
	// floor covers all its sources); a later join starts at its notice.
	s := &source{subject: natsx.Group(iv.Group), group: iv.Group, last: max(iv.From, d.inbox.last), until: iv.To}
	d.groups[iv.Group] = s
	d.svc.addGroupDevice(iv.Group, d)
}

// removeGroupLocked stops reading a group.
func (d *Device) removeGroupLocked(group string) {
	delete(d.groups, group)
	d.svc.removeGroupDevice(group, d)
}

// onLive takes a record republished on a live subject of the device.
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
		src := d.sourceLocked(r)
		if src == nil || r.seq <= src.last {
			return
		}
		if r.last > src.last {
			// A record between the last one we processed and this one
			// never reached us: read the log from where we are.
			d.startCatchUpLocked()
			d.pending = append(d.pending, r)
			return
		}
		if d.pushLocked(src, r) == reshaped {
			d.startCatchUpLocked()
		}
	}
}

// relay hands a frame that is not stored (typing) to the device's session
// at once, even during a catch-up: it is ordered with nothing. When the
// session's queue is full it is dropped: it is worth nothing late.
func (d *Device) relay(frame []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mode != modeClosed {
		d.sink.Deliver(frame)
	}
}

// Typing relays a typing indicator from this device's user to user to, or
// to the other members of group, over core NATS: it is not stored. A
// typing to a group the user is not a member of returns an error wrapping
// ErrNotFound.
func (d *Device) Typing(ctx context.Context, to, group string) error {
	from := d.user.id
	var m *nats.Msg
	if group != "" {
		if d.svc.groups == nil {
			return fmt.Errorf("%w: no such group", ErrNotFound)
		}
		ok, err := d.svc.groups.IsMember(ctx, group, from)
		if err != nil {
			return fmt.Errorf("check membership of %s: %w", group, err)
		}
		if !ok {
			return fmt.Errorf("%w: no such group", ErrNotFound)
		}
		m = nats.NewMsg(natsx.LiveGroup(group))
		m.Data = wire.AppendTyping(nil, from, "", group)
	} else {
		m = nats.NewMsg(natsx.Live(to))
		m.Data = wire.AppendTyping(nil, from, to, "")
	}
	m.Header.Set(hdrControl, controlFrame)
	m.Header.Set(HdrFrom, from)
	if err := d.svc.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("%w: relay typing: %v", ErrUnavailable, err)
	}
	return nil
}

// resync switches a live device to a catch-up that checks the log.
func (d *Device) resync() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mode == modeLive {
		d.startCatchUpLocked()
	}
}

// startCatchUpLocked starts the goroutine that reads the log.
func (d *Device) startCatchUpLocked() {
	if d.mode == modeClosed || d.mode == modeCatchUp {
		return
	}
	d.mode = modeCatchUp
	d.overflow = false
	d.catchUps++
	if d.svc.cfg.VerifyAfter > 0 {
		d.unsure = true
	}
	d.svc.wg.Add(1)
	go d.catchUp()
}

// Ack records that the device stored the frames with these ids. Ids that
// are not pending for this device are ignored: acks are idempotent. The
// first ack of a message by any of the user's devices sends a delivered
// receipt to its sender.
func (d *Device) Ack(ids []string) {
	var acks []ack
	d.mu.Lock()
	if d.acking == 0 {
		d.safe = d.floor
	}
	d.acking++
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
		if p.receipt && p.part >= 0 {
			// One receipt of the record; its batch id (part -1) acks
			// them all.
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
			acks = append(acks, ack{seq: s.seq, id: s.idSeq, from: s.from, late: s.late})
		}
	}
	d.advanceFloorLocked()
	floor := d.floor
	if d.mode == modeBehind && len(d.inflight) <= d.svc.cfg.Window/2 {
		d.startCatchUpLocked()
	}
	d.mu.Unlock()
	d.user.markDirty()
	d.user.delivered(floor, acks)
	d.mu.Lock()
	d.acking--
	d.mu.Unlock()
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
	if h.from == d.user.id {
		return h.from, false, nil
	}
	if h.group != "" {
		if d.svc.groups == nil {
			return "", false, nil
		}
		ok, err := d.svc.groups.WasMember(ctx, h.group, d.user.id, idSeq)
		if err != nil {
			return "", false, err
		}
		return h.from, ok, nil
	}
	return h.from, h.to == d.user.id, nil
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
	for g := range d.groups {
		d.svc.removeGroupDevice(g, d)
	}
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
