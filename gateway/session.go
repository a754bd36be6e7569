package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/wire"
)

// WebSocket close codes used by the gateway (docs/protocol.md).
const (
	CloseGoingAway   = websocket.CloseGoingAway       // 1001: node shutting down
	ClosePolicy      = websocket.ClosePolicyViolation // 1008: flood past the rate limit
	CloseTooBig      = websocket.CloseMessageTooBig   // 1009: frame over 128 KiB
	CloseTryAgain    = websocket.CloseTryAgainLater   // 1013: send queue overflow (slow client)
	CloseReplaced    = 4001                           // the same device connected again
	CloseUnavailable = 4003                           // the node cannot serve the session now
	CloseMoved       = 4002                           // the user is now owned by another gateway: ask /v1/route again
)

// maxRejects is how many sends in a row may be refused for the rate limit
// before the session is closed with ClosePolicy.
const maxRejects = 100

// maxInbound is how many client frames may wait for the session's worker;
// past it the reader stops reading (TCP pushes back on the client).
const maxInbound = 64

// closeGrace is how long a session waits for the client to answer a close
// frame before dropping the TCP connection. Closing at once would reset the
// connection and could destroy the close frame before the client reads it.
const closeGrace = 2 * time.Second

// pingFrame is the queue marker for a ping control frame.
var pingFrame = []byte{}

var readBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// session is one WebSocket connection.
//
// Goroutines: one reader at a time reads frames, and waits for the
// client's next bytes in the smallest stack there is (see read); a worker
// runs the frames (sends, acks...) and a writer writes the queue, each only
// while it has work, on goroutines of the gateway's runner (shared by all
// sessions). An idle session has no goroutine where the gateway has a
// poller (Linux: see park), and one 2 KiB stack elsewhere.
type session struct {
	srv    *Server
	conn   *websocket.Conn
	cork   *corkConn // the connection under conn, and the buffer conn reads frames from
	user   string
	device string
	batch  bool          // receipts in batches (?receipts=batch)
	lim    *rate.Limiter // the user's send limiter, taken at the first send (frame worker only)
	dev    chat.Device
	done   chan struct{} // closed when the session has ended
	work   sync.WaitGroup

	mu        sync.Mutex
	queue     [][]byte // frames to write
	qbytes    int
	writing   bool
	closing   bool // no more frames are queued
	closeCode int
	closeText string
	room      chan struct{} // made by a waiter, closed when the queue drains
	dead      bool          // the connection failed or was closed
	wdl       int64         // the write deadline in force (Unix ns); only the writer touches it
	held      bool          // nothing is written until the device is attached
	inq       []*bytes.Buffer
	working   bool
	inRoom    chan struct{} // made by the waiting reader, closed when the worker takes a frame
	rejects   int
	typingAt  time.Time // start of the current typing second (worker only)
	typingN   int

	// Parking (poller_linux.go): an idle session's reader ends, and the
	// gateway's poller starts a new one when bytes come.
	parkMu sync.Mutex
	parked atomic.Bool  // no reader runs; wake starts one
	armed  bool         // the connection is in the poller's set (under parkMu)
	pollID uint32       // the session's id in the poller (under the poller's lock)
	rdl    atomic.Int64 // the read deadline in force, Unix ns
	nudged bool         // a nudge cut the read deadline short (under parkMu)

	lastRead atomic.Int64 // when the reader last began a data frame, Unix ns (0: none yet, a new session parks at once)
}

