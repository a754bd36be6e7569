// Package client is a Go client of the jetchat protocol (docs/protocol.md):
// a WebSocket connection that sends messages and waits for their sent
// answers, receives frames, acks and marks read; and an HTTP API client for
// history, message status and routing. The tests, the load tool and the
// example bots use it.
//
// Concurrency: all methods of Conn are safe for concurrent use. One reader
// goroutine per Conn decodes frames; it stops when the connection closes.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	neturl "net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/jetchat/jetchat/internal/wire"
)

// Frame types of the protocol.
type (
	Hello       = wire.Hello
	Message     = wire.Message
	Receipt     = wire.Receipt
	Receipts    = wire.Receipts
	ReceiptItem = wire.ReceiptItem
	Typing      = wire.Typing
	Presence    = wire.Presence
	ErrorFrame  = wire.ErrorFrame
)

// Frame is one frame from the server other than the answers to Send.
type Frame struct {
	Type     string
	Raw      []byte
	Message  *Message
	Receipt  *Receipt
	Receipts *Receipts // a batch of receipts (Options.BatchReceipts)
	Typing   *Typing
	Presence *Presence
	Error    *ErrorFrame
}

// ID is the id to ack for a message, receipt or receipts frame, or "".
func (f *Frame) ID() string {
	switch {
	case f.Message != nil:
		return f.Message.ID
	case f.Receipt != nil:
		return f.Receipt.ID
	case f.Receipts != nil:
		return f.Receipts.ID
	}
	return ""
}

// ReceiptItems are the receipts of a receipt frame (one) or of a receipts
// frame (its items), or nil for any other frame. Either is acked by ID.
func (f *Frame) ReceiptItems() []ReceiptItem {
	switch {
	case f.Receipt != nil:
		r := f.Receipt
		return []ReceiptItem{{Msg: r.Msg, Status: r.Status, By: r.By, TS: r.TS}}
	case f.Receipts != nil:
		return f.Receipts.Items
	}
	return nil
}

// Sent is the answer to a send.
type Sent = wire.Sent

// SendRequest is a message to send. CID is generated when empty.
type SendRequest struct {
	CID   string `json:"cid"`
	To    string `json:"to,omitempty"`
	Group string `json:"group,omitempty"`
	Body  string `json:"body"`
	Media string `json:"media,omitempty"`
	// Ack lists received message and receipt ids to acknowledge with the
	// send, saving a separate ack frame; the server acks them first,
	// whatever becomes of the send.
	Ack []string `json:"ack,omitempty"`
}

// Error is an error answered by the server, on the WebSocket or over HTTP.
type Error struct {
	Status  int // HTTP status; 0 on the WebSocket
	Code    string
	Message string
	// Gateway and URL name the gateway that owns the user, in a 421
	// (wrong_gateway) answer to Dial.
	Gateway string
	URL     string
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("jetchat: %d %s: %s", e.Status, e.Code, e.Message)
	}
	return "jetchat: " + e.Code + ": " + e.Message
}

// ErrClosed is returned once the connection is closed.
var ErrClosed = errors.New("jetchat: connection closed")

// Conn is a WebSocket session.
type Conn struct {
	ws    *websocket.Conn
	hello Hello

	wmu sync.Mutex // one writer at a time

	mu      sync.Mutex
	calls   map[string]func(Sent, error) // by cid: who takes a send's answer
	onFrame func(*Frame)
	frames  []*Frame
	notify  chan struct{}
	err     error // why the connection ended
	done    chan struct{}

	cidSeq atomic.Uint64
	prefix string
}

// Result is the answer to an asynchronous send.
type Result struct {
	Sent Sent
	Err  error
}

// Options are what a session asks for when it opens.
type Options struct {
	// BatchReceipts asks for receipts in batches (?receipts=batch): each
	// batch of receipts the server stored together comes as one receipts
	// frame (Frame.Receipts), acked by its one id.
	BatchReceipts bool
}

// Dial opens a session at url (ws://host:port/v1/ws) with token and waits
// for the hello frame. A refused upgrade returns an *Error with the HTTP
// status and the server's error code.
func Dial(ctx context.Context, url, token string) (*Conn, error) {
	return DialWith(ctx, url, token, Options{})
}

