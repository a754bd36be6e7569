package delivery

import (
	"context"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/natsx"
)

// readState is one source's part of a catch-up round.
type readState struct {
	subject string
	from    uint64
	until   uint64
	recs    []*record
	more    bool // the batch was full: records after it were not read
}

// catchUp reads the device's sources from the log and delivers their
// records merged in stream order, then hands over to live delivery without
// gap or repeat: the records that arrived live meanwhile are delivered if
// they continue each source's sequence, and otherwise the log is read again.
//
// Each round reads one batch per source. The reads happen one after the
// other, so with several sources the round first notes the log's last
// sequence and delivers nothing after it: a source read later could
// otherwise hold a record stored after one that an earlier read missed (a
// group message stored after the notice that ended the membership). Records
// after the snapshot were stored after the live subscriptions existed, so
// they are among the live records the hand-over delivers in order. And
// when a source's batch was full, the round only delivers records up to the
// end of that batch: another source's later records could otherwise
// overtake records of this one not yet read.
func (d *Device) catchUp() {
	defer d.svc.wg.Done()
	ctx := d.svc.ctx
	reads := newCatchUpReads()
	defer reads.close(d.svc)
	backoff := 100 * time.Millisecond
	for {
		d.mu.Lock()
		if d.mode != modeCatchUp {
			d.mu.Unlock()
			return
		}
		states := []*readState{{subject: d.inbox.subject, from: d.inbox.last + 1}}
		for _, s := range d.groups {
			states = append(states, &readState{subject: s.subject, from: s.last + 1, until: s.until})
		}
		d.mu.Unlock()

		var err error
		snapshot := ^uint64(0)
		if len(states) > 1 {
			snapshot, err = d.svc.lastLogSeq(ctx)
		}
		for _, st := range states {
			if err != nil {
				break
			}
			err = d.readBatch(st, reads)
		}
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

		horizon := snapshot
		more := false
		var merged []*record
		for _, st := range states {
			if st.more {
				more = true
				horizon = min(horizon, st.recs[len(st.recs)-1].seq)
			}
			merged = append(merged, st.recs...)
		}
		sort.Slice(merged, func(i, j int) bool { return merged[i].seq < merged[j].seq })

		reshape := false
		for _, r := range merged {
			if r.seq > horizon {
				break
			}
			if err := d.sink.WaitRoom(ctx); err != nil {
				return
			}
			d.mu.Lock()
			if d.mode != modeCatchUp {
				d.mu.Unlock()
				return
			}
			res := pushed
			if src := d.sourceLocked(r); src != nil {
				res = d.pushLocked(src, r)
			}
			d.mu.Unlock()
			if res == stopped {
				return
			}
			if res == reshaped {
				reshape = true // sources changed: read them again from here
				break
			}
		}
		if more || reshape {
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
			if d.thaw {
				// Every source, the late-loaded groups included, has been
				// read to the end: the floor may move again.
				d.frozen, d.thaw = false, false
			}
			d.advanceFloorLocked()
			if d.unsure {
				d.svc.wg.Add(1)
				go d.verify(d.catchUps)
			}
			d.mu.Unlock()
			return
		}
		d.overflow = false
		d.pending = d.pending[:0]
		d.mu.Unlock()
	}
}

// catchUpReads is what a catch-up keeps from one round to the next about
// its sources' reads.
type catchUpReads struct {
	readers map[string]*natsx.SubjectReader      // long backlogs, by subject
	making  map[string]chan *natsx.SubjectReader // readers being made (nil: failed)
	read    map[string]bool                      // subjects read once already
}

// newCatchUpReads returns a catch-up's empty record of its reads.
func newCatchUpReads() *catchUpReads {
	return &catchUpReads{
		readers: map[string]*natsx.SubjectReader{},
		making:  map[string]chan *natsx.SubjectReader{},
		read:    map[string]bool{},
	}
}

// firstBatch is the size of a catch-up's first read of a source: enough
// for most backlogs, small enough that the first frames go out at once and
// that a long backlog is found before much of it is read with direct gets.
const firstBatch = 64