// handleWS upgrades the request and attaches the device. It runs in the
// HTTP server's goroutine, which ends once the session is set up.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	if s.isDraining() {
		s.writeCode(w, wire.CodeUnavailable, "this gateway is shutting down; reconnect")
		return
	}
	batch := false
	switch v := r.URL.Query().Get("receipts"); v {
	case "", wire.ReceiptsSingle:
	case wire.ReceiptsBatch:
		batch = true
	default:
		s.writeCode(w, wire.CodeBadRequest, fmt.Sprintf("receipts must be %q or %q, not %q", wire.ReceiptsSingle, wire.ReceiptsBatch, wire.Clip(v)))
		return
	}
	cw := &corkWriter{ResponseWriter: w, readSize: s.cfg.ReadBufferSize}
	conn, err := s.upgrader.Upgrade(cw, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	ss := &session{
		srv:    s,
		conn:   conn,
		cork:   cw.conn,
		user:   c.User,
		device: c.Device,
		batch:  batch,
		done:   make(chan struct{}),
		held:   true,
	}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(CloseGoingAway, "shutting down"), time.Now().Add(time.Second))
		conn.Close()
		return
	}
	s.sessions[ss] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.m.Connections.Inc()

	conn.SetReadLimit(wire.MaxFrame)
	ss.extendRead()
	conn.SetPongHandler(func(string) error { ss.extendRead(); return nil })
	// Answer a client's close frame only after its frames are run and the
	// device's position is stored (readFailed), so a client that reconnects
	// at once, even to another gateway, resumes exactly after what it acked.
	conn.SetCloseHandler(func(int, string) error { return nil })
	// hello is queued first and written once the device is attached: a
	// client that has its hello is connected, and its sends see all its
	// devices.
	ss.deliverHello()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
	dev, err := s.delivery.Connect(ctx, ss.user, ss.device, ss)
	cancel()
	ss.dev = dev
	ss.mu.Lock()
	ss.held = false
	if err == nil {
		ss.startWriterLocked()
	} else {
		ss.queue, ss.qbytes = nil, 0
	}
	ss.mu.Unlock()
	if err != nil {
		s.log.Warn("cannot attach device", "user_id", ss.user, "device", ss.device, "err", err)
		ss.Close(err)
	} else if s.presence != nil {
		pctx, pcancel := context.WithTimeout(s.ctx, s.cfg.RequestTimeout)
		if err := s.presence.Connected(pctx, ss.user, ss.device); err != nil {
			s.log.Warn("presence", "user_id", ss.user, "err", err)
		}
		pcancel()
	}
	go ss.read(false)
}

// read is the session's reader; the reader that finds the connection
// ended ends the session.
//
// It waits for the client's next bytes in its read buffer (a Peek, a few
// frames deep), answers the pings and pongs it finds there itself, and
// calls gorilla's NextReader only for a data frame: NextReader waits for
// the frame after a pong deep in its own stack, which then stays at
// 4 KiB, twice the smallest, for as long as the session is idle. A stack
// that has grown for data frames never shrinks back either, so the first
// pong after data frames (the gateway pings every PingInterval) hands the
// reading over to a fresh goroutine, which starts small: an idle session
// sheds it within one ping, and a busy one starts no goroutine per frame.
//
// Where the gateway has a poller (Linux), a session that has read no data
// frame for IdlePark (Config) is parked instead, and its reader ends: an idle session has
// no goroutine. The gateway's idle sweep cuts the reader's wait short to
// that end (nudge). A busy session keeps its reader, which Go's own poller
// wakes faster than a parked session is woken. woken says the reader was
// started for bytes, which it reads before it parks again.
func (ss *session) read(woken bool) {
	defer ss.srv.wg.Done()
	if woken {
		ss.parkMu.Lock() // after the reader that parked the session has left park
		ss.takeBufferLocked()
		ss.parkMu.Unlock()
	}
	grown := false
	for {
		if !woken && ss.srv.poller != nil && ss.idleFor() >= ss.srv.cfg.IdlePark && ss.park() {
			return
		}
		woken = false
		if _, err := ss.cork.br.Peek(1); err != nil && ss.unnudge() {
			continue // the sweep's deadline, not the client's: park
		} // any other error comes again from NextReader
		if ss.controlFrame() {
			if grown {
				ss.srv.wg.Add(1)
				go ss.read(false)
				return
			}
			continue
		}
		if !ss.readFrame() {
			ss.end()
			return
		}
		grown = true
	}
}

// idleFor is how long the session has read no data frame.
func (ss *session) idleFor() time.Duration {
	return time.Duration(time.Now().UnixNano() - ss.lastRead.Load())
}

// nudge makes an idle session's reader, waiting for bytes, stop waiting,
// so that it parks the session (the gateway's idle sweep). It leaves alone
// a reader that is reading a frame.
func (ss *session) nudge() {
	if ss.srv.poller == nil || !ss.parkMu.TryLock() {
		return
	}
	defer ss.parkMu.Unlock()
	if ss.parked.Load() || ss.isClosing() {
		return
	}
	ss.conn.SetReadDeadline(time.Now())
	ss.nudged = true
}

