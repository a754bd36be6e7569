// Package chat is the contract between jetchat's front door (package
// gateway) and the components behind it (delivery, groups, presence,
// objectstore): the requests and answers they exchange and the errors they
// return. The gateway maps these errors to protocol error codes in one place;
// components never import each other or the gateway.
package chat

import (
	"context"
	"encoding/json"
	"errors"
	"io"
)

// Errors shared by all components. Wrap them with %w; test with errors.Is.
var (
	// ErrBadRequest: an argument is malformed.
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound: the thing does not exist or the caller may not see it.
	ErrNotFound = errors.New("not found")
	// ErrForbidden: the caller may see the thing but not do this to it.
	ErrForbidden = errors.New("forbidden")
	// ErrConflict: the request conflicts with the current state.
	ErrConflict = errors.New("conflict")
	// ErrTooLarge: a size limit was exceeded.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: a store (JetStream, Postgres) did not answer in time.
	ErrUnavailable = errors.New("unavailable")
	// ErrClosed: the device or service is closed.
	ErrClosed = errors.New("closed")
	// ErrReplaced ends a session whose device connected again.
	ErrReplaced = errors.New("device connected again")
	// ErrSlowClient ends a session whose send queue overflowed.
	ErrSlowClient = errors.New("client too slow")
	// ErrShutdown ends sessions when the node shuts down.
	ErrShutdown = errors.New("node shutting down")
)

// Sink is where a device's frames go: a client session's send queue.
type Sink interface {
	// Deliver queues one encoded frame. It must not block; it returns false
	// when the queue is full.
	Deliver(frame []byte) bool
	// WaitRoom blocks until the queue has room for a burst of frames, or
	// returns ctx's error, or an error once the session is closing.
	WaitRoom(ctx context.Context) error
	// Close ends the session for reason (ErrReplaced, ErrSlowClient,
	// ErrShutdown). It must not block and must not call back into the
	// Device.
	Close(reason error)
}

// ReceiptBatcher is implemented by a Sink whose client takes receipts in
// batches: each stored batch of receipts as one receipts frame, acked by the
// batch's id, instead of one receipt frame per receipt.
type ReceiptBatcher interface {
	ReceiptBatches() bool
}

// SendRequest is a validated send of one message.
type SendRequest struct {
	CID   string
	To    string // user id, for a 1:1 message
	Group string // group id, for a group message
	Body  string
	Media string
}

// Sent describes a stored message.
type Sent struct {
	ID string
	TS int64
	// Seq is the message's position in the log (for access grants).
	Seq uint64
	// Duplicate is set when the same user sent the same cid before: nothing
	// was stored again and ID and TS are the original's.
	Duplicate bool
}

// Device is a connected device as the gateway drives it.
type Device interface {
	// Send stores a message and returns once it is durable.
	Send(ctx context.Context, req SendRequest) (Sent, error)
	// Ack acknowledges delivered frames by id.
	Ack(ids []string)
	// Read marks received messages read.
	Read(ctx context.Context, ids []string) error
	// Typing relays a typing indicator to user to or to group's members.
	Typing(ctx context.Context, to, group string) error
	// Close detaches the device; idempotent.
	Close()
}

// HistoryQuery selects a page of a conversation.
type HistoryQuery struct {
	// With is the other user of a 1:1 conversation.
	With string
	// Group is the group of a group conversation.
	Group string
	// Before, when set, is a message id: only older messages are returned.
	Before string
	// Limit is the page size.
	Limit int
}

// History is a page of messages, newest first, each a message frame.
type History []json.RawMessage

// RecipientStatus is one recipient's progress with a message.
type RecipientStatus struct {
	User   string `json:"user"`
	Status string `json:"status"`
	TS     int64  `json:"ts"`
}

// MessageStatus is a message's status per recipient.
type MessageStatus struct {
	ID         string            `json:"id"`
	Status     string            `json:"status"`
	Recipients []RecipientStatus `json:"recipients"`
}

// Member is one member of a group.
type Member struct {
	User string `json:"user"`
	Role string `json:"role"` // "admin" or "member"
}

// Group roles.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Group is a group as its members see it.
type Group struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Members []Member `json:"members"`
}

// PresenceState is a user's online state as one viewer may see it.
type PresenceState struct {
	User   string `json:"user"`
	Online bool   `json:"online"`
	// LastSeen is the time of the user's last activity (ms), 0 while online
	// or when the user hides it.
	LastSeen int64 `json:"last_seen,omitempty"`
}

// Frames receives pre-encoded frames: a session, as presence subscriber.
type Frames interface {
	// Deliver queues a frame; false when the session's queue is full.
	Deliver(frame []byte) bool
}

// MediaInfo describes a stored media object.
type MediaInfo struct {
	ID     string `json:"id"`
	Size   int64  `json:"size"`
	MIME   string `json:"mime"`
	SHA256 string `json:"sha256"` // hex
}

// MediaObject is a readable media object.
type MediaObject interface {
	// Info describes the object.
	Info() MediaInfo
	// NewReader streams length bytes from offset; memory use does not
	// depend on the object's size.
	NewReader(ctx context.Context, offset, length int64) (io.ReadCloser, error)
}

// MediaGrant names who may read media attached to a message.
type MediaGrant struct {
	// Users are the recipients of a 1:1 message.
	Users []string
	// Group is the group of a group message: its members at Seq may read.
	Group string
	// Seq is the message log position of the group message's send (members
	// at that point may read).
	Seq uint64
}

// Interval is a stretch of a user's membership of a group, in message-log
// positions: the user sees the group's records with From < seq < To (To 0:
// still a member). From and To are the positions of the membership notices
// in the user's inbox.
type Interval struct {
	Group string
	From  uint64
	To    uint64
}
