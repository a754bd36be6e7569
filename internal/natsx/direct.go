package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers that JetStream puts on stored messages it hands out.
const (
	HdrSequence     = "Nats-Sequence"
	HdrLastSequence = "Nats-Last-Sequence"
	HdrTimeStamp    = "Nats-Time-Stamp"
	HdrSubject      = "Nats-Subject"
	HdrNumPending   = "Nats-Num-Pending"
	hdrStatus       = "Status"
)

// ErrNoMessage is returned when a direct get finds nothing.
var ErrNoMessage = errors.New("no message")

// BatchRequest asks for up to Batch stored messages of one subject, starting
// at sequence Seq (or at StartTime when set).
type BatchRequest struct {
	Subject   string
	Seq       uint64
	StartTime *time.Time
	Batch     int
	MaxBytes  int
}

type directGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	LastFor   string     `json:"last_by_subj,omitempty"`
	Batch     int        `json:"batch,omitempty"`
	MaxBytes  int        `json:"max_bytes,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

// BatchResult describes the end of a batch read.
type BatchResult struct {
	// Count is how many messages fn received.
	Count int
	// Pending is how many matching messages remain after the last one
	// returned (0 means the read reached the end of the subject).
	Pending uint64
	// Last is the sequence of the last message returned, or 0.
	Last uint64
}

// GetBatch reads stored messages of one subject with a JetStream batch direct
// get (no consumer is created) and calls fn for each, in sequence order. The
// stream must allow direct gets. Reading past the end is not an error: the
// result has Count 0.
func GetBatch(ctx context.Context, nc *nats.Conn, stream string, req BatchRequest, fn func(*nats.Msg) error) (BatchResult, error) {
	var res BatchResult
	if req.Batch < 1 {
		req.Batch = 1
	}
	body, err := json.Marshal(directGetRequest{Seq: req.Seq, NextFor: req.Subject, Batch: req.Batch, MaxBytes: req.MaxBytes, StartTime: req.StartTime})
	if err != nil {
		return res, err
	}
	replies, err := request(nc, "$JS.API.DIRECT.GET."+stream, body, req.Batch)
	if err != nil {
		return res, fmt.Errorf("direct get: %w", err)
	}
	defer replies.stop()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	for {
		m, err := replies.next(ctx)
		if err != nil {
			return res, fmt.Errorf("direct get %s on %s: %w", req.Subject, stream, err)
		}
		if len(m.Data) == 0 && m.Header != nil {
			switch m.Header.Get(hdrStatus) {
			case "":
			case "204": // end of batch
				res.Pending, _ = strconv.ParseUint(m.Header.Get(HdrNumPending), 10, 64)
				return res, nil
			case "404":
				return res, nil
			case "503":
				return res, fmt.Errorf("direct get on %s: %w", stream, nats.ErrNoResponders)
			default:
				return res, fmt.Errorf("direct get on %s: status %s %s", stream, m.Header.Get(hdrStatus), m.Header.Get("Description"))
			}
		}
		seq, err := strconv.ParseUint(m.Header.Get(HdrSequence), 10, 64)
		if err != nil {
			return res, fmt.Errorf("direct get on %s: message without sequence", stream)
		}
		res.Count++
		res.Last = seq
		if err := fn(m); err != nil {
			return res, err
		}
	}
}

// replies is the answer to a request that comes as a run of messages to
// an inbox of its own.
type replies struct {
	sub    *nats.Subscription
	ch     chan *nats.Msg
	closed chan struct{}
}

// request publishes body to subject, for an answer of at most n messages
// and a status. Stop the replies once read.
func request(nc *nats.Conn, subject string, body []byte, n int) (*replies, error) {
	// A channel of that size never overflows. (A synchronous subscription
	// would allocate nats.go's default of 64Ki slots, 512 KiB, per read.)
	r := &replies{ch: make(chan *nats.Msg, n+2), closed: make(chan struct{})}
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, r.ch)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	r.sub = sub
	// A channel subscription is not woken when the connection closes; its
	// closed handler is.
	sub.SetClosedHandler(func(string) { close(r.closed) })
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	return r, nil
}

// next waits for the next reply.
func (r *replies) next(ctx context.Context) (*nats.Msg, error) {
	select {
	case m := <-r.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-r.closed:
		return nil, nats.ErrConnectionClosed
	}
}

// stop ends the subscription to the replies.
func (r *replies) stop() { r.sub.Unsubscribe() }

// Get reads the stored message with sequence seq. It returns ErrNoMessage
// when there is none (never stored, deleted or expired).
func Get(ctx context.Context, nc *nats.Conn, stream string, seq uint64) (*nats.Msg, error) {
	body := []byte(`{"seq":` + strconv.FormatUint(seq, 10) + `}`)
	m, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+stream, body)
	if err != nil {
		return nil, fmt.Errorf("direct get %d on %s: %w", seq, stream, err)
	}
	if len(m.Data) == 0 && m.Header != nil {
		switch m.Header.Get(hdrStatus) {
		case "":
		case "404":
			return nil, ErrNoMessage
		default:
			return nil, fmt.Errorf("direct get %d on %s: status %s %s", seq, stream, m.Header.Get(hdrStatus), m.Header.Get("Description"))
		}
	}
	return m, nil
}

// Seq returns the stream sequence of a message from a direct get or a
// republish, or 0.
func Seq(m *nats.Msg) uint64 {
	s, _ := strconv.ParseUint(m.Header.Get(HdrSequence), 10, 64)
	return s
}

// StoredMsg is a message read from a stream.
type StoredMsg struct {
	Subject string
	Seq     uint64
	Header  nats.Header
	Data    []byte
}

// NextSeq returns the sequence of the first message of subject stored at
// or after seq, or 0 when there is none, as the stream's leader sees it.
// Unlike a direct get, which any replica may answer from a copy that lags
// the leader, this reads what is committed: use it to check that reads and
// live copies missed nothing.
func NextSeq(ctx context.Context, nc *nats.Conn, stream, subject string, seq uint64) (uint64, error) {
	m, err := LeaderNext(ctx, nc, stream, subject, seq)
	if err != nil || m == nil {
		return 0, err
	}
	return m.Seq, nil
}

// LeaderLast returns the last message of subject as the stream's leader
// has it, or nil when there is none: a read that sees every write
// acknowledged before it, where a direct get (a KV Get) may not.
func LeaderLast(ctx context.Context, nc *nats.Conn, stream, subject string) (*StoredMsg, error) {
	return leaderGet(ctx, nc, stream, directGetRequest{LastFor: subject})
}

// LeaderNext returns the first message of subject stored at or after seq
// as the stream's leader has it, or nil when there is none.
func LeaderNext(ctx context.Context, nc *nats.Conn, stream, subject string, seq uint64) (*StoredMsg, error) {
	return leaderGet(ctx, nc, stream, directGetRequest{Seq: seq, NextFor: subject})
}

// LeaderGet returns the message with sequence seq as the stream's leader
// has it, or nil when there is none (see LeaderLast).
func LeaderGet(ctx context.Context, nc *nats.Conn, stream string, seq uint64) (*StoredMsg, error) {
	return leaderGet(ctx, nc, stream, directGetRequest{Seq: seq})
}

// leaderGet asks the stream's leader for one message ($JS.API.STREAM.MSG.GET);
// nil when there is none.
func leaderGet(ctx context.Context, nc *nats.Conn, stream string, req directGetRequest) (*StoredMsg, error) {
	what := fmt.Sprintf("read %s from %d on %s from its leader", req.NextFor+req.LastFor, req.Seq, stream)
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	m, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var resp struct {
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Header  []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
		Error *APIError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeNoMessage:
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("%s: %w", what, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("%s: empty answer", what)
	}
	out := &StoredMsg{Subject: resp.Message.Subject, Seq: resp.Message.Seq, Data: resp.Message.Data}
	if len(resp.Message.Header) > 0 {
		if out.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	return out, nil
}

// errCodeNoMessage is JetStream's error code for "no message found".
const errCodeNoMessage = 10037