// unnudge restores the read deadline a nudge cut short, and reports
// whether there was one.
func (ss *session) unnudge() bool {
	ss.parkMu.Lock()
	defer ss.parkMu.Unlock()
	return ss.unnudgeLocked()
}

func (ss *session) unnudgeLocked() bool {
	if !ss.nudged {
		return false
	}
	ss.nudged = false
	ss.conn.SetReadDeadline(time.Unix(0, ss.rdl.Load()))
	return true
}

// park hands the wait for the client's next bytes to the gateway's poller,
// and reports whether it did: the reader then ends. A session that is
// closing or draining keeps its reader, which waits for the close or the
// read deadline.
func (ss *session) park() bool {
	p := ss.srv.poller
	if p == nil || ss.cork.br.Buffered() > 0 || ss.isClosing() || ss.srv.isDraining() {
		return false
	}
	ss.parkMu.Lock()
	defer ss.parkMu.Unlock()
	// A parked session keeps no read buffer: the reader woken for it
	// takes a new one (takeBuffer). It is empty here (checked above, and
	// only the reader reads), and free before anything can wake the
	// session.
	*ss.cork.br = bufio.Reader{}
	ss.parked.Store(true)
	if !p.park(ss) {
		// Not parked; unless woken meanwhile (a new reader runs, and
		// takes a buffer), read on.
		if ss.parked.CompareAndSwap(true, false) {
			ss.takeBufferLocked()
			return false
		}
		return true
	}
	// What needs a reader (Close, drain, a dead connection, the deadline)
	// may have come after the checks above and found no parked session
	// to wake.
	if ss.isClosing() || ss.srv.isDraining() || ss.deadlinePassed() {
		ss.wake()
	}
	return true
}

// takeBufferLocked gives the session a read buffer if it has none (it was
// parked). Under parkMu.
func (ss *session) takeBufferLocked() {
	if ss.cork.br.Size() == 0 {
		*ss.cork.br = *bufio.NewReaderSize(ss.cork, max(ss.srv.cfg.ReadBufferSize, minReadBuffer))
	}
}

// wake starts a reader for a parked session.
func (ss *session) wake() {
	if ss.parked.CompareAndSwap(true, false) {
		ss.srv.wg.Add(1)
		go ss.read(true)
	}
}

// setReadDeadline sets the connection's read deadline, noted for the ping
// loop, which wakes a parked session whose deadline has passed. A parked
// session is woken at once: a new deadline (Close's grace, drain's now) is
// for a reader to wait out.
func (ss *session) setReadDeadline(t time.Time) {
	ss.rdl.Store(t.UnixNano())
	ss.conn.SetReadDeadline(t)
	ss.wake()
}

func (ss *session) deadlinePassed() bool {
	d := ss.rdl.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// readFrame reads one data frame and queues it for the worker. It returns
// false when the connection has failed or closed.
func (ss *session) readFrame() bool {
	// While a frame is read, the idle sweep leaves the deadline alone.
	ss.parkMu.Lock()
	buf, ok := ss.readFrameLocked()
	ss.parkMu.Unlock()
	if buf != nil {
		ss.enqueue(buf)
	}
	return ok
}

// readFrameLocked reads one data frame, and returns it if it is to run.
func (ss *session) readFrameLocked() (*bytes.Buffer, bool) {
	s := ss.srv
	ss.unnudgeLocked()
	ss.lastRead.Store(time.Now().UnixNano()) // pongs alone leave a session idle
	mt, r, err := ss.conn.NextReader()
	if err != nil {
		ss.readFailed(err)
		return nil, false
	}
	// A frame that is not run is read to its end all the same: the reader
	// looks at the bytes after it for pings (controlFrame), which must not
	// find them inside its payload.
	if ss.isClosing() {
		// Closing: discard what the client still sends until it answers
		// the close frame or the grace ends.
		return nil, ss.skip(r)
	}
	ss.extendRead()
	if mt != websocket.TextMessage {
		s.m.FramesIn.WithLabelValues("invalid").Inc()
		ss.fail(wire.Errorf(wire.CodeBadRequest, "frames must be text frames holding one JSON object"))
		return nil, ss.skip(r)
	}
	buf := readBufs.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		readBufs.Put(buf)
		ss.readFailed(err)
		return nil, false
	}
	return buf, true
}

