package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/svcapi"
)

// Presence tells whether a user has a connected device: presence.Tracker.
type Presence interface {
	// Get returns user's presence as viewer sees it.
	Get(ctx context.Context, viewer, user string) (chat.PresenceState, error)
}

// Members tells who was in a group when a message was stored:
// groups.Store.
type Members interface {
	// MembersAt returns the members of group at log position seq.
	MembersAt(ctx context.Context, group string, seq uint64) ([]string, error)
}

// Pusher is the push hook: every node runs one, and they share the durable
// consumer natsx.ConsumerPush on the message log. For each message stored
// for a user who is offline — the recipient of a 1:1 message, or each
// member of the group but the sender at the message's position — it
// publishes a svcapi.PushEvent on jetchat.push.v1.<user>, then acks the
// record; a node that dies before the ack leaves the record to another
// node, so an event may repeat (never be skipped while a push sender
// listens).
type Pusher struct {
	cfg      PushConfig
	nc       *nats.Conn
	js       jetstream.JetStream
	presence Presence
	members  Members // nil: group messages are skipped
	log      *slog.Logger
}

// NewPusher returns a Pusher. members may be nil (no groups).
func NewPusher(cfg PushConfig, nc *nats.Conn, js jetstream.JetStream, presence Presence, members Members, log *slog.Logger) (*Pusher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil || presence == nil {
		return nil, errors.New("service: NewPusher needs a NATS connection, JetStream and presence")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Pusher{cfg: cfg, nc: nc, js: js, presence: presence, members: members, log: log.With("component", "push")}, nil
}

// PushConsumer is the configuration of the push hook's consumer. It starts
// with the records stored after its creation: turning the hook on does not
// notify about the retained past.
func PushConsumer(replicas int, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       natsx.ConsumerPush,
		Description:   "jetchat push hook: one event on jetchat.push.v1.<user> per message stored for an offline user; shared by every node",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: 1000,
		MaxDeliver:    -1,
		Replicas:      replicas,
	}
}

// Run creates the push consumer when missing and handles its records until
// ctx ends; then it finishes the record in hand and returns. It returns an
// error when the consumer cannot be created or consumed.
func (p *Pusher) Run(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cons, err := p.js.CreateOrUpdateConsumer(cctx, natsx.StreamMsgs, PushConsumer(p.cfg.Replicas, p.cfg.AckWait))
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("service: push consumer: %w", err)
	}
	// Records in hand finish under their own timeout, not ctx's: a record
	// half done at shutdown is finished or left unacked, never dropped.
	cc, err := cons.Consume(func(m jetstream.Msg) { p.handle(m) },
		jetstream.PullMaxMessages(64),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoHeartbeat) {
				p.log.Debug("push consumer", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("service: consume push records: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-time.After(30 * time.Second):
		cc.Stop()
	}
	return nil
}

// handle publishes the push events of one record, then acks it; on a
// failure it asks for redelivery later.
func (p *Pusher) handle(m jetstream.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckWait-time.Second/2)
	defer cancel()
	if err := p.push(ctx, m); err != nil {
		p.log.Warn("push events of a record; retrying", "subject", m.Subject(), "err", err)
		m.NakWithDelay(time.Second)
		return
	}
	m.Ack()
}

// messageFields are the parts of a stored message's JSON the events may
// use.
type messageFields struct {
	Body  string `json:"body"`
	Media string `json:"media"`
}

func (p *Pusher) push(ctx context.Context, m jetstream.Msg) error {
	h := m.Headers()
	if h.Get(svcapi.HdrKind) != svcapi.KindMessage {
		return nil // copies, receipts and membership records notify nobody
	}
	if v := h.Get(svcapi.HdrVersion); v != "" && v != "1" {
		return nil
	}
	md, err := m.Metadata()
	if err != nil {
		return nil // not a JetStream record: nothing to do
	}
	ts, _ := strconv.ParseInt(h.Get(svcapi.HdrTS), 10, 64)
	if p.cfg.Now().Sub(time.UnixMilli(ts)) > p.cfg.MaxAge {
		return nil
	}
	from, to, group := h.Get(svcapi.HdrFrom), h.Get(svcapi.HdrTo), h.Get(svcapi.HdrGroup)
	id := h.Get(svcapi.HdrID)
	if id == "" {
		id = "m" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	var recipients []string
	switch {
	case group != "":
		if p.members == nil {
			return nil
		}
		all, err := p.members.MembersAt(ctx, group, md.Sequence.Stream)
		if err != nil {
			return fmt.Errorf("members of %s at %d: %w", group, md.Sequence.Stream, err)
		}
		for _, u := range all {
			if u != from {
				recipients = append(recipients, u)
			}
		}
	case to != "" && to != from:
		recipients = []string{to}
	}
	if len(recipients) == 0 {
		return nil
	}
	offline, err := p.offline(ctx, recipients)
	if err != nil || len(offline) == 0 {
		return err
	}
	var f messageFields
	if err := json.Unmarshal(m.Data(), &f); err != nil {
		return nil // undecodable record: nothing sensible to announce
	}
	ev := svcapi.PushEvent{V: svcapi.Version, Type: "push", From: from, Msg: id, Group: group, TS: ts, Media: f.Media != ""}
	if p.cfg.Preview > 0 {
		ev.Preview = preview(f.Body, p.cfg.Preview)
	}
	for _, u := range offline {
		ev.User = u
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		out := nats.NewMsg(natsx.Push(u))
		out.Data = data
		out.Header.Set(nats.MsgIdHdr, "push:"+u+":"+id)
		// A core publish: the ack that follows on the same connection
		// reaches the server after it.
		if err := p.nc.PublishMsg(out); err != nil {
			return fmt.Errorf("publish push event for %s: %w", u, err)
		}
	}
	return nil
}

// offline returns the users of us with no connected device, checking up to
// PushConfig.Parallel at once.
func (p *Pusher) offline(ctx context.Context, us []string) ([]string, error) {
	off := make([]bool, len(us))
	errs := make([]error, len(us))
	sem := make(chan struct{}, p.cfg.Parallel)
	var wg sync.WaitGroup
	for i, u := range us {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			st, err := p.presence.Get(ctx, u, u)
			off[i], errs[i] = err == nil && !st.Online, err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	var out []string
	for i, u := range us {
		if off[i] {
			out = append(out, u)
		}
	}
	return out, nil
}

// preview is the first n characters of body.
func preview(body string, n int) string {
	if utf8.RuneCountInString(body) <= n {
		return body
	}
	i := 0
	for k := 0; k < n; k++ {
		_, size := utf8.DecodeRuneInString(body[i:])
		i += size
	}
	return body[:i] + "…"
}
