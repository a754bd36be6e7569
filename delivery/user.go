package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/wire"
)

// deviceRecord is the stored value of a user's key in the devices bucket.
type deviceRecord struct {
	V       int         `json:"v"`
	Devices cursorsByID `json:"devices"`
}

// deviceCursor is one device's stored position: every record of the user
// with a sequence up to Floor was acknowledged by the device.
type deviceCursor struct {
	Floor uint64 `json:"floor"`
	Seen  int64  `json:"seen"`
}

// cursorsByID is a user's devices' cursors by device id, stored as a JSON
// object. It is a short slice, not a map: a user has a handful of devices,
// and a map of one costs ten times the memory (one online user each).
type cursorsByID []namedCursor

type namedCursor struct {
	id string
	c  *deviceCursor
}

// get returns the cursor of device id, or nil.
func (cs cursorsByID) get(id string) *deviceCursor {
	for _, e := range cs {
		if e.id == id {
			return e.c
		}
	}
	return nil
}

// set gives device id cursor c.
func (cs *cursorsByID) set(id string, c *deviceCursor) {
	for i, e := range *cs {
		if e.id == id {
			(*cs)[i].c = c
			return
		}
	}
	*cs = append(*cs, namedCursor{id, c})
}

// clone is a deep copy.
func (cs cursorsByID) clone() cursorsByID {
	out := make(cursorsByID, len(cs))
	for i, e := range cs {
		c := *e.c
		out[i] = namedCursor{e.id, &c}
	}
	return out
}

func (cs cursorsByID) MarshalJSON() ([]byte, error) {
	m := make(map[string]*deviceCursor, len(cs))
	for _, e := range cs {
		m[e.id] = e.c
	}
	return json.Marshal(m)
}

func (cs *cursorsByID) UnmarshalJSON(data []byte) error {
	var m map[string]*deviceCursor
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	if m == nil {
		*cs = nil
		return nil
	}
	out := make(cursorsByID, 0, len(m))
	for id, c := range m {
		if c != nil {
			out = append(out, namedCursor{id, c})
		}
	}
	slices.SortFunc(out, func(a, b namedCursor) int { return strings.Compare(a.id, b.id) })
	*cs = out
	return nil
}

// maxReceipted bounds the per-user memory of delivered receipts produced for
// messages acknowledged out of order (above every device's floor).
const maxReceipted = 4096

// maxRead bounds the per-user memory of read receipts produced (to answer a
// repeated read without a second receipt).
const maxRead = 1024

// userState is what a node holds for an online user: its devices here, its
// stored device record, and which receipts it has produced this session.
// It exists only while at least one of the user's devices is connected.
type userState struct {
	svc   *Service
	id    string
	refs  int                              // guarded by svc.mu
	ready chan struct{}                    // closed once loaded
	err   error                            // load error, set before ready closes
	sub   interface{ Unsubscribe() error } // guarded by svc.liveMu; nil under liveAll

	devs atomic.Pointer[[]*Device] // copy on write, read by the dispatcher

	mu    sync.Mutex
	rec   deviceRecord
	rev   uint64
	gen   uint64 // bumped on every change to store
	saved uint64 // gen last stored
	// accounted is the highest floor of any device up to which the
	// receipts of its acks were produced (or, loaded from storage, produced
	// by an earlier session): every message up to it was acknowledged and
	// its receipt made. It moves only in delivered, under mu, after the
	// receipts: a device's own floor moves before its receipts are made, so
	// reading it instead would let two devices acking the same message at
	// once each think the other one made the receipt.
	accounted uint64
	// receipted holds the messages (id sequence → record sequence) with a
	// delivered or read receipt above every accounted floor, or made for a
	// late record (which another device's ack may still bring below the
	// floors). receiptOrder holds the others in the order they were made:
	// as acks arrive, the floors pass the oldest first, which are
	// forgotten from its front (forgetCoveredLocked), so a device acking
	// in order keeps only its latest acks here. The rest are pruned when
	// the record is stored.
	receipted    map[uint64]uint64
	receiptOrder []receiptMark // from receiptHead on
	receiptHead  int
	read         map[uint64]struct{} // recent read receipts
	readOrder    []uint64            // read's entries, oldest first
}

