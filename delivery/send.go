package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
)

// Send stores a message from this device's user and returns once JetStream
// has acknowledged it (and, when the user has other devices, the copy for
// them). It returns an error wrapping ErrUnavailable when the store fails
// after retries; the client may retry with the same cid.
func (d *Device) Send(ctx context.Context, req chat.SendRequest) (chat.Sent, error) {
	if req.Group != "" {
		return d.svc.sendGroup(ctx, d.user.id, d.id, req)
	}
	copyToSelf := req.To != d.user.id && d.user.hasOtherDevices(d.id)
	return d.svc.send(ctx, d.user.id, d.id, req, copyToSelf)
}

func (s *Service) send(ctx context.Context, from, device string, req chat.SendRequest, copyToSelf bool) (chat.Sent, error) {
	out, key, ok, err := s.cids.lookup(ctx, from, req.CID)
	if err != nil || ok {
		return out, err
	}
	if out, err = s.store(ctx, from, device, req, copyToSelf); err == nil {
		s.cids.remember(key, out)
	}
	return out, err
}

// store stores a 1:1 message (and its copy for the sender's devices).
func (s *Service) store(ctx context.Context, from, device string, req chat.SendRequest, copyToSelf bool) (chat.Sent, error) {
	ts := s.cfg.Now().UnixMilli()
	// With other devices, the copy for them is stored first: its sequence
	// makes the message id, and every receipt, stored after the message,
	// then reaches those devices after the copy.
	var copySeq uint64
	copyFresh := false
	if copyToSelf {
		c := newMessageRecord(natsx.Inbox(from), "c:", KindCopy, "", from, device, req, ts)
		ack, err := s.publish(ctx, c)
		if err != nil {
			return chat.Sent{}, fmt.Errorf("store copy for %s's devices: %w: %v", from, ErrUnavailable, err)
		}
		copySeq, copyFresh = ack.Seq, !ack.Duplicate
		if ack.Duplicate {
			if t, ok := s.storedTS(ctx, copySeq); ok {
				ts = t
			}
		}
	}
	id := ""
	if copySeq != 0 {
		id = MessageID(copySeq)
	}
	m := newMessageRecord(natsx.Inbox(req.To), dedupMessage, KindMessage, id, from, device, req, ts)
	ack, err := s.publish(ctx, m)
	if err != nil {
		return chat.Sent{}, fmt.Errorf("store message from %s: %w: %v", from, ErrUnavailable, err)
	}
	out := chat.Sent{ID: id, TS: ts, Seq: ack.Seq, Duplicate: ack.Duplicate}
	if id == "" {
		out.ID = MessageID(ack.Seq)
	}
	if !ack.Duplicate {
		s.m.MessagesSent.Inc()
		return out, nil
	}
	// A repeated cid: answer with what was stored the first time.
	orig, err := natsx.Get(ctx, s.nc, natsx.StreamMsgs, ack.Seq)
	if err != nil {
		return out, nil // stored for sure; the id above may only differ if devices changed
	}
	if t, err := strconv.ParseInt(orig.Header.Get(HdrTS), 10, 64); err == nil {
		out.TS = t
	}
	origID := orig.Header.Get(HdrID)
	if origID == "" {
		origID = MessageID(ack.Seq)
	}
	if origID != out.ID && copyFresh {
		// The user got a device since the first attempt: the copy just
		// stored names an id that does not exist. Remove it.
		if err := s.deleteRecord(ctx, copySeq); err != nil {
			s.log.Warn("remove stray copy", "seq", copySeq, "err", err)
		}
	}
	out.ID = origID
	return out, nil
}

// sendGroup stores a group message once, on the group's subject; the
// members' devices read it from there.
func (s *Service) sendGroup(ctx context.Context, from, device string, req chat.SendRequest) (chat.Sent, error) {
	if s.groups == nil {
		return chat.Sent{}, fmt.Errorf("%w: no such group", ErrNotFound)
	}
	ok, err := s.groups.IsMember(ctx, req.Group, from)
	if err != nil {
		return chat.Sent{}, fmt.Errorf("check membership of %s: %w", req.Group, err)
	}
	if !ok {
		return chat.Sent{}, fmt.Errorf("%w: no such group", ErrNotFound)
	}
	prior, key, ok, err := s.cids.lookup(ctx, from, req.CID)
	if err != nil || ok {
		return prior, err
	}
	ts := s.cfg.Now().UnixMilli()
	m := newMessageRecord(natsx.Group(req.Group), dedupMessage, KindMessage, "", from, device, req, ts)
	ack, err := s.publish(ctx, m)
	if err != nil {
		return chat.Sent{}, fmt.Errorf("store group message from %s: %w: %v", from, ErrUnavailable, err)
	}
	out := chat.Sent{ID: MessageID(ack.Seq), TS: ts, Seq: ack.Seq, Duplicate: ack.Duplicate}
	if ack.Duplicate {
		if t, ok := s.storedTS(ctx, ack.Seq); ok {
			out.TS = t
		}
	} else {
		s.m.MessagesSent.Inc()
	}
	s.cids.remember(key, out)
	return out, nil
}

