package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/ident"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/wire"
)

// Sender stores messages on behalf of services: delivery.Service.
type Sender interface {
	// SendAs stores a message from user from, exactly as a client's send.
	SendAs(ctx context.Context, from string, req chat.SendRequest) (chat.Sent, error)
}

// Media is what a bot's send needs of the media store (objectstore.Store):
// the same checks and grants as a client's send.
type Media interface {
	// Check returns nil when sender may attach id, else an error wrapping
	// chat.ErrNotFound.
	Check(ctx context.Context, sender, id string) error
	// Attach grants the message's recipients access to id; idempotent.
	Attach(ctx context.Context, sender, id string, g chat.MediaGrant) error
}

// API serves the service API on every node: sends as bots and consumer
// set-up. Create it with NewAPI and run it with Run.
type API struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	send  Sender
	media Media // nil: media cannot be attached
	log   *slog.Logger
	ready chan struct{} // closed once subscribed
}

// NewAPI returns an API that stores through send. media may be nil: sends
// with media are then answered not_found.
func NewAPI(cfg Config, nc *nats.Conn, js jetstream.JetStream, send Sender, media Media, log *slog.Logger) (*API, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil || send == nil {
		return nil, errors.New("service: NewAPI needs a NATS connection, JetStream and a sender")
	}
	if log == nil {
		log = slog.Default()
	}
	return &API{cfg: cfg, nc: nc, js: js, send: send, media: media, log: log.With("component", "service-api"), ready: make(chan struct{})}, nil
}

// Ready is closed once Run's subscriptions are registered with the server.
func (a *API) Ready() <-chan struct{} { return a.ready }

// Run serves requests until ctx ends, then stops taking new ones, answers
// those already received and returns. It returns an error when it cannot
// subscribe.
func (a *API) Run(ctx context.Context) error {
	// A full channel drops requests (a slow consumer): the requester times out
	// and retries, which a cid makes safe.
	ch := make(chan *nats.Msg, 1024)
	var subs []*nats.Subscription
	for _, subj := range []string{natsx.SvcSendPrefix + "*", natsx.SvcConsumerPrefix + ">"} {
		sub, err := a.nc.ChanQueueSubscribe(subj, natsx.SvcQueue, ch)
		if err != nil {
			for _, s := range subs {
				s.Unsubscribe()
			}
			return fmt.Errorf("service: subscribe %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	if err := a.nc.Flush(); err != nil {
		a.log.Warn("flush subscriptions", "err", err)
	}
	close(a.ready)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < a.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case m := <-ch:
					a.handle(m)
				case <-stop:
					return
				}
			}
		}()
	}
	<-ctx.Done()
	for _, s := range subs {
		s.Unsubscribe() // nothing more arrives in ch
	}
	// Answer what was received already.
	for done := false; !done; {
		select {
		case m := <-ch:
			a.handle(m)
		default:
			done = true
		}
	}
	close(stop)
	wg.Wait()
	return nil
}

func (a *API) handle(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.RequestTimeout)
	defer cancel()
	var answer []byte
	switch {
	case strings.HasPrefix(m.Subject, natsx.SvcSendPrefix):
		answer = a.handleSend(ctx, strings.TrimPrefix(m.Subject, natsx.SvcSendPrefix), m.Data)
	case strings.HasPrefix(m.Subject, natsx.SvcConsumerPrefix):
		answer = a.handleConsumer(ctx, strings.TrimPrefix(m.Subject, natsx.SvcConsumerPrefix), m.Data)
	default:
		return
	}
	if m.Reply == "" {
		return
	}
	if err := a.nc.Publish(m.Reply, answer); err != nil {
		a.log.Warn("answer a service request", "subject", m.Subject, "err", err)
	}
}

// errorAnswer encodes err as an error frame.
func (a *API) errorAnswer(err error, cid string) []byte {
	code := codeOf(err)
	if code == wire.CodeInternal || code == wire.CodeUnavailable {
		a.log.Warn("service request failed", "err", err)
	}
	return wire.AppendError(nil, code, publicMessage(code, err), cid)
}