// skip reads a frame that is not run to its end. It returns false when
// the connection has failed or closed.
func (ss *session) skip(r io.Reader) bool {
	if _, err := io.Copy(io.Discard, r); err != nil {
		ss.readFailed(err)
		return false
	}
	return true
}

// controlFrame answers a ping, or takes a pong, that starts the read
// buffer, as gorilla would (RFC 6455: a final, masked frame of at most 125
// bytes), waiting for the rest of it in the buffer (at most 131 bytes).
// Anything else is left to gorilla, which also rejects what is malformed.
func (ss *session) controlFrame() bool {
	br := ss.cork.br
	h, err := br.Peek(2)
	if err != nil {
		return false
	}
	op := int(h[0] & 0x0f)
	n := int(h[1] & 0x7f)
	if h[0]&0xf0 != 0x80 || h[1]&0x80 == 0 || n > 125 || (op != websocket.PingMessage && op != websocket.PongMessage) {
		return false
	}
	f, err := br.Peek(2 + 4 + n)
	if err != nil {
		return false
	}
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = f[6+i] ^ f[2+i%4]
	}
	br.Discard(2 + 4 + n)
	if op == websocket.PongMessage {
		ss.extendRead()
	} else {
		// As gorilla's own ping handler: a failed pong shows as a failed
		// read or write soon enough.
		ss.conn.WriteControl(websocket.PongMessage, payload, time.Now().Add(ss.srv.cfg.WriteTimeout))
	}
	return true
}

// end runs when the connection has ended: the frames already read still
// run, then the device detaches and the session is forgotten.
func (ss *session) end() {
	s := ss.srv
	ss.work.Wait() // frames already read still run
	if ss.dev != nil {
		ss.dev.Close()
	}
	if s.presence != nil && ss.dev != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		if err := s.presence.Disconnected(ctx, ss.user, ss.device); err != nil {
			s.log.Warn("presence", "user_id", ss.user, "err", err)
		}
		s.presence.Forget(ss)
		cancel()
	}
	ss.finish()
	if p := ss.srv.poller; p != nil {
		p.forget(ss)
	}
	close(ss.done)
	if ss.lim != nil {
		s.releaseLimiter(ss.user)
	}
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
	s.m.Connections.Dec()
}

// enqueue hands a frame to the worker, starting it when idle. It blocks
// while maxInbound frames wait.
func (ss *session) enqueue(buf *bytes.Buffer) {
	ss.mu.Lock()
	for len(ss.inq) >= maxInbound {
		if ss.inRoom == nil {
			ss.inRoom = make(chan struct{})
		}
		room := ss.inRoom
		ss.mu.Unlock()
		<-room
		ss.mu.Lock()
	}
	ss.inq = append(ss.inq, buf)
	if !ss.working {
		ss.working = true
		ss.work.Add(1)
		ss.srv.runner.run(ss.runFrames)
	}
	ss.mu.Unlock()
}

// runFrames is the worker goroutine: it runs queued frames in order, then
// exits.
func (ss *session) runFrames() {
	defer ss.work.Done()
	for {
		ss.mu.Lock()
		if len(ss.inq) == 0 {
			ss.working = false
			ss.inq = nil
			ss.mu.Unlock()
			return
		}
		buf := ss.inq[0]
		ss.inq[0] = nil
		ss.inq = ss.inq[1:]
		if ss.inRoom != nil {
			close(ss.inRoom)
			ss.inRoom = nil
		}
		ss.mu.Unlock()
		ss.handle(buf.Bytes())
		if buf.Cap() <= 64<<10 {
			readBufs.Put(buf)
		}
	}
}

// extendRead pushes the read deadline out: a client that sends nothing and
// answers no ping for PingInterval+PongWait is gone.
func (ss *session) extendRead() {
	if ss.isClosing() {
		return // the close grace applies
	}
	ss.setReadDeadline(time.Now().Add(ss.srv.cfg.PingInterval + ss.srv.cfg.PongWait))
}