func newUserState(s *Service, id string) *userState {
	u := &userState{
		svc:   s,
		id:    id,
		ready: make(chan struct{}),
		rec:   deviceRecord{V: 1, Devices: cursorsByID{}},
	}
	u.devs.Store(&[]*Device{})
	return u
}

// load reads the device record and subscribes to live records. The
// subscription comes first: a record stored after it is republished to us,
// one stored before it is found by the catch-up read that follows.
func (u *userState) load(ctx context.Context) error {
	subscribed, err := u.svc.subscribeUser(u)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e, err := u.svc.kv.Get(ctx, u.id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		u.svc.unsubscribeUser(u)
		return err
	default:
		var rec deviceRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Devices == nil {
			u.svc.log.Warn("unreadable device record, starting afresh", "user_id", u.id, "err", err)
		} else {
			u.rec = rec
		}
		u.rev = e.Revision()
	}
	now := u.svc.cfg.Now().UnixMilli()
	n := len(u.rec.Devices)
	u.rec.Devices = slices.DeleteFunc(u.rec.Devices, func(e namedCursor) bool {
		return now-e.c.Seen > u.svc.cfg.DeviceTTL.Milliseconds()
	})
	if len(u.rec.Devices) < n {
		u.gen++
	}
	for _, e := range u.rec.Devices {
		u.accounted = max(u.accounted, e.c.Floor)
	}
	if !subscribed {
		return nil // the node's subscription for all users is in place
	}
	// Make sure the server has the subscription before catch-up reads.
	if err := u.svc.nc.FlushWithContext(ctx); err != nil {
		u.svc.unsubscribeUser(u)
		return err
	}
	return nil
}

