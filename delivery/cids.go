package delivery

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/cidindex"
	"github.com/jetchat/jetchat/internal/natsx"
)

// cidFeed is a node's send index: it answers a repeated send (same user,
// same cid) for the whole dedup window without JetStream, whose duplicate
// table holds its ids in the servers' heaps, where the collector marks them
// on every cycle. The index holds no pointers. Every send this node stores
// goes into it and, within CidFlush, into one record on cids.<gateway> in
// StreamCids; every node reads every gateway's records, so a send stored
// on one node is known on all of them a moment later. The message log's own
// duplicate window (natsx.Settings.StoreDedupWindow) covers that moment and
// a retried store.
//
// At start the feed reads StreamCids (the whole window), then the message
// log's records of the last store window (and clockMargin): the sends a
// node stored before it stopped without writing their keys (a crash) are
// there. Sends wait until both are read.
//
// A node writes a record every CidFlush, empty when it stored nothing, and
// a last one marked goodbye when it stops. When another node's records stop
// without a goodbye for CidSilence (it crashed, or cannot store them), this
// node reads the message log's last sends again, and again every CidSilence
// while they stay stopped: the keys that node stored without writing them
// are there. So the log's own window only has to outlast that silence and a
// send's retries, not the gateway registry's expiry.
//
// A message store of this node that failed may have been stored, its
// answers lost: sends are refused until the node has read the log from
// before it on, and the keys found there that the index lacked go to the
// other nodes with the next flush (storeFailed, readUnsure). The service's
// connection should buffer nothing across a reconnect
// (natsx.StoreConnOptions), so that no store lands after that read.
type cidFeed struct {
	svc     *Service
	stream  jetstream.Stream // StreamCids
	idx     *cidindex.Table
	subject string
	window  time.Duration // the dedup window (how long StreamCids keeps records, less natsx.CidsMargin)
	store   time.Duration // the message log's own duplicate window
	silence time.Duration // Config.CidSilence
	// forget is how long a node whose records stopped is watched: its keys
	// wait at most half the store window before it refuses sends (stale),
	// and a send it took just before then ends within PublishTimeout.
	forget time.Duration

	mu       sync.Mutex
	pending  []byte    // entries not yet stored on StreamCids
	oldest   time.Time // when the first of pending was added
	inflight time.Time // when the first entry of the batch being stored was added (zero: none)
	// unstored is the older of oldest (with pending) and inflight, in ns
	// since the epoch (0: every key is stored), set under mu and read
	// without it by every send.
	unstored atomic.Int64

	ready chan struct{} // closed once the window is read

	peersMu sync.Mutex
	// peers holds, for each node's subject (this node's too), the server's
	// time of the last record read from it; a goodbye removes it.
	peers map[string]time.Time

	lastReread time.Time   // when the last reread began (run's goroutine)
	rereading  atomic.Bool // a reread is under way
	rereads    sync.WaitGroup
	// rereadSeq is the last log sequence the reads for a silent node have
	// read (or the start's read): the next one reads on from there. 0
	// while no node is silent.
	rereadSeq atomic.Uint64
	// unsure is when the earliest message store that failed and is not yet
	// covered by a read of the log began (ns since the epoch; 0: none). A
	// failed store may have been stored after all, its answers lost: until
	// the log is read from then on, sends are refused. Set under unsureMu,
	// read without it by every send.
	unsure    atomic.Int64
	unsureMu  sync.Mutex
	unsureGen uint64 // failed stores noted so far
}

// hdrGoodbye marks a node's last StreamCids record: it stopped cleanly,
// with every key stored.
const hdrGoodbye = "Jc-Goodbye"

// cidEntrySize is the size of one entry in a StreamCids record: the key's
// two hashes, the message's sequence, its id's sequence, its time.
const cidEntrySize = 40

