package gateway

import (
	"bytes"
	"context"
	"errors"

	"net"
	"net/http"
	"sync"
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
)

// maxRejects is how many sends in a row may be refused for the rate limit
// before the session is closed with ClosePolicy.
const maxRejects = 100

// closeGrace is how long a session waits for the client to answer a close
// frame before dropping the TCP connection. Closing at once would reset the
// connection and could destroy the close frame before the client reads it.
const closeGrace = 2 * time.Second

// pingFrame is the queue marker for a ping control frame.
var pingFrame = []byte{}

var readBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// session is one WebSocket connection. One goroutine reads frames and runs
// them; a writer goroutine exists only while there is something to write.
type session struct {
	srv    *Server
	conn   *websocket.Conn
	user   string
	device string
	lim    *rate.Limiter
	dev    chat.Device

	ctx    context.Context // canceled when the session ends
	cancel context.CancelFunc

	mu        sync.Mutex
	queue     [][]byte
	qbytes    int
	writing   bool
	closing   bool // no more frames are queued
	closeCode int
	closeText string
	flushing  bool          // send queued frames before the close frame
	room      chan struct{} // closed and replaced when the queue drains
	dead      bool          // the connection failed or was closed
	held      bool          // nothing is written until the device is attached
	pingTimer *time.Timer
	rejects   int
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		s.writeCode(w, wire.CodeUnavailable, "this gateway is shutting down; reconnect")
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	ss := &session{
		srv:    s,
		conn:   conn,
		user:   c.User,
		device: c.Device,
		room:   make(chan struct{}),
		held:   true,
	}
	ss.ctx, ss.cancel = context.WithCancel(s.ctx)
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
	ss.lim = s.acquireLimiter(c.User)
	go ss.run()
}

// run is the session's reader goroutine: it owns the session's lifetime.
func (ss *session) run() {
	s := ss.srv
	defer s.wg.Done()
	defer func() {
		ss.cancel()
		if ss.dev != nil {
			ss.dev.Close()
		}
		ss.finish()
		s.releaseLimiter(ss.user)
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
		s.m.Connections.Dec()
	}()

	ss.conn.SetReadLimit(wire.MaxFrame)
	ss.extendRead()
	ss.conn.SetPongHandler(func(string) error { ss.extendRead(); return nil })
	// Answer a client's close frame only after the device's position is
	// stored (readFailed), so a client that reconnects at once, even to
	// another gateway, resumes exactly after what it acknowledged.
	ss.conn.SetCloseHandler(func(int, string) error { return nil })
	// hello is queued first, and written once the device is attached: a
	// client that has its hello is connected, and its sends see all its
	// devices.
	ss.deliverHello()
	ctx, cancel := context.WithTimeout(ss.ctx, s.cfg.RequestTimeout)
	dev, err := s.delivery.Connect(ctx, ss.user, ss.device, ss)
	cancel()
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
		return
	}
	ss.dev = dev

	ss.mu.Lock()
	ss.pingTimer = time.AfterFunc(s.cfg.PingInterval, ss.ping)
	ss.mu.Unlock()
	for {
		mt, r, err := ss.conn.NextReader()
		if err != nil {
			ss.readFailed(err)
			return
		}
		if ss.isClosing() {
			// Closing: discard what the client still sends until it
			// answers the close frame or the grace ends.
			continue
		}
		ss.extendRead()
		buf := readBufs.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(r)
		if err != nil {
			readBufs.Put(buf)
			ss.readFailed(err)
			return
		}
		if mt != websocket.TextMessage {
			s.m.FramesIn.WithLabelValues("invalid").Inc()
			ss.fail(wire.Errorf(wire.CodeBadRequest, "frames must be text frames holding one JSON object"))
		} else {
			ss.handle(buf.Bytes())
		}
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
	ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.PingInterval + ss.srv.cfg.PongWait))
}

// ping queues a ping and schedules the next one. Pings go through the queue,
// so an idle session holds no writer goroutine between them.
func (ss *session) ping() {
	ss.mu.Lock()
	if ss.closing {
		ss.mu.Unlock()
		return
	}
	ss.queue = append(ss.queue, pingFrame)
	ss.startWriterLocked()
	ss.pingTimer.Reset(ss.srv.cfg.PingInterval)
	ss.mu.Unlock()
}

func (ss *session) readFailed(err error) {
	var ce *websocket.CloseError
	switch {
	case ss.isClosing():
		ss.markDead()
	case errors.Is(err, websocket.ErrReadLimit):
		// gorilla has already sent 1009.
		ss.srv.m.Errors.WithLabelValues(wire.CodeTooLarge).Inc()
		ss.markDead()
	case errors.As(err, &ce):
		// The client closed: store its position, then answer.
		if ss.dev != nil {
			ss.dev.Close()
		}
		ss.Close(nil)
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ss.isDraining() {
			ss.Close(chat.ErrShutdown)
			return
		}
		ss.markDead()
	}
}

func (ss *session) isDraining() bool {
	ss.srv.mu.Lock()
	defer ss.srv.mu.Unlock()
	return ss.srv.draining
}

