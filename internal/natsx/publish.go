package natsx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// PubAck is JetStream's answer to a stored publish.
type PubAck struct {
	Stream    string
	Seq       uint64
	Duplicate bool
}

// APIError is an error answered by JetStream.
type APIError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("jetstream: %s (status %d, code %d)", e.Description, e.Code, e.ErrCode)
}

// Publish stores m in JetStream and waits up to timeout for the ack. It is
// the hot path of every send: one request, and the ack parsed without
// reflection. A stream that does not answer gives nats.ErrNoResponders or
// nats.ErrTimeout; a refusal gives an *APIError.
func Publish(nc *nats.Conn, m *nats.Msg, timeout time.Duration) (PubAck, error) {
	resp, err := nc.RequestMsg(m, timeout)
	if err != nil {
		return PubAck{}, err
	}
	if len(resp.Data) == 0 && resp.Header.Get(hdrStatus) == "503" {
		return PubAck{}, nats.ErrNoResponders
	}
	return parsePubAck(resp.Data)
}

// parsePubAck reads {"stream":"S","seq":N[,"duplicate":true]} or an error.
func parsePubAck(b []byte) (PubAck, error) {
	if bytes.Contains(b, []byte(`"error"`)) {
		var r struct {
			Error *APIError `json:"error"`
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Error == nil {
			return PubAck{}, fmt.Errorf("jetstream: unreadable answer %q", b)
		}
		return PubAck{}, r.Error
	}
	var ack PubAck
	i := bytes.Index(b, []byte(`"seq":`))
	if i < 0 {
		return PubAck{}, fmt.Errorf("jetstream: answer without a sequence: %q", b)
	}
	j := i + len(`"seq":`)
	for j < len(b) && b[j] == ' ' {
		j++
	}
	k := j
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	seq, err := strconv.ParseUint(string(b[j:k]), 10, 64)
	if err != nil || seq == 0 {
		return PubAck{}, fmt.Errorf("jetstream: answer with a bad sequence: %q", b)
	}
	ack.Seq = seq
	if d := bytes.Index(b, []byte(`"duplicate":`)); d >= 0 {
		ack.Duplicate = bytes.HasPrefix(bytes.TrimLeft(b[d+len(`"duplicate":`):], " "), []byte("true"))
	}
	if s := bytes.Index(b, []byte(`"stream":"`)); s >= 0 {
		rest := b[s+len(`"stream":"`):]
		if e := bytes.IndexByte(rest, '"'); e >= 0 {
			ack.Stream = string(rest[:e])
		}
	}
	return ack, nil
}

// Retryable reports whether a failed publish may succeed if repeated with
// the same message id: timeouts, no responders (a leader election), a
// reconnecting connection, JetStream's own 503s.
func Retryable(err error) bool {
	var api *APIError
	switch {
	case errors.As(err, &api):
		return api.Code >= 500
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject):
		return false
	}
	return true
}

// Barrier returns once the stream that stores subject has handled every
// message queued to it before the call. It publishes an empty message
// naming another stream, which the stream refuses in its turn: a
// standalone server handles a stream's messages one at a time, in order,
// so the refusal comes after all of them (a clustered stream checks it
// when the message is proposed, after the earlier ones were proposed).
// Nothing is stored. Use a subject no reader reads.
func Barrier(nc *nats.Conn, subject string, timeout time.Duration) error {
	m := &nats.Msg{Subject: subject, Header: nats.Header{hdrExpectedStream: []string{barrierStream}}}
	_, err := Publish(nc, m, timeout)
	var api *APIError
	switch {
	case errors.As(err, &api) && api.ErrCode == errCodeStreamNotMatch:
		return nil
	case err == nil:
		return fmt.Errorf("barrier on %s: stored, not refused", subject)
	}
	return fmt.Errorf("barrier on %s: %w", subject, err)
}

const (
	hdrExpectedStream = "Nats-Expected-Stream"
	// barrierStream is no stream's name (stream names cannot hold a space).
	barrierStream = "no stream"
	// errCodeStreamNotMatch is JetStream's "expected stream does not match".
	errCodeStreamNotMatch = 10060
)
