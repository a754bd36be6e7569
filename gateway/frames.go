package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/wire"
)

var errRateFlood = errors.New("rate limit flood")

// requestContext bounds the storage calls of one frame; the node's shutdown
// does not cut them short (an in-flight send completes and is answered).
func (ss *session) requestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ss.srv.ctx), ss.srv.cfg.RequestTimeout)
}

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
	if s.presence != nil {
		s.presence.Activity(ss.user)
	}
	switch in.Type {
	case wire.TypeSend:
		ss.send(in)
	case wire.TypeAck:
		ss.dev.Ack(in.IDs)
	case wire.TypeRead:
		ctx, cancel := ss.requestContext()
		err := ss.dev.Read(ctx, in.IDs)
		cancel()
		if err != nil {
			ss.fail(err)
		}
	case wire.TypeTyping:
		if !ss.allowTyping() {
			ss.fail(wire.Errorf(wire.CodeRateLimited, "typing indicators are limited to %d a second", typingPerSecond))
			return
		}
		ctx, cancel := ss.requestContext()
		err := ss.dev.Typing(ctx, in.To, in.Group)
		cancel()
		if err != nil {
			ss.fail(err)
		}
	case wire.TypePresenceSubscribe:
		if s.presence == nil {
			ss.fail(wire.Errorf(wire.CodeUnavailable, "presence is not available on this node"))
			return
		}
		ctx, cancel := ss.requestContext()
		err := s.presence.Subscribe(ctx, ss, ss.user, in.Users)
		cancel()
		if err != nil {
			ss.fail(err)
		}
	case wire.TypePresenceUnsubscribe:
		if s.presence != nil {
			s.presence.Unsubscribe(ss, in.Users)
		}
	}
}

// typingPerSecond bounds a session's typing indicators.
const typingPerSecond = 5

// allowTyping reports whether the session may relay another typing
// indicator this second.
func (ss *session) allowTyping() bool {
	now := time.Now()
	if now.Sub(ss.typingAt) >= time.Second {
		ss.typingAt, ss.typingN = now, 0
	}
	ss.typingN++
	return ss.typingN <= typingPerSecond
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
	ctx, cancel := ss.requestContext()
	defer cancel()
	if in.Media != "" {
		// Only media the sender uploaded or received may be attached.
		if s.media == nil {
			ss.fail(&wire.Error{Code: wire.CodeNotFound, Message: "no such media", CID: in.CID})
			return
		}
		if err := s.media.Check(ctx, ss.user, in.Media); err != nil {
			code := codeOf(err)
			ss.fail(&wire.Error{Code: code, Message: publicMessage(code, err), CID: in.CID})
			return
		}
	}
	sent, err := ss.dev.Send(ctx, chat.SendRequest{CID: in.CID, To: in.To, Group: in.Group, Body: in.Body, Media: in.Media})
	if err == nil && in.Media != "" {
		err = ss.grantMedia(ctx, in, sent)
	}
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

// grantMedia gives the recipients of a stored message access to its
// media. The message is stored already, so a failure is retried, then
// reported (the client may resend with the same cid: the grant is
// idempotent and the message is not stored twice).
func (ss *session) grantMedia(ctx context.Context, in *wire.Inbound, sent chat.Sent) error {
	g := chat.MediaGrant{Group: in.Group, Seq: sent.Seq}
	if in.Group == "" {
		g = chat.MediaGrant{Users: []string{in.To}}
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = ss.srv.media.Attach(ctx, ss.user, in.Media, g); err == nil {
			return nil
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	return fmt.Errorf("grant access to media %s of message %s: %w", in.Media, sent.ID, err)
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