// drain stops the reader after the frame it is handling (Shutdown).
func (ss *session) drain() {
	ss.conn.SetReadDeadline(time.Now())
}

func (ss *session) deliverHello() {
	b, _ := jsonMarshal(wire.Hello{Type: wire.TypeHello, User: ss.user, Device: ss.device, Gateway: ss.srv.cfg.ID, TS: time.Now().UnixMilli()})
	ss.Deliver(b)
}

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
		room := ss.room
		ss.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-ss.ctx.Done():
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
	default:
		code, text = CloseUnavailable, "the node cannot serve this session now; reconnect"
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		return
	}
	ss.closing, ss.closeCode, ss.closeText, ss.flushing = true, code, text, flush
	if !flush {
		ss.queue, ss.qbytes = nil, 0
	}
	close(ss.room)
	ss.room = make(chan struct{})
	if ss.dead {
		return
	}
	ss.conn.SetReadDeadline(time.Now().Add(closeGrace))
	ss.startWriterLocked()
}

func (ss *session) isClosing() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.closing || ss.dead
}

func (ss *session) markDead() {
	ss.mu.Lock()
	if ss.pingTimer != nil {
		ss.pingTimer.Stop()
	}
	ss.dead = true
	ss.closing = true
	ss.queue, ss.qbytes = nil, 0
	ss.mu.Unlock()
	ss.conn.Close()
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
	go ss.write()
}

// write is the writer goroutine: it drains the queue, then exits.
func (ss *session) write() {
	defer ss.srv.wg.Done()
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
			close(ss.room)
			ss.room = make(chan struct{})
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

		deadline := time.Now().Add(ss.srv.cfg.WriteTimeout)
		if sendClose {
			// The reader ends the connection when the client answers, or
			// after closeGrace.
			ss.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), deadline)
			ss.mu.Lock()
			ss.writing = false
			ss.mu.Unlock()
			return
		}
		for _, f := range batch {
			var err error
			if len(f) == 0 {
				err = ss.conn.WriteControl(websocket.PingMessage, nil, deadline)
			} else {
				ss.conn.SetWriteDeadline(deadline)
				err = ss.conn.WriteMessage(websocket.TextMessage, f)
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
}

var errRateFlood = errors.New("rate limit flood")

// handle runs one client frame.
func (ss *session) handle(data []byte) {
	s := ss.srv
	in, err := wire.Decode(data)
	if err != nil {
		s.m.FramesIn.WithLabelValues("invalid").Inc()
		ss.fail(err)
		return
	}
	s.m.FramesIn.WithLabelValues(in.Type).Inc()
	switch in.Type {
	case wire.TypeSend:
		ss.send(in)
	case wire.TypeAck:
		ss.dev.Ack(in.IDs)
	case wire.TypeRead:
		ctx, cancel := context.WithTimeout(ss.ctx, s.cfg.RequestTimeout)
		err := ss.dev.Read(ctx, in.IDs)
		cancel()
		if err != nil {
			ss.fail(err)
		}
	default:
		ss.fail(wire.Errorf(wire.CodeBadRequest, "%s is not supported by this node yet", in.Type))
	}
}

func (ss *session) send(in *wire.Inbound) {
	s := ss.srv
	if !ss.lim.Allow() {
		ss.rejects++
		ss.fail(&wire.Error{Code: wire.CodeRateLimited, Message: "sending too fast; slow down", CID: in.CID})
		if ss.rejects >= maxRejects {
			ss.Close(errRateFlood)
		}
		return
	}
	ss.rejects = 0
	if in.Group != "" {
		ss.fail(&wire.Error{Code: wire.CodeNotFound, Message: "no such group", CID: in.CID})
		return
	}
	if in.Media != "" {
		ss.fail(&wire.Error{Code: wire.CodeNotFound, Message: "no such media", CID: in.CID})
		return
	}
	ctx, cancel := context.WithTimeout(ss.ctx, s.cfg.RequestTimeout)
	sent, err := ss.dev.Send(ctx, chat.SendRequest{CID: in.CID, To: in.To, Body: in.Body, Media: in.Media})
	cancel()
	if err != nil {
		code := codeOf(err)
		if code == wire.CodeInternal || code == wire.CodeUnavailable {
			s.log.Warn("send failed", "user_id", ss.user, "err", err)
		}
		ss.fail(&wire.Error{Code: code, Message: publicMessage(code, err), CID: in.CID})
		return
	}
	ss.control(wire.AppendSent(make([]byte, 0, 64+len(in.CID)), in.CID, sent.ID, sent.TS))
}

// fail answers a frame with an error frame; the connection stays open.
func (ss *session) fail(err error) {
	code := codeOf(err)
	cid := ""
	var werr *wire.Error
	if errors.As(err, &werr) {
		cid = werr.CID
	}
	ss.srv.m.Errors.WithLabelValues(code).Inc()
	ss.control(wire.AppendError(nil, code, publicMessage(code, err), cid))
}