// sendHead is what a send request carries besides the send frame's fields.
type sendHead struct {
	From *string `json:"from"`
	Type *string `json:"type"`
}

// handleSend stores a message from bot: the request is a send frame (its
// "type" may be left out) with "from", validated by the same decoder as a
// client's frames.
func (a *API) handleSend(ctx context.Context, bot string, data []byte) []byte {
	in, err := decodeSendRequest(bot, data)
	if err != nil {
		cid := ""
		if in != nil {
			cid = in.CID
		}
		return a.errorAnswer(err, cid)
	}
	if !isBot(a.cfg.Bots, bot) {
		return a.errorAnswer(fmt.Errorf("%w: %q is not a user services may send as", ErrNotBot, bot), in.CID)
	}
	var media chat.MediaGranter
	if a.media != nil {
		media = a.media
	}
	sent, err := chat.SendWithMedia(ctx, media, bot, chat.SendRequest{CID: in.CID, To: in.To, Group: in.Group, Body: in.Body, Media: in.Media},
		func(ctx context.Context, req chat.SendRequest) (chat.Sent, error) {
			return a.send.SendAs(ctx, bot, req)
		})
	if err != nil {
		return a.errorAnswer(err, in.CID)
	}
	return wire.AppendSent(make([]byte, 0, 64+len(in.CID)), in.CID, sent.ID, sent.TS)
}

// decodeSendRequest validates a send request to bot. On error the returned
// frame, when not nil, carries the cid to answer with.
func decodeSendRequest(bot string, data []byte) (*wire.Inbound, error) {
	if err := ident.User(bot); err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "send subject: %v", err)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, wire.Errorf(wire.CodeBadRequest, "request is not a JSON object")
	}
	var head sendHead
	if err := json.Unmarshal(data, &head); err != nil {
		// wire.Decode below describes the problem.
		head = sendHead{}
	}
	if head.Type != nil && *head.Type != wire.TypeSend {
		return nil, wire.Errorf(wire.CodeBadRequest, "request type %q: want send or none", *head.Type)
	}
	// The request is a send frame without (or with) its type: decode it
	// with the clients' decoder, so that it is validated exactly like a
	// client's send.
	frame := data
	if head.Type == nil {
		frame = make([]byte, 0, len(data)+16)
		frame = append(frame, `{"type":"send"`...)
		if rest := bytes.TrimSpace(data[1:]); len(rest) > 0 && rest[0] != '}' {
			frame = append(frame, ',')
		}
		frame = append(frame, data[1:]...)
	}
	in, err := wire.Decode(frame)
	if err != nil {
		var werr *wire.Error
		if errors.As(err, &werr) {
			return &wire.Inbound{CID: werr.CID}, err
		}
		return nil, err
	}
	if len(in.Ack) > 0 {
		return in, &wire.Error{Code: wire.CodeBadRequest, Message: "a service's send cannot carry ack: a service has no device to acknowledge for", CID: in.CID}
	}
	if head.From != nil && *head.From != bot {
		return in, &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("from %q does not match the subject's bot %q", clip(*head.From), bot), CID: in.CID}
	}
	return in, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// consumerRequest is the optional body of a consumer request.
type consumerRequest struct {
	Deliver       string `json:"deliver"`
	AckWaitMS     int64  `json:"ack_wait_ms"`
	MaxAckPending int    `json:"max_ack_pending"`
	MaxDeliver    int    `json:"max_deliver"`
}

// consumerAnswer answers a consumer request.
type consumerAnswer struct {
	Type     string `json:"type"`
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	Filter   string `json:"filter"`
}

// Limits of service consumers.
const (
	maxAckPendingLimit = 10000
	maxAckWait         = time.Hour
)