// newMessageRecord builds a message or copy record for subject. id is the
// message id when the record does not make it itself.
func newMessageRecord(subject, dedupPrefix, kind, id, from, device string, req chat.SendRequest, ts int64) *nats.Msg {
	h := newHeaders(8)
	h.set(hdrMsgID, dedupPrefix+from+":"+req.CID)
	h.set(HdrVersion, RecordVersion)
	h.set(HdrKind, kind)
	h.set(HdrFrom, from)
	if req.Group != "" {
		h.set(HdrGroup, req.Group)
	} else {
		h.set(HdrTo, req.To)
	}
	h.set(HdrDevice, device)
	h.set(HdrTS, strconv.FormatInt(ts, 10))
	if id != "" {
		h.set(HdrID, id)
	}
	return &nats.Msg{
		Subject: subject,
		Header:  h.h,
		Data:    appendMessage(make([]byte, 0, 112+len(req.Body)), id, from, req.To, req.Group, req.Body, req.Media, ts),
	}
}

// headers builds a record's NATS headers. nats.Header.Set makes a slice
// for each value; these share one array, and the map is made at its size.
type headers struct {
	h    nats.Header
	vals []string
}

func newHeaders(n int) headers {
	return headers{h: make(nats.Header, n), vals: make([]string, 0, n)}
}

// set sets key to the single value v.
func (h *headers) set(key, v string) {
	h.vals = append(h.vals, v)
	n := len(h.vals)
	h.h[key] = h.vals[n-1 : n : n] // capped: an Add to one key cannot overwrite the next
}

// deleteRecord removes one record from the message log.
func (s *Service) deleteRecord(ctx context.Context, seq uint64) error {
	st, err := s.js.Stream(ctx, natsx.StreamMsgs)
	if err != nil {
		return err
	}
	return st.DeleteMsg(ctx, seq)
}

// storedTS reads the acceptance time of the record at seq.
func (s *Service) storedTS(ctx context.Context, seq uint64) (int64, bool) {
	m, err := natsx.Get(ctx, s.nc, natsx.StreamMsgs, seq)
	if err != nil {
		return 0, false
	}
	t, err := strconv.ParseInt(m.Header.Get(HdrTS), 10, 64)
	return t, err == nil
}

// publish stores m, retrying with the same message id (JetStream drops the
// repeat if an earlier attempt was stored after all) until
// Config.PublishTimeout or ctx ends.
func (s *Service) publish(ctx context.Context, m *nats.Msg) (natsx.PubAck, error) {
	start := time.Now()
	deadline := start.Add(s.cfg.PublishTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	backoff := 50 * time.Millisecond
	for {
		wait := min(time.Until(deadline), 3*time.Second)
		if wait <= 0 {
			s.unsureStore(m, start)
			return natsx.PubAck{}, context.DeadlineExceeded
		}
		ack, err := natsx.Publish(s.nc, m, wait)
		if err == nil {
			s.m.PublishLatency.Observe(time.Since(start).Seconds())
			return ack, nil
		}
		if !natsx.Retryable(err) || ctx.Err() != nil || time.Until(deadline) <= backoff {
			if natsx.Retryable(err) {
				s.unsureStore(m, start)
			}
			return natsx.PubAck{}, err
		}
		s.log.Debug("publish failed, retrying", "subject", m.Subject, "err", err)
		select {
		case <-ctx.Done():
			return natsx.PubAck{}, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// unsureStore tells the send index of a message store begun at start whose
// outcome is unknown: it may have been stored, its answers lost.
func (s *Service) unsureStore(m *nats.Msg, start time.Time) {
	if strings.HasPrefix(m.Header.Get(hdrMsgID), dedupMessage) {
		s.cids.storeFailed(start)
	}
}

// SendAs stores a message from user from on behalf of a backend service (a
// bot), exactly as a client's send: validated by the caller, deduplicated
// by cid, copied to the user's devices when it has any. It returns errors
// like Device.Send.
func (s *Service) SendAs(ctx context.Context, from string, req chat.SendRequest) (chat.Sent, error) {
	if req.Group != "" {
		return s.sendGroup(ctx, from, "", req)
	}
	copyToSelf := false
	if req.To != from {
		e, err := s.kv.Get(ctx, from)
		if err == nil {
			var rec deviceRecord
			copyToSelf = json.Unmarshal(e.Value(), &rec) == nil && len(rec.Devices) > 0
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return chat.Sent{}, fmt.Errorf("devices of %s: %w: %v", from, ErrUnavailable, err)
		}
	}
	return s.send(ctx, from, "", req, copyToSelf)
}