// ping queues a ping. The gateway's ticker pings every session, so an idle
// session needs no timer and no writer goroutine between pings.
func (ss *session) ping() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing || ss.held {
		return
	}
	ss.queue = append(ss.queue, pingFrame)
	ss.startWriterLocked()
}

func (ss *session) readFailed(err error) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case ss.isClosing():
		ss.markDead()
	case errors.Is(err, websocket.ErrReadLimit):
		// gorilla has already sent 1009.
		ss.srv.m.Errors.WithLabelValues(wire.CodeTooLarge).Inc()
		ss.markDead()
	case errors.As(err, &ce):
		// The client closed: run its last frames, store its position,
		// then answer.
		ss.work.Wait()
		if ss.dev != nil {
			ss.dev.Close()
		}
		ss.Close(nil)
	case errors.As(err, &ne) && ne.Timeout() && ss.srv.isDraining():
		ss.Close(chat.ErrShutdown)
	default:
		ss.markDead()
	}
}

// drain stops the reader after the frame it is reading (Shutdown).
func (ss *session) drain() {
	ss.setReadDeadline(time.Now())
}

func (ss *session) deliverHello() {
	h := wire.Hello{Type: wire.TypeHello, User: ss.user, Device: ss.device, Gateway: ss.srv.cfg.ID, TS: time.Now().UnixMilli()}
	if ss.batch {
		h.Receipts = wire.ReceiptsBatch
	}
	b, _ := jsonMarshal(h)
	ss.Deliver(b)
}

// ReceiptBatches reports whether the client asked for receipts in batches
// (?receipts=batch): the delivery service then hands it each stored batch
// of receipts as one receipts frame (chat.ReceiptBatcher).
func (ss *session) ReceiptBatches() bool { return ss.batch }

// Deliver queues a frame (chat.Sink). It returns false when the queue is full.
func (ss *session) Deliver(frame []byte) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		return true // the session is ending; the device redelivers later
	}
	if len(ss.queue) >= ss.srv.cfg.QueueFrames || ss.qbytes+len(frame) > ss.srv.cfg.QueueBytes {
		return false
	}
	ss.queue = append(ss.queue, frame)
	ss.qbytes += len(frame)
	ss.srv.m.FramesOut.Inc()
	ss.startWriterLocked()
	return true
}

// control queues a frame the session itself produced (answers, errors). A
// client that floods without reading is closed as too slow.
func (ss *session) control(frame []byte) {
	if !ss.Deliver(frame) {
		ss.srv.m.SlowClosed.Inc()
		ss.Close(chat.ErrSlowClient)
	}
}

// WaitRoom blocks until at most half of the queue is used (chat.Sink).
func (ss *session) WaitRoom(ctx context.Context) error {
	for {
		ss.mu.Lock()
		if ss.closing {
			ss.mu.Unlock()
			return chat.ErrClosed
		}
		if len(ss.queue) <= ss.srv.cfg.QueueFrames/2 && ss.qbytes <= ss.srv.cfg.QueueBytes/2 {
			ss.mu.Unlock()
			return nil
		}
		if ss.room == nil {
			ss.room = make(chan struct{})
		}
		room := ss.room
		ss.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-ss.done:
			return chat.ErrClosed
		}
	}
}

// Close ends the session (chat.Sink): frames already queued are written
// first, except for a slow client, then a close frame. reason nil means the
// client closed.
func (ss *session) Close(reason error) {
	code, text, flush := websocket.CloseNormalClosure, "", true
	switch {
	case reason == nil:
	case errors.Is(reason, chat.ErrShutdown):
		code, text = CloseGoingAway, "node shutting down; reconnect"
	case errors.Is(reason, chat.ErrReplaced):
		code, text = CloseReplaced, "the same device connected again"
	case errors.Is(reason, chat.ErrSlowClient):
		code, text, flush = CloseTryAgain, "too slow to keep up; reconnect to catch up", false
	case errors.Is(reason, errRateFlood):
		code, text = ClosePolicy, "send rate limit exceeded"
	case errors.Is(reason, errMoved):
		code, text = CloseMoved, "moved: another gateway owns this user now; ask GET /v1/route and reconnect there"
	default:
		code, text = CloseUnavailable, "the node cannot serve this session now; reconnect"
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		return
	}
	ss.closing, ss.closeCode, ss.closeText = true, code, text
	if !flush {
		ss.queue, ss.qbytes = nil, 0
	}
	ss.signalRoomLocked()
	if ss.dead {
		return
	}
	ss.setReadDeadline(time.Now().Add(closeGrace))
	ss.startWriterLocked()
}

