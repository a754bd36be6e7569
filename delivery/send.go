package delivery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
	copyToSelf := req.To != d.user.id && d.user.hasOtherDevices(d.id)
	return d.svc.send(ctx, d.user.id, d.id, req, copyToSelf)
}

func (s *Service) send(ctx context.Context, from, device string, req chat.SendRequest, copyToSelf bool) (chat.Sent, error) {
	ts := s.cfg.Now().UnixMilli()
	tsStr := strconv.FormatInt(ts, 10)
	m := nats.NewMsg(natsx.Inbox(req.To))
	m.Data = appendMessage(make([]byte, 0, 96+len(req.Body)), "", from, req.To, req.Body, req.Media, ts)
	m.Header.Set(hdrMsgID, "m:"+from+":"+req.CID)
	m.Header.Set(HdrKind, KindMessage)
	m.Header.Set(HdrFrom, from)
	m.Header.Set(HdrTo, req.To)
	m.Header.Set(HdrDevice, device)
	m.Header.Set(HdrTS, tsStr)
	ack, err := s.publish(ctx, m)
	if err != nil {
		return chat.Sent{}, fmt.Errorf("store message from %s: %w: %v", from, ErrUnavailable, err)
	}
	out := chat.Sent{ID: MessageID(ack.Sequence), TS: ts, Duplicate: ack.Duplicate}
	if ack.Duplicate {
		if orig, err := natsx.Get(ctx, s.nc, natsx.StreamMsgs, ack.Sequence); err == nil {
			if t, err := strconv.ParseInt(orig.Header.Get(HdrTS), 10, 64); err == nil {
				out.TS = t
			}
		}
	} else {
		s.m.MessagesSent.Inc()
	}
	if copyToSelf {
		c := nats.NewMsg(natsx.Inbox(from))
		c.Data = appendMessage(make([]byte, 0, 112+len(req.Body)), out.ID, from, req.To, req.Body, req.Media, out.TS)
		c.Header.Set(hdrMsgID, "c:"+from+":"+req.CID)
		c.Header.Set(HdrKind, KindCopy)
		c.Header.Set(HdrFrom, from)
		c.Header.Set(HdrTo, req.To)
		c.Header.Set(HdrDevice, device)
		c.Header.Set(HdrTS, strconv.FormatInt(out.TS, 10))
		if _, err := s.publish(ctx, c); err != nil {
			return chat.Sent{}, fmt.Errorf("store copy for %s's devices: %w: %v", from, ErrUnavailable, err)
		}
	}
	return out, nil
}

// publish stores m, retrying with the same message id (JetStream drops the
// repeat if an earlier attempt was stored after all) until
// Config.PublishTimeout.
func (s *Service) publish(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	backoff := 50 * time.Millisecond
	for {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		ack, err := s.js.PublishMsg(actx, m)
		acancel()
		if err == nil {
			s.m.PublishLatency.Observe(time.Since(start).Seconds())
			return ack, nil
		}
		if !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
		s.log.Debug("publish failed, retrying", "subject", m.Subject, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// retryable tells transient publish failures (timeouts, no leader, a
// reconnecting connection) from permanent ones.
func retryable(err error) bool {
	switch {
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject), errors.Is(err, context.Canceled):
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		return false
	}
	return true
}
