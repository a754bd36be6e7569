package gateway

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// corkConn is the connection gorilla/websocket writes to. While corked,
// writes collect in a pooled buffer and Flush sends them with one system
// call: the writer goroutine corks around a burst of frames, so a device
// receiving many frames at once (a catch-up, a receipt batch) costs one
// write instead of one per frame. Uncorked writes go straight through.
//
// Writes are serialised by mu, because gorilla may also write (a pong to a
// client's ping, a close frame) from the reader goroutine.
type corkConn struct {
	net.Conn
	mu    sync.Mutex
	cork  bool
	buf   *[]byte
	wdl   time.Time // the write deadline in force on Conn, when wdlOK
	wdlOK bool

	// br is the read buffer gorilla reads frames from: Hijack hands it to
	// the upgrader, so the session can wait for bytes, and look at them,
	// outside gorilla's reader. Every upgraded connection has one (the
	// upgrader refuses those Hijack gives none).
	br *bufio.Reader
}

var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxCork is how much a corked burst collects before it is flushed anyway.
const maxCork = 256 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.cork {
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= maxCork {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// SetWriteDeadline sets Conn's write deadline unless it is already in
// force: gorilla sets the deadline before every frame it writes, and the
// session renews its deadline only once half of it has passed (each
// setting costs a timer update in the runtime's poller).
func (c *corkConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wdlOK && t.Equal(c.wdl) {
		return nil
	}
	c.wdlOK = false
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	c.wdl, c.wdlOK = t, true
	return nil
}

// SetDeadline sets both deadlines (keeping SetWriteDeadline's record true).
func (c *corkConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wdlOK = false
	if err := c.Conn.SetDeadline(t); err != nil {
		return err
	}
	c.wdl, c.wdlOK = t, true
	return nil
}

// Cork starts collecting writes.
func (c *corkConn) Cork() {
	c.mu.Lock()
	c.cork = true
	if c.buf == nil {
		c.buf = corkBufs.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// Flush sends what was collected and uncorks.
func (c *corkConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	c.cork = false
	if c.buf != nil {
		if cap(*c.buf) <= 4*maxCork {
			*c.buf = (*c.buf)[:0]
			corkBufs.Put(c.buf)
		}
		c.buf = nil
	}
	return err
}

func (c *corkConn) flushLocked() error {
	if c.buf == nil || len(*c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

// minReadBuffer is the smallest read buffer a session gets: gorilla's
// upgrader (with its own ReadBufferSize 0) reads frames from the hijacked
// reader only when that holds more than 256 bytes.
const minReadBuffer = 512

// corkWriter makes gorilla's Upgrade hijack a corkConn, and read frames
// through a buffer the session can see.
type corkWriter struct {
	http.ResponseWriter
	conn     *corkConn
	readSize int
}

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := w.ResponseWriter.(http.Hijacker).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: nc}
	if brw.Reader.Buffered() > 0 {
		return w.conn, brw, nil // bytes before the handshake's end: the upgrader refuses them
	}
	w.conn.br = bufio.NewReaderSize(w.conn, max(w.readSize, minReadBuffer))
	return w.conn, bufio.NewReadWriter(w.conn.br, brw.Writer), nil
}