// DialWith is Dial with options.
func DialWith(ctx context.Context, url, token string, o Options) (*Conn, error) {
	if o.BatchReceipts {
		u, err := neturl.Parse(url)
		if err != nil {
			return nil, fmt.Errorf("jetchat: dial %s: %w", url, err)
		}
		q := u.Query()
		q.Set("receipts", wire.ReceiptsBatch)
		u.RawQuery = q.Encode()
		url = u.String()
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 4096}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ws, resp, err := d.DialContext(ctx, url, h)
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			var eb struct {
				Error struct{ Code, Message, Gateway, URL string } `json:"error"`
			}
			if json.NewDecoder(resp.Body).Decode(&eb) == nil && eb.Error.Code != "" {
				return nil, &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message, Gateway: eb.Error.Gateway, URL: eb.Error.URL}
			}
			return nil, &Error{Status: resp.StatusCode, Code: "http", Message: resp.Status}
		}
		return nil, fmt.Errorf("jetchat: dial %s: %w", url, err)
	}
	ws.SetReadLimit(1 << 20)
	if dl, ok := ctx.Deadline(); ok {
		ws.SetReadDeadline(dl)
	}
	_, data, err := ws.ReadMessage()
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("jetchat: read hello: %w", err)
	}
	ws.SetReadDeadline(time.Time{})
	c := &Conn{
		ws:     ws,
		calls:  map[string]func(Sent, error){},
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
		prefix: strconv.FormatInt(time.Now().UnixNano(), 36) + "-",
	}
	if err := json.Unmarshal(data, &c.hello); err != nil || c.hello.Type != wire.TypeHello {
		ws.Close()
		return nil, fmt.Errorf("jetchat: first frame is not hello: %s", data)
	}
	go c.readLoop()
	return c, nil
}