// clockMargin is how much further back than the store window a node reads
// the message log for sends whose keys may be missing: the log's times are
// the server's, the window is counted on the node's clock.
const clockMargin = 15 * time.Second

// maxCidEntries bounds the entries in one StreamCids record.
const maxCidEntries = natsx.MaxRecord / cidEntrySize

func newCidFeed(s *Service, stream jetstream.Stream, gateway string, window, store time.Duration) *cidFeed {
	return &cidFeed{
		svc: s, stream: stream, idx: cidindex.New(window), subject: natsx.Cids(gateway),
		window: window, store: store, silence: s.cfg.CidSilence,
		forget: store + s.cfg.PublishTimeout + s.cfg.CidSilence,
		ready:  make(chan struct{}), peers: map[string]time.Time{},
	}
}

// SendIndexReady is closed once the send index holds the dedup window:
// sends wait until then. /readyz reports it.
func (s *Service) SendIndexReady() <-chan struct{} { return s.cids.ready }

// SendIndexState returns nil when the send index takes sends, or why it
// does not: it is still loading, its keys cannot be stored, or a message
// store failed and it reads the log first. /readyz reports it.
func (s *Service) SendIndexState() error {
	select {
	case <-s.cids.ready:
	default:
		return errors.New("the send index is still loading")
	}
	return s.cids.refusal()
}

// refusal says why sends are refused once the index is loaded, or nil.
func (f *cidFeed) refusal() error {
	if f.stale() {
		return errors.New("the send index cannot be stored")
	}
	if f.unsure.Load() != 0 {
		return errors.New("a store failed; the send index reads the message log first")
	}
	return nil
}