// startReader makes a reader of subject from sequence from in the
// background: the round delivers what it has read meanwhile, and the
// reader's first batch is on its way when the next round asks for it
// (reader). Its consumer starts at start, at or before from: after the
// catch-up's first read of the subject, where that read started
// (ReaderOptions.Start: cheaper for the server to make), passing over
// what it returned.
func (c *catchUpReads) startReader(d *Device, subject string, start, from uint64) {
	svc := d.svc
	ch := make(chan *natsx.SubjectReader, 1)
	c.making[subject] = ch
	svc.wg.Add(1)
	go func() {
		defer svc.wg.Done()
		r, err := natsx.NewSubjectReader(svc.ctx, svc.nc, svc.js, natsx.StreamMsgs, subject, from,
			natsx.ReaderOptions{Batch: svc.cfg.ReadBatch, MaxBytes: readBytes, Start: start})
		if err != nil {
			svc.log.Warn("long backlog: read on with direct gets", "user_id", d.user.id, "err", err)
		} else {
			svc.m.BacklogReaders.Inc()
		}
		ch <- r
	}()
}

// reader returns subject's reader, waiting for it if it is being made,
// or nil.
func (c *catchUpReads) reader(ctx context.Context, subject string) *natsx.SubjectReader {
	if ch := c.making[subject]; ch != nil {
		select {
		case r := <-ch:
			delete(c.making, subject)
			if r != nil {
				c.readers[subject] = r
			}
		case <-ctx.Done():
			return nil
		}
	}
	return c.readers[subject]
}

// drop closes the reader of subject, if any, in the background.
func (c *catchUpReads) drop(svc *Service, subject string) {
	if ch := c.making[subject]; ch != nil {
		delete(c.making, subject)
		svc.wg.Add(1)
		go func() {
			defer svc.wg.Done()
			if r := <-ch; r != nil {
				closeReader(svc, r)
			}
		}()
	}
	if r := c.readers[subject]; r != nil {
		delete(c.readers, subject)
		svc.wg.Add(1)
		go func() {
			defer svc.wg.Done()
			closeReader(svc, r)
		}()
	}
}

// closeReader removes r's consumer, or leaves it to the server.
func closeReader(svc *Service, r *natsx.SubjectReader) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(svc.ctx), 5*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		svc.log.Debug("remove a catch-up reader (the server removes it a minute later)", "err", err)
	}
}

// close closes every reader.
func (c *catchUpReads) close(svc *Service) {
	for subject := range c.making {
		c.drop(svc, subject)
	}
	for subject := range c.readers {
		c.drop(svc, subject)
	}
}

// readBytes bounds the bytes of one read of the log.
const readBytes = 4 << 20

// readBatch reads one batch of st's subject: with direct gets, and through
// a reader of its own once the source turns out to have a long backlog.
func (d *Device) readBatch(st *readState, reads *catchUpReads) error {
	if st.until != 0 && st.from >= st.until {
		return nil
	}
	ctx, cfg := d.svc.ctx, d.svc.cfg
	add := func(m *nats.Msg, seq uint64) error {
		r, err := decodeStored(m, seq, st.subject)
		if err != nil {
			d.svc.log.Warn("skipping undecodable record", "user_id", d.user.id, "err", err)
			// No frames: passed over, but counted as read.
			r = &record{seq: seq, subject: st.subject, group: m.Header.Get(HdrGroup)}
		}
		if st.until == 0 || r.seq < st.until {
			st.recs = append(st.recs, r)
		}
		return nil
	}
	if r := reads.reader(ctx, st.subject); r != nil && r.Next() != st.from {
		reads.drop(d.svc, st.subject) // the round stopped short of its end
	}
	var res natsx.BatchResult
	if r := reads.readers[st.subject]; r != nil {
		var err error
		if res, err = r.Read(ctx, add); err != nil {
			reads.drop(d.svc, st.subject) // the next round reads on with direct gets
			return err
		}
	} else {
		batch := cfg.ReadBatch
		if !reads.read[st.subject] {
			batch = min(batch, firstBatch)
		}
		var err error
		res, err = natsx.GetBatch(ctx, d.svc.nc, natsx.StreamMsgs, natsx.BatchRequest{
			Subject: st.subject, Seq: st.from, Batch: batch, MaxBytes: readBytes,
		}, func(m *nats.Msg) error { return add(m, natsx.Seq(m)) })
		if err != nil {
			return err
		}
		if st.until == 0 && cfg.LongBacklog > 0 && res.Count > 0 && res.Pending >= uint64(cfg.LongBacklog) {
			start := res.Last + 1
			if !reads.read[st.subject] {
				start = st.from // passing over the first batch costs less
			}
			reads.startReader(d, st.subject, start, res.Last+1)
		}
		reads.read[st.subject] = true
	}
	st.more = res.Pending > 0 && len(st.recs) > 0 && (st.until == 0 || res.Last < st.until)
	return nil
}