// signalRoomLocked wakes the goroutines waiting for room in the queue.
func (ss *session) signalRoomLocked() {
	if ss.room != nil {
		close(ss.room)
		ss.room = nil
	}
}

func (ss *session) isClosing() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.closing || ss.dead
}

func (ss *session) markDead() {
	ss.mu.Lock()
	ss.dead = true
	ss.closing = true
	ss.queue, ss.qbytes = nil, 0
	ss.mu.Unlock()
	ss.conn.Close()
	ss.wake() // a parked session's reader finds the connection closed, and ends it
}

// finish waits (briefly) for the writer to send what is queued and the close
// frame, then closes the connection.
func (ss *session) finish() {
	ss.Close(nil)
	deadline := time.Now().Add(ss.srv.cfg.WriteTimeout)
	for time.Now().Before(deadline) {
		ss.mu.Lock()
		busy := ss.writing
		ss.mu.Unlock()
		if !busy {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	ss.markDead()
}

func (ss *session) startWriterLocked() {
	if ss.writing || ss.dead || ss.held {
		return
	}
	ss.writing = true
	ss.srv.wg.Add(1)
	ss.srv.runner.run(ss.write)
}

// write is the writer goroutine: it drains the queue, then exits.
//
// When another session's writer is running too, the node is busy, and more
// frames for this session are likely on their way: in a conversation the
// answer to a send, the peer's message and receipts arrive within
// moments of each other, from different goroutines. The writer then yields
// once before it takes the queue, so that those goroutines run first and
// their frames leave in the same write. One write of several frames costs
// the node (and the client's reads) far less than a write each; a node
// with one writer at a time never waits.
func (ss *session) write() {
	defer ss.srv.wg.Done()
	if ss.srv.writers.Add(1) > 1 {
		runtime.Gosched()
	}
	defer ss.srv.writers.Add(-1)
	for {
		ss.mu.Lock()
		if ss.dead {
			ss.writing = false
			ss.mu.Unlock()
			return
		}
		batch := ss.queue
		ss.queue, ss.qbytes = nil, 0
		if len(batch) > 0 {
			ss.signalRoomLocked()
		}
		sendClose := len(batch) == 0 && ss.closing && ss.closeCode != 0
		code, text := ss.closeCode, ss.closeText
		if sendClose {
			ss.closeCode = 0 // once
		}
		if len(batch) == 0 && !sendClose {
			ss.writing = false
			ss.mu.Unlock()
			return
		}
		ss.mu.Unlock()

		now := time.Now()
		if sendClose {
			deadline := now.Add(ss.srv.cfg.WriteTimeout)
			// The reader ends the connection when the client answers, or
			// after closeGrace.
			ss.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), deadline)
			ss.mu.Lock()
			ss.writing = false
			ss.mu.Unlock()
			return
		}
		// Each batch gets at least half of WriteTimeout: the deadline is
		// renewed only once half of it has passed, which spares a busy
		// session a timer update per batch.
		if ss.wdl-now.UnixNano() < int64(ss.srv.cfg.WriteTimeout/2) {
			ss.wdl = now.Add(ss.srv.cfg.WriteTimeout).UnixNano()
			ss.conn.SetWriteDeadline(time.Unix(0, ss.wdl))
		}
		deadline := time.Unix(0, ss.wdl)
		if len(batch) > 1 {
			ss.cork.Cork()
		}
		ss.srv.m.SessionWrites.Inc()
		var err error
		for _, f := range batch {
			if len(f) == 0 {
				err = ss.conn.WriteControl(websocket.PingMessage, nil, deadline)
			} else {
				err = ss.conn.WriteMessage(websocket.TextMessage, f)
			}
			if err != nil {
				break
			}
		}
		if len(batch) > 1 {
			if ferr := ss.cork.Flush(); err == nil {
				err = ferr
			}
		}
		if err != nil {
			ss.mu.Lock()
			ss.writing = false
			ss.mu.Unlock()
			ss.markDead()
			return
		}
	}
}
