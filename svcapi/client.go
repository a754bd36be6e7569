package svcapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/ident"
	"github.com/jetchat/jetchat/internal/natsx"
)

// Subjects and names a service uses.
const (
	// Stream is the message log's stream.
	Stream = natsx.StreamMsgs
	// SendPrefix starts the send subjects: SendPrefix + bot.
	SendPrefix = natsx.SvcSendPrefix
	// ConsumerPrefix starts the consumer subjects: ConsumerPrefix +
	// name + "." + scope.
	ConsumerPrefix = natsx.SvcConsumerPrefix
	// PushPrefix starts the push event subjects: PushPrefix + user.
	PushPrefix = natsx.PushPrefix
	// PresencePrefix starts the presence event subjects: PresencePrefix +
	// user.
	PresencePrefix = natsx.PresenceFeedPrefix
	// PresenceGateway is the subject of gateway events.
	PresenceGateway = natsx.PresenceFeedGateway
)

// Inbox is the connection option every service should use: replies to its
// requests (the service API's answers, JetStream's answers, pulled records)
// then arrive under _INBOX.<user>., the only inbox its NATS permissions
// need to allow (nats.conf).
func Inbox(user string) nats.Option { return nats.CustomInboxPrefix("_INBOX." + user) }

// SendRequest is a message a service sends as a bot user: the protocol's
// send frame plus From.
type SendRequest struct {
	// From is the bot user that sends. The request goes to SendPrefix+From.
	From string `json:"from"`
	// CID makes the send idempotent, as for clients: the same From and CID
	// within the dedup window store one message and answer the same id.
	CID string `json:"cid"`
	// To (a user id) or Group (a group id the bot is a member of): exactly
	// one.
	To    string `json:"to,omitempty"`
	Group string `json:"group,omitempty"`
	// Body is at most 64 KiB; it may be empty only when Media is set.
	Body string `json:"body"`
	// Media is a media id the bot uploaded or received.
	Media string `json:"media,omitempty"`
}

// Sent answers a stored send: the protocol's sent frame.
type Sent struct {
	Type string `json:"type"`
	CID  string `json:"cid"`
	ID   string `json:"id"`
	TS   int64  `json:"ts"`
}

// Error is an error answer of the service API: the protocol's error frame.
// Code is one of the protocol's error codes (bad_request, forbidden,
// not_found, too_large, unavailable, internal).
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	CID     string `json:"cid,omitempty"`
}

func (e *Error) Error() string { return "jetchat: " + e.Code + ": " + e.Message }

// reply is any answer of the service API.
type reply struct {
	Type     string `json:"type"`
	CID      string `json:"cid"`
	ID       string `json:"id"`
	TS       int64  `json:"ts"`
	Code     string `json:"code"`
	Message  string `json:"message"`
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	Filter   string `json:"filter"`
}

// Client calls jetchat's service API over a NATS connection.
type Client struct {
	nc *nats.Conn
	js jetstream.JetStream
}

// NewClient returns a Client using nc, which should have been opened with
// the option Inbox.
func NewClient(nc *nats.Conn) (*Client, error) {
	if nc == nil {
		return nil, errors.New("svcapi: NewClient needs a NATS connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Client{nc: nc, js: js}, nil
}

// Send stores a message from req.From and returns once it is durable. An
// answer of jetchat's is returned as an *Error; a missing answer as
// nats.ErrNoResponders (no node serves the API) or a context error. A send
// whose answer was lost is safe to repeat with the same CID.
func (c *Client) Send(ctx context.Context, req SendRequest) (Sent, error) {
	if err := ident.User(req.From); err != nil {
		return Sent{}, &Error{Code: "bad_request", Message: "from: " + err.Error(), CID: req.CID}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Sent{}, err
	}
	r, err := c.request(ctx, SendPrefix+req.From, body)
	if err != nil {
		return Sent{}, err
	}
	if r.Type != "sent" {
		return Sent{}, fmt.Errorf("svcapi: unexpected answer %q to a send", r.Type)
	}
	return Sent{Type: r.Type, CID: r.CID, ID: r.ID, TS: r.TS}, nil
}

// Scope is what a service consumer reads: ScopeAll, ScopeInboxes,
// ScopeGroups, UserScope(user) or GroupScope(group). NATS permissions on
// the consumer subject (which ends with the scope) decide which scopes a
// service may ask for.
type Scope string

// Scopes.
const (
	// ScopeAll reads the whole log (chat.>).
	ScopeAll Scope = "all"
	// ScopeInboxes reads every user's inbox (chat.u.*): 1:1 messages,
	// copies, receipts.
	ScopeInboxes Scope = "users"
	// ScopeGroups reads every group's subject (chat.g.*): group messages.
	ScopeGroups Scope = "groups"
)

// UserScope reads one user's inbox (chat.u.<user>): what a bot needs to
// answer the messages sent to it.
func UserScope(user string) Scope { return Scope("u." + user) }

// GroupScope reads one group's messages (chat.g.<group>).
func GroupScope(group string) Scope { return Scope("g." + group) }

// ConsumerConfig tunes a service consumer. Zero fields take jetchat's
// defaults.
type ConsumerConfig struct {
	// Deliver is where a new consumer starts: "new" (default: records
	// stored from now on) or "all" (the whole retained log). It is ignored
	// when the consumer exists.
	Deliver string `json:"deliver,omitempty"`
	// AckWait is how long a pulled record may stay unacked before it is
	// delivered again (default 30s).
	AckWait time.Duration `json:"-"`
	// MaxAckPending bounds the records pulled and not yet acked, across
	// all instances (default 1000).
	MaxAckPending int `json:"max_ack_pending,omitempty"`
	// MaxDeliver bounds the deliveries of one record (default: no limit).
	MaxDeliver int `json:"max_deliver,omitempty"`
}

type consumerRequest struct {
	ConsumerConfig
	AckWaitMS int64 `json:"ack_wait_ms,omitempty"`
}

// Consumer asks jetchat to create or update the durable pull consumer name
// on the message log, reading scope, and returns it bound for pulling
// (Consume, Fetch, Messages). Every instance of a service calls Consumer
// with the same name and shares the records: each is handed to one
// instance at a time and redelivered when not acked within AckWait. It
// returns an *Error for jetchat's refusals.
func (c *Client) Consumer(ctx context.Context, name string, scope Scope, cfg ConsumerConfig) (jetstream.Consumer, error) {
	req := consumerRequest{ConsumerConfig: cfg, AckWaitMS: cfg.AckWait.Milliseconds()}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	r, err := c.request(ctx, ConsumerPrefix+name+"."+string(scope), body)
	if err != nil {
		return nil, err
	}
	if r.Type != "consumer" {
		return nil, fmt.Errorf("svcapi: unexpected answer %q to a consumer request", r.Type)
	}
	return c.js.Consumer(ctx, r.Stream, r.Consumer)
}

func (c *Client) request(ctx context.Context, subject string, body []byte) (*reply, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	m, err := c.nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return nil, fmt.Errorf("svcapi: %s: %w", subject, err)
	}
	var r reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("svcapi: %s: undecodable answer: %w", subject, err)
	}
	if r.Type == "error" {
		return nil, &Error{Code: r.Code, Message: r.Message, CID: r.CID}
	}
	return &r, nil
}
