package client

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/jetchat/jetchat/internal/await"
)

// silentServer answers the upgrade with a hello frame and then neither
// reads nor closes until the test ends: the session stays open while the
// client's writes fail.
func silentServer(t *testing.T) string {
	t.Helper()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","user":"alice","device":"phone","gateway":"gw-1","ts":1}`))
		<-stop
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// A send whose frame cannot be written leaves nothing waiting for its
// answer, whichever way it was sent.
func TestFailedWriteLeavesNoWaiter(t *testing.T) {
	ctx := await.Context(t, await.Step)
	c, err := Dial(ctx, silentServer(t), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	// Shut the sending side: every write fails at once, while the reader
	// still waits for frames, so the session is not known to be closed.
	if err := c.ws.NetConn().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	sends := map[string]func() error{
		"SendAsync": func() error { _, _, err := c.SendAsync(SendRequest{To: "bob", Body: "hi"}); return err },
		"SendFunc":  func() error { return c.SendFunc(SendRequest{To: "bob", Body: "hi"}, func(Sent, error) {}) },
		"SendMsg":   func() error { _, err := c.SendMsg(ctx, SendRequest{To: "bob", Body: "hi"}); return err },
	}
	for name, send := range sends {
		err := send()
		if !errors.Is(err, ErrClosed) || err == ErrClosed {
			t.Fatalf("%s: error %v, want the failed write wrapped in ErrClosed", name, err)
		}
		c.mu.Lock()
		waiting := len(c.calls)
		c.mu.Unlock()
		if waiting != 0 {
			t.Fatalf("%s: %d sends still wait for an answer after their write failed", name, waiting)
		}
	}
}

// A body that cannot be encoded is an error naming the call, and no
// request is sent.
func TestDoBadBody(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	a := &API{BaseURL: srv.URL}
	err := a.Do(await.Context(t, await.Step), http.MethodPost, "/v1/groups", map[string]any{"members": make(chan int)}, nil)
	if err == nil || !strings.Contains(err.Error(), "POST /v1/groups: encode the body") {
		t.Fatalf("error %v, want one naming the call and the body", err)
	}
	var ue *json.UnsupportedTypeError
	if !errors.As(err, &ue) {
		t.Fatalf("error %v does not wrap the encoder's", err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}