// IndexRecentSends reads the message log's sends of the last store window
// (and clockMargin) into the send index. Call it when another gateway has
// stopped without a clean shutdown: the keys of its last second of sends
// may never have reached StreamCids, and its users' repeats now come here.
// The feed sees a gateway whose records stop by itself (watch), but not one
// that restarted under the same id within the silence: its new
// incarnation's records go on where the old one's stopped.
func (s *Service) IndexRecentSends(ctx context.Context) error {
	select {
	case <-s.cids.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.cids.reread(ctx)
}

// reread reads the message log's last sends into the index again.
func (f *cidFeed) reread(ctx context.Context) error {
	f.svc.m.SendIndexRereads.Inc()
	_, err := f.loadLog(ctx, 0, "another gateway's registry entry expired")
	return err
}

// lookup answers a repeated send from the index, or returns the send's
// key for remember. It waits until the index holds the window.
func (f *cidFeed) lookup(ctx context.Context, from, cid string) (chat.Sent, cidindex.Key, bool, error) {
	select {
	case <-f.ready:
	case <-ctx.Done():
		return chat.Sent{}, cidindex.Key{}, false, fmt.Errorf("%w: the send index is still loading", ErrUnavailable)
	}
	if err := f.refusal(); err != nil {
		return chat.Sent{}, cidindex.Key{}, false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	k := cidindex.KeyOf(from, cid)
	e, ok := f.idx.Get(k, f.svc.cfg.Now())
	if !ok {
		return chat.Sent{}, k, false, nil
	}
	return chat.Sent{ID: MessageID(e.IDSeq), TS: e.TS, Seq: e.Seq, Duplicate: true}, k, true, nil
}

// stale reports whether keys have waited to be stored for longer than
// half the store window: past it, another node could miss them. When the
// message log's own window covers the whole dedup window, it never is.
func (f *cidFeed) stale() bool {
	if f.store >= f.window {
		return false
	}
	since := f.unstored.Load()
	return since != 0 && f.svc.cfg.Now().UnixNano()-since > int64(f.store/2)
}

// markUnstoredLocked sets unstored from oldest and inflight; f.mu is held.
func (f *cidFeed) markUnstoredLocked() {
	since := f.inflight
	if len(f.pending) > 0 && (since.IsZero() || f.oldest.Before(since)) {
		since = f.oldest
	}
	if since.IsZero() {
		f.unstored.Store(0)
	} else {
		f.unstored.Store(since.UnixNano())
	}
}

// storeFailed notes that a message store begun at start failed: it may
// have been stored, its answers lost, and a repeat past the log's window
// would then be stored again. Sends wait for a read of the log from then on
// (watch).
func (f *cidFeed) storeFailed(start time.Time) {
	t := start.UnixNano()
	f.unsureMu.Lock()
	defer f.unsureMu.Unlock()
	if cur := f.unsure.Load(); cur == 0 || t < cur {
		f.unsure.Store(t)
	}
	f.unsureGen++
}

// remember records a stored send under its key.
func (f *cidFeed) remember(k cidindex.Key, out chat.Sent) {
	idSeq := out.Seq
	if p, ok := parseID(out.ID); ok && !p.receipt {
		idSeq = p.seq
	}
	f.add(k, cidindex.Entry{Seq: out.Seq, IDSeq: idSeq, TS: out.TS}, true)
}

// add puts a key into the index and, when share is set and the index did
// not have it, among the keys the next flush stores for the other nodes.
func (f *cidFeed) add(k cidindex.Key, e cidindex.Entry, share bool) {
	now := f.svc.cfg.Now()
	if !f.idx.Put(k, e, now) || !share {
		return
	}
	f.mu.Lock()
	if len(f.pending) == 0 {
		f.oldest = now
	}
	f.pending = appendCidEntry(f.pending, k, e)
	f.markUnstoredLocked()
	f.mu.Unlock()
}

func appendCidEntry(b []byte, k cidindex.Key, e cidindex.Entry) []byte {
	b = binary.LittleEndian.AppendUint64(b, k.A)
	b = binary.LittleEndian.AppendUint64(b, k.B)
	b = binary.LittleEndian.AppendUint64(b, e.Seq)
	b = binary.LittleEndian.AppendUint64(b, e.IDSeq)
	return binary.LittleEndian.AppendUint64(b, uint64(e.TS))
}

// decodeCidEntries calls fn for each entry of a StreamCids record.
func decodeCidEntries(b []byte, fn func(cidindex.Key, cidindex.Entry)) error {
	if len(b)%cidEntrySize != 0 {
		return fmt.Errorf("send index record of %d bytes: not a whole number of entries", len(b))
	}
	for ; len(b) > 0; b = b[cidEntrySize:] {
		k := cidindex.Key{A: binary.LittleEndian.Uint64(b), B: binary.LittleEndian.Uint64(b[8:])}
		e := cidindex.Entry{
			Seq:   binary.LittleEndian.Uint64(b[16:]),
			IDSeq: binary.LittleEndian.Uint64(b[24:]),
			TS:    int64(binary.LittleEndian.Uint64(b[32:])),
		}
		fn(k, e)
	}
	return nil
}

// run loads the window (again and again until it can: sends wait), then
// every CidFlush stores the pending keys (an empty record when there are
// none), drops expired ones and watches the other nodes' records (watch),
// until ctx ends; it stores what is pending last, marked goodbye.
func (f *cidFeed) run(ctx context.Context) {
	var cc jetstream.ConsumeContext
	for {
		var err error
		if cc, err = f.load(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		f.svc.log.Warn("load the send index; retrying (sends wait)", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	f.lastReread = f.svc.cfg.Now() // load read the log
	close(f.ready)
	defer cc.Stop()
	defer f.rereads.Wait()
	failing := false
	flush := func(ctx context.Context, goodbye bool) {
		// A store whose answer is lost must not hold the flushes up: the
		// next one stores the keys again (the index takes a key twice).
		wait := min(f.svc.cfg.PublishTimeout, max(2*f.svc.cfg.CidFlush, time.Second))
		if goodbye {
			wait = f.svc.cfg.PublishTimeout
		}
		fctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		err := f.flush(fctx, goodbye)
		switch {
		case err != nil && !failing && (goodbye || ctx.Err() == nil):
			f.svc.log.Warn("store the send index (retrying every flush)", "err", err)
		case err == nil && failing:
			f.svc.log.Info("the send index is stored again")
		}
		failing = err != nil
	}
	flush(ctx, false) // the other nodes know of this one from now on
	tick := time.NewTicker(f.svc.cfg.CidFlush)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			flush(context.Background(), true)
			return
		case <-tick.C:
			flush(ctx, false)
			f.idx.Expire(f.svc.cfg.Now())
			f.svc.m.SendIndexEntries.Set(float64(f.idx.Len()))
			f.svc.m.SendIndexBytes.Set(float64(f.idx.Bytes()))
			f.watch(ctx)
		}
	}
}

// watch reads the message log's last sends again when a node's records
// have stopped without a goodbye for longer than the silence, at most once
// a silence, while they stay stopped (for forget): the first read from the
// last store window (and clockMargin), or from where the start's read
// ended, each next one on from where the last ended. A node's records
// carry the server's time, so a node whose own reading of StreamCids lags
// sees the others fall silent, and reads the log too.
func (f *cidFeed) watch(ctx context.Context) {
	if f.unsure.Load() != 0 {
		if f.rereading.CompareAndSwap(false, true) {
			f.readUnsure(ctx)
		}
		return
	}
	now := f.svc.cfg.Now()
	silent := ""
	f.peersMu.Lock()
	for subject, last := range f.peers {
		switch age := now.Sub(last); {
		case age > f.forget:
			delete(f.peers, subject)
		case age > f.silence && silent == "":
			silent = subject
		}
	}
	f.peersMu.Unlock()
	if silent == "" {
		if !f.rereading.Load() {
			f.rereadSeq.Store(0)
		}
		return
	}
	if now.Sub(f.lastReread) < f.silence || !f.rereading.CompareAndSwap(false, true) {
		return
	}
	f.lastReread = now
	after := f.rereadSeq.Load()
	f.background(ctx, func() error {
		last, err := f.loadLog(ctx, after, "the send index records of "+silent+" stopped without a goodbye")
		if last > after {
			f.rereadSeq.Store(last)
		}
		return err
	})
}

// background runs read, a read of the log into the index, in a goroutine
// run waits for; rereading is set, and is cleared when read returns.
func (f *cidFeed) background(ctx context.Context, read func() error) {
	f.svc.m.SendIndexRereads.Inc()
	f.rereads.Add(1)
	go func() {
		defer f.rereads.Done()
		defer f.rereading.Store(false)
		if err := read(); err != nil && ctx.Err() == nil {
			f.svc.log.Warn("read the message log's last sends into the send index", "err", err)
		}
	}()
}

// readUnsure reads the log's sends from before the earliest failed store's
// start on, in the background, once the log has handled what the
// connection sent before (natsx.Barrier); it shares the keys the index
// lacked with the other nodes, and lets sends go on when no store failed
// meanwhile (a store that failed after the read began may lie past what it
// read). rereading is set; it clears it.
func (f *cidFeed) readUnsure(ctx context.Context) {
	f.unsureMu.Lock()
	since, gen := f.unsure.Load(), f.unsureGen
	f.unsureMu.Unlock()
	f.background(ctx, func() error {
		// Once the message log has refused a barrier sent after the
		// failure, what the connection had sent it before is stored or
		// refused (or was dropped with a connection that closed), not on
		// its way or in the log's queue.
		if err := natsx.Barrier(f.svc.nc, natsx.BarrierSubject, f.svc.cfg.PublishTimeout); err != nil {
			return err // sends wait; the next flush tick reads again
		}
		// A send of this node that was stored, its answers lost, is in
		// no other node's index: its key goes to them with the next flush.
		from := time.Unix(0, since).Add(-clockMargin)
		if _, err := f.loadLogFrom(ctx, from, "a message store failed", true); err != nil {
			return err
		}
		f.unsureMu.Lock()
		if f.unsureGen == gen {
			f.unsure.Store(0)
		}
		f.unsureMu.Unlock()
		return nil
	})
}

// put adds a StreamCids record's keys to the index and notes its node.
func (f *cidFeed) put(m jetstream.Msg) {
	now := f.svc.cfg.Now()
	if err := decodeCidEntries(m.Data(), func(k cidindex.Key, e cidindex.Entry) { f.idx.Put(k, e, now) }); err != nil {
		f.svc.log.Warn("send index record", "subject", m.Subject(), "err", err)
	}
	subject := m.Subject()
	if m.Headers().Get(hdrGoodbye) != "" {
		f.peersMu.Lock()
		delete(f.peers, subject)
		f.peersMu.Unlock()
		return
	}
	md, err := m.Metadata()
	if err != nil {
		return
	}
	f.peersMu.Lock()
	if md.Timestamp.After(f.peers[subject]) {
		f.peers[subject] = md.Timestamp
	}
	f.peersMu.Unlock()
}

// flush stores the pending keys, in records of at most maxCidEntries, or
// an empty record when none are pending; the last record is marked
// goodbye when goodbye is set. Keys whose store fails stay pending.
func (f *cidFeed) flush(ctx context.Context, goodbye bool) error {
	f.mu.Lock()
	b := f.pending
	f.pending = nil
	if len(b) > 0 {
		f.inflight = f.oldest
	}
	f.mu.Unlock()
	for first := true; first || len(b) > 0; first = false {
		n := min(len(b), maxCidEntries*cidEntrySize)
		m := &nats.Msg{Subject: f.subject, Data: b[:n]}
		if goodbye && n == len(b) {
			m.Header = nats.Header{hdrGoodbye: []string{"1"}}
		}
		if _, err := f.svc.js.PublishMsg(ctx, m); err != nil {
			f.mu.Lock()
			if len(b) > 0 { // older than any key added since
				f.pending = append(b, f.pending...)
				f.oldest = f.inflight
			}
			f.inflight = time.Time{}
			f.markUnstoredLocked()
			f.mu.Unlock()
			return fmt.Errorf("store %d keys on %s: %w", len(b)/cidEntrySize, f.subject, err)
		}
		b = b[n:]
	}
	f.mu.Lock()
	f.inflight = time.Time{}
	f.markUnstoredLocked()
	f.mu.Unlock()
	return nil
}

// load reads every node's StreamCids records and the message log's
// records of the last store window (and clockMargin), then keeps reading
// StreamCids records as they come (the returned consume context).
func (f *cidFeed) load(ctx context.Context) (jetstream.ConsumeContext, error) {
	info, err := f.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("send index state: %w", err)
	}
	last, err := f.readAll(ctx, natsx.StreamCids, jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy},
		func(m jetstream.Msg, _ uint64) { f.put(m) })
	if err != nil {
		return nil, fmt.Errorf("read the send index: %w", err)
	}
	seq, err := f.loadLog(ctx, 0, "start")
	if err != nil {
		return nil, err
	}
	f.rereadSeq.Store(seq)
	// On from what was read, or from what was there (all of it expired).
	cons, err := f.svc.js.OrderedConsumer(ctx, natsx.StreamCids, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   max(last, info.State.LastSeq) + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("follow the send index: %w", err)
	}
	cc, err := cons.Consume(f.put)
	if err != nil {
		return nil, fmt.Errorf("follow the send index: %w", err)
	}
	return cc, nil
}

// loadLog reads the headers of the message log's records after sequence
// after, or, when after is 0, of the last store window (and clockMargin),
// and indexes the sends among them; it logs why, what it read and how long
// it took. It returns the last sequence read (0: none).
func (f *cidFeed) loadLog(ctx context.Context, after uint64, why string) (uint64, error) {
	if after == 0 {
		return f.loadLogFrom(ctx, f.svc.cfg.Now().Add(-f.store-clockMargin), why, false)
	}
	return f.readLog(ctx, jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1}, why, false)
}