// Hello is the server's first frame.
func (c *Conn) Hello() Hello { return c.hello }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (a *websocket.CloseError for a close
// frame), or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// CloseCode is the close code the server sent, or 0.
func (c *Conn) CloseCode() int {
	var ce *websocket.CloseError
	if errors.As(c.Err(), &ce) {
		return ce.Code
	}
	return 0
}

func (c *Conn) readLoop() {
	var err error
	for {
		var data []byte
		_, data, err = c.ws.ReadMessage()
		if err != nil {
			break
		}
		c.dispatch(data)
	}
	c.mu.Lock()
	c.err = err
	calls := c.calls
	c.calls = map[string]func(Sent, error){}
	c.mu.Unlock()
	for _, f := range calls {
		f(Sent{}, fmt.Errorf("%w: %v", ErrClosed, err))
	}
	close(c.done)
	c.ws.Close()
}

func (c *Conn) dispatch(data []byte) {
	var a wire.ServerFrame
	if err := wire.DecodeServer(data, &a); err != nil {
		return
	}
	f := &Frame{Type: a.Type, Raw: data}
	switch a.Type {
	case wire.TypeSent:
		if c.answer(a.CID, Sent{Type: a.Type, CID: a.CID, ID: a.ID, TS: a.TS}, nil) {
			return
		}
	case wire.TypeError:
		if a.CID != "" && c.answer(a.CID, Sent{}, &Error{Code: a.Code, Message: a.Message}) {
			return
		}
		f.Error = &ErrorFrame{Type: a.Type, Code: a.Code, Message: a.Message, CID: a.CID}
	case wire.TypeMessage:
		f.Message = &Message{Type: a.Type, ID: a.ID, From: a.From, To: a.To, Group: a.Group, Body: a.Body, Media: a.Media, TS: a.TS}
	case wire.TypeReceipt:
		f.Receipt = &Receipt{Type: a.Type, ID: a.ID, Msg: a.Msg, Status: a.Status, By: a.By, TS: a.TS}
	case wire.TypeReceipts:
		f.Receipts = &Receipts{Type: a.Type, ID: a.ID, Items: a.Items}
	case wire.TypeTyping:
		f.Typing = &Typing{Type: a.Type, From: a.From, To: a.To, Group: a.Group}
	case wire.TypePresence:
		f.Presence = &Presence{Type: a.Type, User: a.User, Online: a.Online, LastSeen: a.LastSeen}
	}
	c.mu.Lock()
	if h := c.onFrame; h != nil {
		c.mu.Unlock()
		h(f)
		return
	}
	c.frames = append(c.frames, f)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// answer hands a send's answer to whoever takes it, and reports whether
// anyone did.
func (c *Conn) answer(cid string, s Sent, err error) bool {
	c.mu.Lock()
	f := c.calls[cid]
	delete(c.calls, cid)
	c.mu.Unlock()
	if f == nil {
		return false
	}
	f(s, err)
	return true
}

// Next returns the next frame (message, receipt, typing, presence, or an
// error that answers no send), waiting until one arrives, ctx ends or the
// connection closes.
func (c *Conn) Next(ctx context.Context) (*Frame, error) {
	for {
		c.mu.Lock()
		if len(c.frames) > 0 {
			f := c.frames[0]
			c.frames[0] = nil
			c.frames = c.frames[1:]
			c.mu.Unlock()
			return f, nil
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-c.done:
			c.mu.Lock()
			n := len(c.frames)
			c.mu.Unlock()
			if n == 0 {
				return nil, fmt.Errorf("%w: %v", ErrClosed, c.Err())
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Send sends body to user to and waits for the sent answer.
func (c *Conn) Send(ctx context.Context, to, body string) (Sent, error) {
	return c.SendMsg(ctx, SendRequest{To: to, Body: body})
}

// SendMsg sends req and waits for its sent answer; a refused send returns
// an *Error. Sending the same CID again returns the same message id.
func (c *Conn) SendMsg(ctx context.Context, req SendRequest) (Sent, error) {
	ch := make(chan Result, 1)
	cid, err := c.start(req, toChan(ch))
	if err != nil {
		return Sent{}, err
	}
	select {
	case r := <-ch:
		return r.Sent, r.Err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.calls, cid)
		c.mu.Unlock()
		return Sent{}, ctx.Err()
	}
}

// SendAsync sends req without waiting; the answer arrives on the returned
// channel. It is for load generators that keep many sends in flight.
func (c *Conn) SendAsync(req SendRequest) (cid string, answer <-chan Result, err error) {
	ch := make(chan Result, 1)
	if cid, err = c.start(req, toChan(ch)); err != nil {
		return "", nil, err
	}
	return cid, ch, nil
}

// SendFunc sends req without waiting; done is called from the connection's
// reader goroutine with the answer (or the error that ended the
// connection). It must not block. It is for load generators.
func (c *Conn) SendFunc(req SendRequest, done func(Sent, error)) error {
	_, err := c.start(req, done)
	return err
}

// toChan makes a send's answer go to ch, which has room for it.
func toChan(ch chan<- Result) func(Sent, error) {
	return func(s Sent, err error) { ch <- Result{Sent: s, Err: err} }
}

// start writes req's send frame, its answer to go to done. done is
// registered under the cid (made when req has none) before the write, and
// removed again when the write fails.
func (c *Conn) start(req SendRequest, done func(Sent, error)) (string, error) {
	if req.CID == "" {
		req.CID = c.prefix + strconv.FormatUint(c.cidSeq.Add(1), 36)
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return "", ErrClosed
	}
	c.calls[req.CID] = done
	c.mu.Unlock()
	if err := c.write(wire.AppendSend(nil, req.CID, req.To, req.Group, req.Body, req.Media, req.Ack)); err != nil {
		c.mu.Lock()
		delete(c.calls, req.CID)
		c.mu.Unlock()
		return "", err
	}
	return req.CID, nil
}

// OnFrame makes the reader goroutine call f for every frame that Next would
// return, instead of queueing it; f must not block. Set it right after Dial.
func (c *Conn) OnFrame(f func(*Frame)) {
	c.mu.Lock()
	c.onFrame = f
	queued := c.frames
	c.frames = nil
	c.mu.Unlock()
	for _, fr := range queued {
		f(fr)
	}
}

// Ack acknowledges received message and receipt frames.
func (c *Conn) Ack(ids ...string) error {
	return c.write(wire.AppendIDs(nil, wire.TypeAck, ids))
}

// Read marks received messages read.
func (c *Conn) Read(ids ...string) error {
	return c.write(wire.AppendIDs(nil, wire.TypeRead, ids))
}

// TypingTo tells user to that this user is typing.
func (c *Conn) TypingTo(to string) error {
	return c.writeJSON(map[string]any{"type": wire.TypeTyping, "to": to})
}

// TypingInGroup tells a group's members that this user is typing.
func (c *Conn) TypingInGroup(group string) error {
	return c.writeJSON(map[string]any{"type": wire.TypeTyping, "group": group})
}

// Subscribe asks for presence frames of users.
func (c *Conn) Subscribe(users ...string) error {
	return c.writeJSON(map[string]any{"type": wire.TypePresenceSubscribe, "users": users})
}

// Unsubscribe stops presence frames of users.
func (c *Conn) Unsubscribe(users ...string) error {
	return c.writeJSON(map[string]any{"type": wire.TypePresenceUnsubscribe, "users": users})
}

// WriteRaw sends data as one text frame, as is (for tests of bad input).
func (c *Conn) WriteRaw(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, data)
}

func (c *Conn) writeJSON(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(data)
}

func (c *Conn) write(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return nil
}

// Close closes the session with a normal close frame and waits briefly for
// the server's answer.
func (c *Conn) Close() error {
	c.wmu.Lock()
	err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		c.ws.Close()
		<-c.done
	}
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// Abort drops the TCP connection without a close frame, as a phone losing
// its network does.
func (c *Conn) Abort() {
	c.ws.NetConn().Close()
	<-c.done
}