// handleConsumer creates or updates the pull consumer named in the subject
// (<name>.<scope>), filtered to its scope.
func (a *API) handleConsumer(ctx context.Context, rest string, data []byte) []byte {
	name, scope, _ := strings.Cut(rest, ".")
	if !ident.ValidToken(name) {
		return a.errorAnswer(wire.Errorf(wire.CodeBadRequest, "consumer name %q must match ^[A-Za-z0-9_-]{1,64}$", clip(name)), "")
	}
	if strings.HasPrefix(strings.ToLower(name), natsx.ConsumerReserved) {
		return a.errorAnswer(fmt.Errorf("%w: names starting with %q are jetchat's own", ErrReserved, natsx.ConsumerReserved), "")
	}
	filter, ok := scopeFilter(scope)
	if !ok {
		return a.errorAnswer(wire.Errorf(wire.CodeBadRequest, "consumer scope %q: want all, users, groups, u.<user> or g.<group>", clip(scope)), "")
	}
	var req consumerRequest
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &req); err != nil {
			return a.errorAnswer(wire.Errorf(wire.CodeBadRequest, "consumer request is not a JSON object of the API"), "")
		}
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "jetchat service consumer (made through " + natsx.SvcConsumerPrefix + name + "." + scope + ")",
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
		MaxDeliver:    -1,
		Replicas:      a.cfg.Replicas,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	switch req.Deliver {
	case "", "new":
	case "all":
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	default:
		return a.errorAnswer(wire.Errorf(wire.CodeBadRequest, "deliver %q: want new or all", clip(req.Deliver)), "")
	}
	if req.AckWaitMS != 0 {
		d := time.Duration(req.AckWaitMS) * time.Millisecond
		if d < time.Second || d > maxAckWait {
			return a.errorAnswer(wire.Errorf(wire.CodeBadRequest, "ack_wait_ms must be between 1000 and %d", maxAckWait.Milliseconds()), "")
		}
		cfg.AckWait = d
	}
	if req.MaxAckPending != 0 {
		if req.MaxAckPending < 1 || req.MaxAckPending > maxAckPendingLimit {
			return a.errorAnswer(wire.Errorf(wire.CodeBadRequest, "max_ack_pending must be between 1 and %d", maxAckPendingLimit), "")
		}
		cfg.MaxAckPending = req.MaxAckPending
	}
	if req.MaxDeliver != 0 {
		if req.MaxDeliver < 1 {
			return a.errorAnswer(wire.Errorf(wire.CodeBadRequest, "max_deliver must be positive"), "")
		}
		cfg.MaxDeliver = req.MaxDeliver
	}
	// Where an existing consumer starts cannot change: keep it.
	if c, err := a.js.Consumer(ctx, natsx.StreamMsgs, name); err == nil {
		old := c.CachedInfo().Config
		if old.DeliverSubject != "" {
			return a.errorAnswer(fmt.Errorf("%w: consumer %s exists and is not a pull consumer", chat.ErrConflict, name), "")
		}
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return a.errorAnswer(fmt.Errorf("look up consumer %s: %w: %v", name, chat.ErrUnavailable, err), "")
	}
	if _, err := a.js.CreateOrUpdateConsumer(ctx, natsx.StreamMsgs, cfg); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code == 400 {
			return a.errorAnswer(wire.Errorf(wire.CodeBadRequest, "consumer %s: %s", name, apiErr.Description), "")
		}
		return a.errorAnswer(fmt.Errorf("create consumer %s: %w: %v", name, chat.ErrUnavailable, err), "")
	}
	a.log.Info("service consumer ready", "consumer", name, "filter", filter)
	b, _ := json.Marshal(consumerAnswer{Type: "consumer", Stream: natsx.StreamMsgs, Consumer: name, Filter: filter})
	return b
}

// scopeFilter maps a consumer scope to its filter subject on the log.
func scopeFilter(scope string) (string, bool) {
	switch scope {
	case "all":
		return "chat.>", true
	case "users":
		return natsx.InboxPrefix + "*", true
	case "groups":
		return natsx.GroupPrefix + "*", true
	}
	kind, id, ok := strings.Cut(scope, ".")
	if !ok || !ident.ValidToken(id) {
		return "", false
	}
	switch kind {
	case "u":
		return natsx.Inbox(id), true
	case "g":
		return natsx.Group(id), true
	}
	return "", false
}