// loadLogFrom is loadLog from the records stored at or after from; with
// share, the keys the index did not have go to the other nodes too.
func (f *cidFeed) loadLogFrom(ctx context.Context, from time.Time, why string, share bool) (uint64, error) {
	return f.readLog(ctx, jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from}, why, share)
}

// readLog reads the headers of the message log's records from where cfg
// starts and indexes the sends among them (sharing new keys with share).
func (f *cidFeed) readLog(ctx context.Context, cfg jetstream.ConsumerConfig, why string, share bool) (uint64, error) {
	start, n, sends := time.Now(), 0, 0
	cfg.HeadersOnly = true
	last, err := f.readAll(ctx, natsx.StreamMsgs, cfg, func(m jetstream.Msg, seq uint64) {
		n++
		if k, e, ok := sendKey(m.Headers(), seq); ok {
			sends++
			f.add(k, e, share)
		}
	})
	if err != nil {
		return last, fmt.Errorf("read the message log's last sends: %w", err)
	}
	f.svc.log.Info("read the message log's last sends into the send index", "why", why, "from_seq", cfg.OptStartSeq,
		"records", n, "sends", sends, "took", time.Since(start).Round(time.Millisecond))
	return last, nil
}

// readAll reads what stream holds now from where cfg starts, through a
// consumer of its own (no acks, in memory) removed afterwards, calling fn
// for each message with its stream sequence; it returns the last sequence
// read (0: none).
func (f *cidFeed) readAll(ctx context.Context, stream string, cfg jetstream.ConsumerConfig, fn func(jetstream.Msg, uint64)) (uint64, error) {
	cfg.AckPolicy = jetstream.AckNonePolicy
	cfg.MemoryStorage = true
	cfg.Replicas = 1
	cfg.InactiveThreshold = time.Minute
	cons, err := f.svc.js.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		return 0, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := f.svc.js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			f.svc.log.Warn("remove the send index's reader", "stream", stream, "err", err)
		}
	}()
	var last uint64
	for pending := cons.CachedInfo().NumPending; pending > 0; {
		batch, err := cons.Fetch(1024, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return last, err
		}
		n := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return last, err
			}
			n++
			last, pending = md.Sequence.Stream, md.NumPending
			fn(m, last)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return last, err
		}
		if n == 0 {
			return last, errors.New("the stream stopped answering before its end")
		}
		if err := ctx.Err(); err != nil {
			return last, err
		}
	}
	return last, nil
}

// sendKey reads the index entry of a stored message from its headers:
// messages carry Nats-Msg-Id m:<sender>:<cid>.
func sendKey(h nats.Header, seq uint64) (cidindex.Key, cidindex.Entry, bool) {
	rest, ok := strings.CutPrefix(h.Get(hdrMsgID), dedupMessage)
	if !ok {
		return cidindex.Key{}, cidindex.Entry{}, false
	}
	from, cid, ok := strings.Cut(rest, ":")
	if !ok || from == "" || cid == "" {
		return cidindex.Key{}, cidindex.Entry{}, false
	}
	ts, err := strconv.ParseInt(h.Get(HdrTS), 10, 64)
	if err != nil {
		return cidindex.Key{}, cidindex.Entry{}, false
	}
	e := cidindex.Entry{Seq: seq, IDSeq: seq, TS: ts}
	if id := h.Get(HdrID); id != "" {
		p, ok := parseID(id)
		if !ok || p.receipt {
			return cidindex.Key{}, cidindex.Entry{}, false
		}
		e.IDSeq = p.seq
	}
	return cidindex.KeyOf(from, cid), e, true
}
