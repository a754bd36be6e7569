package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
)

// heldConn collects the client's writes while held, so that several frames
// reach the server in one TCP segment.
type heldConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  bytes.Buffer
}

func (c *heldConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		return c.buf.Write(p)
	}
	return c.Conn.Write(p)
}

func (c *heldConn) setHold(hold bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = hold
	if hold || c.buf.Len() == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf.Bytes())
	c.buf.Reset()
	return err
}

// zeroMasked builds a client frame by hand: first byte b0 (FIN, opcode),
// a payload under 126 bytes, masked with a zero key (so sent as it is).
func zeroMasked(b0 byte, payload []byte) []byte {
	return append([]byte{b0, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

// dialRaw opens a session with a plain gorilla client over a heldConn.
func dialRaw(t *testing.T, n *testnode.Node, user string) (*websocket.Conn, *heldConn) {
	t.Helper()
	var held *heldConn
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		held = &heldConn{Conn: c}
		return held, nil
	}}
	ws, _, err := d.Dial(n.WS, http.Header{"Authorization": {"Bearer " + testnode.Token(t, user, "phone")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, hello, err := ws.ReadMessage(); err != nil || !strings.Contains(string(hello), `"hello"`) {
		t.Fatalf("hello = %s, %v", hello, err)
	}
	return ws, held
}

// TestFramesInOneSegmentAllRun: the session waits for bytes in its read
// buffer; frames that arrive together, data and control, must all be read
// from it, none left waiting for more bytes from the client.
func TestFramesInOneSegmentAllRun(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	ws, held := dialRaw(t, n, "alice")
	pongs := make(chan string, 4)
	ws.SetPongHandler(func(data string) error { pongs <- data; return nil })

	held.setHold(true)
	deadline := time.Now().Add(time.Second)
	steps := []func() error{
		func() error { return ws.WriteMessage(websocket.TextMessage, []byte(`not json 1`)) },
		func() error { return ws.WriteControl(websocket.PingMessage, []byte("p1"), deadline) },
		func() error { return ws.WriteControl(websocket.PongMessage, []byte("unasked"), deadline) },
		func() error { return ws.WriteMessage(websocket.TextMessage, []byte(`not json 2`)) },
		func() error { return ws.WriteControl(websocket.PingMessage, []byte("p2"), deadline) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := held.setHold(false); err != nil {
		t.Fatal(err)
	}
	// Two error frames, and the pongs, which the client's reader handles
	// while it waits for them.
	for i := 0; i < 2; i++ {
		_, f, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i+1, err)
		}
		if !strings.Contains(string(f), `"bad_request"`) {
			t.Fatalf("frame %d = %s, want a bad_request error", i+1, f)
		}
	}
	for _, want := range []string{"p1", "p2"} {
		select {
		case got := <-pongs:
			if got != want {
				t.Errorf("pong %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no pong for ping %q", want)
		}
	}
}

// TestMalformedControlFrameClosesTheSession: a control frame the session
// does not answer itself (here a ping that is not final) goes to gorilla,
// which refuses it with a protocol error.
func TestMalformedControlFrameClosesTheSession(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	ws, held := dialRaw(t, n, "alice")
	// A ping without FIN, masked with a zero key, payload "x".
	if _, err := held.Conn.Write(zeroMasked(0x09, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseProtocolError) {
		t.Fatalf("read after a fragmented ping: %v, want close 1002", err)
	}
}

// TestIdleSessionHasNoReader: a session that has read frames and then a
// pong, and waits for the next ones, has no reader goroutine where the
// gateway has a poller (Linux): it is parked. Elsewhere it waits in a
// fresh goroutine started by the reader before it (its stack starts small
// again), and not inside gorilla's NextReader, whose deeper stack would
// stay at 4 KiB for as long as the session is idle. Not parallel: it reads
// every goroutine's stack.
func TestIdleSessionHasNoReader(t *testing.T) {
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{Gateway: gateway.Config{PingInterval: 200 * time.Millisecond}})
	ws, _ := dialRaw(t, n, "alice")
	pinged := make(chan struct{}, 16)
	ws.SetPingHandler(func(data string) error {
		pinged <- struct{}{}
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	// The error frame, then two of the gateway's pings, each answered.
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, f, err := ws.ReadMessage(); err != nil || !strings.Contains(string(f), `"bad_request"`) {
		t.Fatalf("frame = %s, %v; want a bad_request error", f, err)
	}
	frames := make(chan string, 16)
	go func() {
		ws.SetReadDeadline(time.Time{})
		for {
			_, f, err := ws.ReadMessage()
			if err != nil {
				close(frames)
				return
			}
			frames <- string(f)
		}
	}()
	for i := 0; i < 2; i++ {
		select {
		case <-pinged:
		case <-time.After(5 * time.Second):
			t.Fatal("no ping from the gateway")
		}
	}
	wantReaders, wantFresh := 0, 0
	if runtime.GOOS != "linux" {
		wantReaders, wantFresh = 1, 1
	}
	var readers, inGorilla, fresh int
	deadline := time.Now().Add(10 * time.Second) // parked within two idle sweeps
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		readers, inGorilla, fresh = 0, 0, 0
		for _, g := range strings.Split(string(buf), "\n\n") {
			if !strings.Contains(g, "gateway.(*session).read(") {
				continue
			}
			readers++
			if strings.Contains(g, "websocket.(*Conn).NextReader") {
				inGorilla++
			}
			if strings.Contains(g, "created by github.com/jetchat/jetchat/gateway.(*session).read") {
				fresh++
			}
		}
		if readers == wantReaders && inGorilla == 0 && fresh == wantFresh || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if readers != wantReaders || inGorilla != 0 || fresh != wantFresh {
		t.Errorf("idle session: %d reader goroutines, %d of them waiting in gorilla's NextReader, %d started by the reader before it; want %d, 0 and %d", readers, inGorilla, fresh, wantReaders, wantFresh)
	}
	// Parked, it still answers: a frame wakes it.
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`still not json`)); err != nil {
		t.Fatal(err)
	}
	select {
	case f, ok := <-frames:
		if !ok || !strings.Contains(f, `"bad_request"`) {
			t.Fatalf("after the idle spell: %q (open %v), want a bad_request error", f, ok)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a frame sent to the idle session got no answer")
	}
}

// TestParkedSessionCloses: an idle session closed by the node (here
// replaced by the same device connecting again) whose client never
// answers the close frame is dropped after the close grace, although no
// reader waited for its bytes when it was closed.
func TestParkedSessionCloses(t *testing.T) {
	t.Parallel()
	// The idle sweep, which also wakes a parked session whose deadline
	// has passed, runs only every minute here: the close must wake it.
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{Gateway: gateway.Config{IdlePark: time.Minute}})
	_, held := dialRaw(t, n, "bob")
	time.Sleep(100 * time.Millisecond) // new, so parked at once
	_ = n.Dial(t, "bob", "phone")
	// Read the raw bytes (the close frame) without answering, until the
	// node drops the connection.
	held.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 256)
	for {
		k, err := held.Conn.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the replaced session's connection stayed open (read %q)", got)
			}
			break
		}
	}
	if !bytes.Contains(got, []byte{0x88}) || !bytes.Contains(got, []byte("the same device connected again")) {
		t.Errorf("read %q before the connection ended, want the 4001 close frame", got)
	}
}

// TestPongsKeepASessionAlive: the session takes pongs itself; a client that
// answers the gateway's pings stays connected, and one that answers none is
// dropped after PingInterval+PongWait (docs/protocol.md).
func TestPongsKeepASessionAlive(t *testing.T) {
	t.Parallel()
	cfg := gateway.Config{PingInterval: 200 * time.Millisecond, PongWait: 300 * time.Millisecond}
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{Gateway: cfg})
	answers, _ := dialRaw(t, n, "alice")
	silent, _ := dialRaw(t, n, "bob")
	errs := make(chan error, 1)
	go func() {
		// gorilla's client answers each ping while it reads.
		answers.SetReadDeadline(time.Time{})
		for {
			_, f, err := answers.ReadMessage()
			if err != nil {
				errs <- err
				return
			}
			if strings.Contains(string(f), `"bad_request"`) {
				errs <- nil
				return
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond) // three times PingInterval+PongWait
	if err := answers.WriteMessage(websocket.TextMessage, []byte(`still here?`)); err != nil {
		t.Fatalf("the answering client's session: %v", err)
	}
	select {
	case err := <-errs:
		if err != nil {
			t.Fatalf("the answering client's session ended: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to the answering client's frame")
	}
	// The silent client read nothing, so answered no ping: its
	// connection is gone (the pings queued before it are read first).
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := silent.ReadMessage()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the silent client's connection is still open")
		}
		break
	}
}

// TestUnreadFramesAreSkippedWhole: a data frame the session does not run
// (a binary frame, or any frame once the session is closing) is skipped to
// its end before the reader looks for the next frame; its payload, which
// may look like a ping, is never taken for frames.
func TestUnreadFramesAreSkippedWhole(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	ws, held := dialRaw(t, n, "alice")
	pongs := make(chan string, 4)
	ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
	// A binary frame, masked with a zero key, whose payload starts as an
	// empty masked ping would, then a text frame.
	payload := []byte{0x89, 0x80, 0, 0, 0, 0, 'j', 'u', 'n', 'k'}
	frame := append(zeroMasked(0x82, payload), zeroMasked(0x81, []byte(`not json`))...)
	if _, err := held.Conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"text frames", "not a JSON object"} {
		_, f, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i+1, err)
		}
		if !strings.Contains(string(f), `"bad_request"`) || !strings.Contains(string(f), want) {
			t.Fatalf("frame %d = %s, want a bad_request error about %q", i+1, f, want)
		}
	}
	select {
	case p := <-pongs:
		t.Fatalf("the gateway answered a ping (%q) found inside a binary frame", p)
	default:
	}
}