// refresh merges the stored record into this state: a device that moved
// here from another node brings the position that node stored.
func (u *userState) refresh(ctx context.Context) error {
	// A notice can arrive while the state is still loading: merge into the
	// loaded state, never under the load.
	select {
	case <-u.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if u.err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e, err := u.svc.kv.Get(ctx, u.id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var rec deviceRecord
	if json.Unmarshal(e.Value(), &rec) != nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, e := range rec.Devices {
		c := e.c
		if mine := u.rec.Devices.get(e.id); mine != nil {
			mine.Floor = max(mine.Floor, c.Floor)
			mine.Seen = max(mine.Seen, c.Seen)
		} else {
			cc := *c
			u.rec.Devices.set(e.id, &cc)
		}
		// Another node stored this floor after producing its receipts.
		u.accounted = max(u.accounted, c.Floor)
	}
	if e.Revision() > u.rev {
		u.rev = e.Revision()
	}
	return nil
}

func (u *userState) devices() []*Device { return *u.devs.Load() }

// attach adds d, returning the device it replaces, if any, and whether the
// device was never seen before. d starts where the replaced device was, or
// at its stored floor; a device seen for the first time starts at the
// beginning of the user's inbox.
func (u *userState) attach(d *Device) (old *Device, isNew bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	cur := u.devices()
	next := make([]*Device, 0, len(cur)+1)
	for _, x := range cur {
		if x.id == d.id {
			old = x
			continue
		}
		next = append(next, x)
	}
	var floor uint64
	if c := u.rec.Devices.get(d.id); c != nil {
		floor = c.Floor
	}
	if old != nil {
		floor = max(floor, old.storableFloor())
	}
	now := u.svc.cfg.Now().UnixMilli()
	if c := u.rec.Devices.get(d.id); c != nil {
		c.Seen = now
	} else {
		u.rec.Devices.set(d.id, &deviceCursor{Seen: now})
		isNew = true
	}
	u.gen++
	d.floor, d.pos, d.inbox.last = floor, floor, floor
	next = append(next, d)
	u.devs.Store(&next)
	return old, isNew
}

// detach removes d (if it is still the attached device of its id) and folds
// its position into the record.
func (u *userState) detach(d *Device) {
	u.mu.Lock()
	defer u.mu.Unlock()
	cur := u.devices()
	next := make([]*Device, 0, len(cur))
	for _, x := range cur {
		if x != d {
			next = append(next, x)
		}
	}
	u.devs.Store(&next)
	if c := u.rec.Devices.get(d.id); c != nil {
		c.Floor = max(c.Floor, d.storableFloor())
		c.Seen = u.svc.cfg.Now().UnixMilli()
	}
	u.gen++
}

// hasOtherDevices reports whether the user has a device other than dev, so
// that its sends need a copy in its own inbox.
func (u *userState) hasOtherDevices(dev string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, e := range u.rec.Devices {
		if e.id != dev {
			return true
		}
	}
	return false
}

func (u *userState) markDirty() {
	u.mu.Lock()
	u.gen++
	u.mu.Unlock()
}

// ack is a message acknowledged by a device.
type ack struct {
	seq  uint64 // record sequence
	id   uint64 // sequence in the message id
	from string
	late bool // see slot.late
}

// delivered produces a delivered receipt for each message that no device of
// the user acknowledged before. floor is the acknowledging device's floor
// after these acks.
func (u *userState) delivered(floor uint64, acks []ack) {
	now := u.svc.cfg.Now().UnixMilli()
	u.mu.Lock()
	defer u.mu.Unlock()
	covered := u.accounted
	for _, a := range acks {
		// A floor covers a message when a device acknowledged it, except
		// one delivered late (missed live, found by a later read): the
		// floors may have passed it unacknowledged.
		if a.seq <= covered && !a.late {
			continue
		}
		if _, done := u.receipted[a.id]; done {
			continue
		}
		u.rememberReceipt(a.id, a.seq, a.late)
		u.svc.receipts.add(a.from, receiptItem{Msg: MessageID(a.id), Status: wire.StatusDelivered, By: u.id, TS: now})
		u.svc.m.MessagesDelivered.Inc()
	}
	u.accounted = max(u.accounted, floor)
	u.forgetCoveredLocked()
}

// readBy produces a read receipt for a message the user received, once.
// seq is the sequence in the message id. It reports whether a receipt was
// produced.
func (u *userState) readBy(seq uint64, from string) bool {
	now := u.svc.cfg.Now().UnixMilli()
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, done := u.read[seq]; done {
		return false
	}
	if u.read == nil {
		u.read = map[uint64]struct{}{}
	}
	if len(u.readOrder) >= maxRead {
		delete(u.read, u.readOrder[0])
		u.readOrder = u.readOrder[1:]
	}
	u.read[seq] = struct{}{}
	u.readOrder = append(u.readOrder, seq)
	u.rememberReceipt(seq, seq, false) // read implies delivered
	u.svc.receipts.add(from, receiptItem{Msg: MessageID(seq), Status: wire.StatusRead, By: u.id, TS: now})
	u.svc.m.MessagesRead.Inc()
	return true
}

// receiptMark is an entry of receipted, in receiptOrder.
type receiptMark struct{ id, seq uint64 }

// rememberReceipt notes a receipt for the message with id sequence id,
// stored at record sequence seq (made on first use: most online users
// produce none); late says it was made for a late record. When full it
// forgets the oldest entry, or an arbitrary one: at worst a receipt is
// produced twice, which clients tolerate.
func (u *userState) rememberReceipt(id, seq uint64, late bool) {
	if u.receipted == nil {
		u.receipted = map[uint64]uint64{}
	}
	if len(u.receipted) >= maxReceipted {
		if u.receiptHead < len(u.receiptOrder) {
			delete(u.receipted, u.receiptOrder[u.receiptHead].id)
			u.receiptHead++
		} else {
			for k := range u.receipted {
				delete(u.receipted, k)
				break
			}
		}
	}
	u.receipted[id] = seq
	if !late {
		if u.receiptHead > 0 && u.receiptHead >= len(u.receiptOrder)/2 {
			// Move the entries left to the front of the array, which
			// appends then reuse.
			n := copy(u.receiptOrder, u.receiptOrder[u.receiptHead:])
			u.receiptOrder, u.receiptHead = u.receiptOrder[:n], 0
		}
		u.receiptOrder = append(u.receiptOrder, receiptMark{id, seq})
	}
}

// forgetCoveredLocked forgets, oldest first, the receipts that the
// accounted floor now covers, up to the first one it does not.
func (u *userState) forgetCoveredLocked() {
	for u.receiptHead < len(u.receiptOrder) && u.receiptOrder[u.receiptHead].seq <= u.accounted {
		delete(u.receipted, u.receiptOrder[u.receiptHead].id)
		u.receiptHead++
	}
}

// pruneLocked forgets all the receipts that the devices' floors now cover.
func (u *userState) pruneLocked() {
	if len(u.receipted) == 0 {
		return
	}
	covered := u.accounted
	for id, seq := range u.receipted {
		if seq <= covered {
			delete(u.receipted, id)
		}
	}
	keep := u.receiptOrder[:0]
	for _, e := range u.receiptOrder[u.receiptHead:] {
		if e.seq > covered {
			keep = append(keep, e)
		}
	}
	u.receiptOrder, u.receiptHead = keep, 0
	if len(u.receipted) == 0 {
		u.receipted, u.receiptOrder = nil, nil
	}
}

// flush stores the device record when it changed, after the receipts
// queued so far: see snapshot.
func (u *userState) flush(ctx context.Context) error {
	snap, ok := u.snapshot()
	if !ok {
		return nil
	}
	if err := u.svc.receipts.flushAll(ctx); err != nil {
		return err
	}
	return u.store(ctx, snap)
}

// recordSnapshot is a device record to store and the state it was taken at.
type recordSnapshot struct {
	rec deviceRecord
	rev uint64
	gen uint64
}

// snapshot takes the device record to store, or reports that nothing
// changed. Store it only after storing the receipts queued so far: the
// floors it holds cover no ack whose receipt is not queued yet.
func (u *userState) snapshot() (recordSnapshot, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gen == u.saved {
		return recordSnapshot{}, false
	}
	for _, d := range u.devices() {
		if c := u.rec.Devices.get(d.id); c != nil {
			c.Floor = max(c.Floor, d.storableFloor())
		}
	}
	u.pruneLocked()
	return recordSnapshot{rec: cloneRecord(u.rec), rev: u.rev, gen: u.gen}, true
}

// store writes a snapshot, merging with a record written meanwhile by
// another node.
func (u *userState) store(ctx context.Context, snap recordSnapshot) error {
	rec, rev, gen := snap.rec, snap.rev, snap.gen
	for attempt := 0; ; attempt++ {
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		var newRev uint64
		if rev == 0 {
			newRev, err = u.svc.kv.Create(ctx, u.id, data)
		} else {
			newRev, err = u.svc.kv.Update(ctx, u.id, data, rev)
		}
		if err == nil {
			u.mu.Lock()
			u.rev = newRev
			if u.saved < gen {
				u.saved = gen
			}
			u.mu.Unlock()
			return nil
		}
		if attempt >= 4 || !(errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongSequence(err)) {
			return fmt.Errorf("store device record of %s: %w", u.id, err)
		}
		// Someone else wrote: merge their record into ours and retry.
		e, gerr := u.svc.kv.Get(ctx, u.id)
		if gerr != nil {
			return fmt.Errorf("reload device record of %s: %w", u.id, gerr)
		}
		var theirs deviceRecord
		if json.Unmarshal(e.Value(), &theirs) == nil {
			for _, e := range theirs.Devices {
				if mine := rec.Devices.get(e.id); mine != nil {
					mine.Floor = max(mine.Floor, e.c.Floor)
					mine.Seen = max(mine.Seen, e.c.Seen)
				} else {
					rec.Devices.set(e.id, e.c)
				}
			}
		}
		rev = e.Revision()
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func cloneRecord(r deviceRecord) deviceRecord {
	return deviceRecord{V: 1, Devices: r.Devices.clone()}
}
