package gateway

import (
	"context"
	"errors"
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
	if len(in.Ack) > 0 {
		// Acks riding on the send count as an ack frame sent just before
		// it, whatever becomes of the send.
		ss.dev.Ack(in.Ack)
	}
	if ss.lim == nil {
		// An idle session holds no limiter: a fresh one is full anyway.
		ss.lim = s.acquireLimiter(ss.user)
	}
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
	var media chat.MediaGranter
	if s.media != nil {
		media = s.media
	}
	sent, err := chat.SendWithMedia(ctx, media, ss.user, chat.SendRequest{CID: in.CID, To: in.To, Group: in.Group, Body: in.Body, Media: in.Media}, ss.dev.Send)
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
