package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SubjectReader reads one subject of a stream in order, from a sequence on,
// through an ephemeral consumer of its own (no acks, kept in memory; on a
// cluster the server places it on one of the stream's replicas, so, like
// a direct get, it may read a copy that lags the leader). For a long backlog it is much cheaper than batch direct
// gets: a consumer hands the stored headers over as they are, while a direct
// get re-encodes every message's headers to add its own (a third or more
// of a 1,000-message read, see BenchmarkRead1000). Its cost is the consumer:
// one request to make it, one to remove it.
//
// A reader reads ahead: it asks for its first batch as soon as its
// consumer exists, and for the next one as soon as a Read ends with
// messages still pending, so that the server's answer (most of a read's
// time is waiting for its first message) is on its way while the caller
// handles the batch it has.
type SubjectReader struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   string
	name     string
	subject  string
	opts     ReaderOptions
	ahead    *replies // the pull request made ahead of the next Read, if any
	from     uint64   // messages before it are passed over (ReaderOptions.Start)
	next     uint64   // stream sequence the next read starts at (or after)
	consumed uint64   // the consumer's delivery sequence so far
}

// ReaderOptions bound a SubjectReader's reads and say where its consumer
// starts.
type ReaderOptions struct {
	// Batch is the most messages one Read returns (at least 1).
	Batch int
	// MaxBytes bounds the bytes of one Read (0: no bound); a message
	// larger than it is read alone.
	MaxBytes int
	// Start, when not 0, is where the consumer starts, before the reader's
	// from; the messages in between are passed over. Making a consumer
	// costs the server a count of what it has pending, which is cheap from
	// the stream's first sequence or from before the subject's first
	// block, and a scan of the rest of a block from a sequence inside it:
	// a reader that carries on after a direct get of a subject's first
	// messages is cheaper to make at the direct get's start.
	Start uint64
}

// readerIdle is how long the server keeps a reader's consumer once its
// owner stops asking (a reader that is never closed, after a crash).
const readerIdle = time.Minute

// NewSubjectReader makes a reader of subject on stream that reads from
// sequence from on, and asks for its first batch.
func NewSubjectReader(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream, subject string, from uint64, opts ReaderOptions) (*SubjectReader, error) {
	from = max(from, 1)
	start := from
	if opts.Start != 0 {
		start = min(opts.Start, from)
	}
	opts.Batch, opts.MaxBytes = max(opts.Batch, 1), max(opts.MaxBytes, 0)
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: readerIdle,
	})
	if err != nil {
		return nil, fmt.Errorf("read %s on %s: make its consumer: %w", subject, stream, err)
	}
	r := &SubjectReader{nc: nc, js: js, stream: stream, name: cons.CachedInfo().Name, subject: subject,
		opts: opts, from: from, next: from}
	r.ahead, _ = r.ask(opts.Batch, opts.MaxBytes) // on failure, the first Read asks again
	return r, nil
}

// Next is the stream sequence the reader's next Read starts at or after.
func (r *SubjectReader) Next() uint64 { return r.next }

type pullRequest struct {
	Batch    int  `json:"batch"`
	MaxBytes int  `json:"max_bytes,omitempty"`
	NoWait   bool `json:"no_wait"`
}

// ErrReaderGap is returned when a reader's consumer skipped a delivery (a
// reply lost on its way): the reader can no longer be trusted to be in
// order, and is to be closed and replaced.
var ErrReaderGap = errors.New("subject reader: a delivery is missing")

// Read reads the next batch of what is stored now (as the consumer has
// seen it: a message stored a moment ago may come only with the next
// read, as its live copy is what tells a catch-up) and calls fn for each
// message with its stream sequence, in sequence order. A message is as
// the consumer delivers it: its Subject is the one it was stored on, and
// its headers are the stored ones (a direct get's are not added: a
// record's few headers then stay within the smallest map nats.go can make
// for them, which a read of many records allocates far less for). A read
// that reaches the end of the subject has Pending 0. After an error the
// reader is to be closed: its position is no longer known.
func (r *SubjectReader) Read(ctx context.Context, fn func(m *nats.Msg, seq uint64) error) (BatchResult, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	for {
		rep := r.ahead
		r.ahead = nil
		res, tooBig, err := r.pull(ctx, rep, r.opts.Batch, r.opts.MaxBytes, fn)
		if err == nil && tooBig && res.Count == 0 {
			res, _, err = r.pull(ctx, nil, 1, 0, fn)
		}
		if err == nil && res.Pending > 0 {
			r.ahead, _ = r.ask(r.opts.Batch, r.opts.MaxBytes) // on failure, the next Read asks again
		}
		if err != nil || res.Count > 0 || res.Pending == 0 {
			return res, err
		}
		// All passed over (before from): never an empty read with more
		// pending.
	}
}