// drainPendingLocked delivers the live records that arrived during the
// catch-up. It returns false when they leave a gap or change the sources
// (the log must be read again), or delivery had to stop.
func (d *Device) drainPendingLocked() bool {
	for i, r := range d.pending {
		src := d.sourceLocked(r)
		if src == nil || r.seq <= src.last {
			continue
		}
		if r.last > src.last {
			d.pending = append(d.pending[:0], d.pending[i:]...)
			return false
		}
		if d.pushLocked(src, r) != pushed {
			d.pending = append(d.pending[:0], d.pending[i+1:]...)
			return false
		}
	}
	return true
}

// verify runs VerifyAfter after catch-up number gen handed the device over
// to live delivery. It asks the message log's leader for each source's
// first record after the last one the device has: one the catch-up's read
// did not see (a lagging replica answered) and that did not come live (the
// subscription had not reached the leader's server yet) would be there.
// Such a record at or below the device's position, which other sources'
// records carried past it, is missed. One above it may just be on its
// way: VerifyAfter later it must have come live, or it is missed too. A
// miss starts another catch-up (which verifies again); otherwise the floor
// may move on.
func (d *Device) verify(gen uint64) {
	defer d.svc.wg.Done()
	ctx := d.svc.ctx
	wait := d.svc.cfg.VerifyAfter
	var ahead map[*record]bool // found last round above the position: due live since
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		d.mu.Lock()
		if d.mode != modeLive || d.catchUps != gen {
			d.mu.Unlock() // a newer catch-up verifies for itself
			return
		}
		if ahead != nil {
			d.settle(len(d.unprocessedLocked(ahead)))
			return
		}
		upTo := d.pos
		srcs := []source{*d.inbox}
		for _, s := range d.groups {
			srcs = append(srcs, *s)
		}
		d.mu.Unlock()

		next, err := d.nextRecords(ctx, srcs)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.svc.log.Warn("verify catch-up, retrying", "user_id", d.user.id, "device", d.id, "err", err)
			wait = min(2*wait, 30*time.Second)
			continue
		}
		d.mu.Lock()
		if d.mode != modeLive || d.catchUps != gen {
			d.mu.Unlock()
			return
		}
		next = d.unprocessedLocked(next)
		missed := 0
		for r := range next {
			if r.seq <= upTo {
				missed++
				delete(next, r)
			}
		}
		if missed > 0 || len(next) == 0 {
			d.settle(missed)
			return
		}
		ahead, wait = next, d.svc.cfg.VerifyAfter
		d.mu.Unlock()
	}
}

// settle ends a verification, with d.mu held, and unlocks it: with missed
// sources, another catch-up; without, the floor moves on.
func (d *Device) settle(missed int) {
	if missed > 0 {
		d.svc.m.MissedRecords.Add(float64(missed))
		d.startCatchUpLocked()
		d.mu.Unlock()
		return
	}
	d.unsure = false
	d.advanceFloorLocked()
	d.mu.Unlock()
	d.user.markDirty() // after d.mu: the user's lock comes first
}

// unprocessedLocked keeps, of records (their subject, group and sequence
// only), those the device's sources have not processed yet.
func (d *Device) unprocessedLocked(records map[*record]bool) map[*record]bool {
	out := map[*record]bool{}
	for r := range records {
		if src := d.sourceLocked(r); src != nil && src.last < r.seq {
			out[r] = true
		}
	}
	return out
}

// nextRecords returns each source's first record after its last one that
// the device reads, as the leader has it (subject, group and sequence).
func (d *Device) nextRecords(ctx context.Context, srcs []source) (map[*record]bool, error) {
	next := map[*record]bool{}
	for _, s := range srcs {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		seq, err := natsx.NextSeq(rctx, d.svc.nc, natsx.StreamMsgs, s.subject, s.last+1)
		cancel()
		if err != nil {
			return nil, err
		}
		if seq != 0 && s.accepts(seq) {
			next[&record{seq: seq, subject: s.subject, group: s.group}] = true
		}
	}
	return next, nil
}