// ask makes a pull request for up to batch messages and maxBytes.
func (r *SubjectReader) ask(batch, maxBytes int) (*replies, error) {
	body, err := json.Marshal(pullRequest{Batch: batch, MaxBytes: maxBytes, NoWait: true})
	if err != nil {
		return nil, err
	}
	rep, err := request(r.nc, "$JS.API.CONSUMER.MSG.NEXT."+r.stream+"."+r.name, body, batch)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", r.subject, err)
	}
	return rep, nil
}

// pull reads the answer to a pull request for up to batch messages and
// maxBytes, made now when replies is nil; tooBig reports that it ended on
// a message larger than what was left of maxBytes.
func (r *SubjectReader) pull(ctx context.Context, replies *replies, batch, maxBytes int, fn func(*nats.Msg, uint64) error) (res BatchResult, tooBig bool, err error) {
	if replies == nil {
		if replies, err = r.ask(batch, maxBytes); err != nil {
			return res, false, err
		}
	}
	defer replies.stop()
	left, got := maxBytes, 0
	for {
		m, err := replies.next(ctx)
		if err != nil {
			return res, false, fmt.Errorf("read %s on %s: %w", r.subject, r.stream, err)
		}
		if len(m.Data) == 0 && m.Header != nil && m.Header.Get(hdrStatus) != "" {
			switch m.Header.Get(hdrStatus) {
			case "404", "408": // nothing (more) stored now
				res.Pending = 0
				return res, false, nil
			case "409":
				switch m.Header.Get("Description") {
				case "Batch Completed": // the request ended on its bounds
					return res, false, nil
				case "Message Size Exceeds MaxBytes":
					return res, true, nil
				}
			case "100": // heartbeat
				continue
			}
			return res, false, fmt.Errorf("read %s on %s: status %s %s", r.subject, r.stream, m.Header.Get(hdrStatus), m.Header.Get("Description"))
		}
		md, ok := parseAckReply(m.Reply)
		if !ok {
			return res, false, fmt.Errorf("read %s on %s: a delivery with reply subject %q", r.subject, r.stream, m.Reply)
		}
		if md.consumerSeq != r.consumed+1 {
			return res, false, ErrReaderGap
		}
		r.consumed++
		got++
		res.Pending = md.pending
		// The server counts a message's bytes as its subject, reply,
		// headers and data (Msg.Size): when they use up the request's
		// bound exactly, it ends the request without a word.
		left -= m.Size()
		if md.streamSeq >= r.from {
			r.next = md.streamSeq + 1
			res.Count++
			res.Last = md.streamSeq
			if err := fn(m, md.streamSeq); err != nil {
				return res, false, err
			}
		}
		if got == batch || md.pending == 0 || (maxBytes > 0 && left <= 0) {
			return res, false, nil
		}
	}
}

// Close removes the reader's consumer. A reader that is not closed is
// removed by the server a minute after its last read.
func (r *SubjectReader) Close(ctx context.Context) error {
	if r.ahead != nil {
		r.ahead.stop()
		r.ahead = nil
	}
	if err := r.js.DeleteConsumer(ctx, r.stream, r.name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("read %s on %s: remove its consumer: %w", r.subject, r.stream, err)
	}
	return nil
}

// ackMeta is what a reader needs of a delivery's reply subject.
type ackMeta struct {
	streamSeq, consumerSeq, pending uint64
}

// parseAckReply reads a consumer delivery's reply subject without the
// allocations of nats.Msg.Metadata (two a message): in the original form
// $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>,
// and in the form with a domain and an account hash,
// $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>.<token>
// (and possibly more tokens after).
func parseAckReply(reply string) (ackMeta, bool) {
	const prefix = "$JS.ACK."
	if len(reply) < len(prefix) || reply[:len(prefix)] != prefix {
		return ackMeta{}, false
	}
	var tok [12]string
	n, start := 0, 0
	for i := 0; i <= len(reply); i++ {
		if i == len(reply) || reply[i] == '.' {
			if n == len(tok) {
				n++
				break
			}
			tok[n] = reply[start:i]
			n++
			start = i + 1
		}
	}
	var first int // the token of the delivered count
	switch {
	case n == 9:
		first = 4
	case n >= 12:
		first = 6
	default:
		return ackMeta{}, false
	}
	sseq, ok1 := parseUint(tok[first+1])
	cseq, ok2 := parseUint(tok[first+2])
	pending, ok3 := parseUint(tok[first+4])
	return ackMeta{streamSeq: sseq, consumerSeq: cseq, pending: pending}, ok1 && ok2 && ok3
}

// parseUint reads a decimal number of up to 19 digits.
func parseUint(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > 19 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
