package wire

import "encoding/json"

// Frame types sent by clients.
const (
	TypeSend                = "send"
	TypeAck                 = "ack"
	TypeRead                = "read"
	TypeTyping              = "typing"
	TypePresenceSubscribe   = "presence_subscribe"
	TypePresenceUnsubscribe = "presence_unsubscribe"
)

// Frame types sent by the server.
const (
	TypeHello   = "hello"
	TypeSent    = "sent"
	TypeMessage = "message"
	TypeReceipt = "receipt"
	// TypeReceipts is a batch of receipts in one frame, for sessions that
	// ask for it (ReceiptsBatch).
	TypeReceipts = "receipts"
	TypePresence = "presence"
	TypeError    = "error"
)

// How a session takes receipts: the receipts query parameter of the
// WebSocket upgrade and the receipts field of hello.
const (
	// ReceiptsSingle: one receipt frame per receipt (the default).
	ReceiptsSingle = "single"
	// ReceiptsBatch: one receipts frame per stored batch of receipts,
	// acknowledged by the batch's id.
	ReceiptsBatch = "batch"
)

// Receipt statuses.
const (
	StatusSent      = "sent"
	StatusDelivered = "delivered"
	StatusRead      = "read"
)

// Error codes, the same on the WebSocket and in HTTP error bodies.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeTooLarge     = "too_large"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
	// CodeConflict is an HTTP-only extension, answered with 409.
	CodeConflict = "conflict"
)

// Limits of the protocol that are not configurable.
const (
	// MaxBody is the largest message body in bytes.
	MaxBody = 64 << 10
	// MaxFrame is the largest frame a client may send, in bytes.
	MaxFrame = 128 << 10
	// MaxIDs is the most ids one ack or read frame may carry.
	MaxIDs = 4096
	// MaxPresenceUsers is the most users one presence frame may name.
	MaxPresenceUsers = 256
)

// Inbound is a decoded and validated client frame. Only the fields of its
// Type are set.
type Inbound struct {
	Type  string
	CID   string   // send
	To    string   // send, typing
	Group string   // send, typing
	Body  string   // send
	Media string   // send
	IDs   []string // ack, read
	Ack   []string // send: ids acked with it, before the message is sent
	Users []string // presence_subscribe, presence_unsubscribe
}

// Hello is the first frame of every session.
type Hello struct {
	Type    string `json:"type"`
	User    string `json:"user"`
	Device  string `json:"device"`
	Gateway string `json:"gateway"`
	TS      int64  `json:"ts"`
	// Receipts is "batch" when the session takes receipts frames
	// (ReceiptsBatch); omitted otherwise.
	Receipts string `json:"receipts,omitempty"`
}

// Sent answers a send once the message is durably stored.
type Sent struct {
	Type string `json:"type"`
	CID  string `json:"cid"`
	ID   string `json:"id"`
	TS   int64  `json:"ts"`
}

// Message is a chat message as clients see it, on the WebSocket and in
// history answers.
type Message struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	Group string `json:"group,omitempty"`
	Body  string `json:"body"`
	Media string `json:"media,omitempty"`
	TS    int64  `json:"ts"`
}

// Receipt tells a sender that a recipient got or read a message.
type Receipt struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Msg    string `json:"msg"`
	Status string `json:"status"`
	By     string `json:"by"`
	TS     int64  `json:"ts"`
}

// Receipts is a batch of receipts in one frame: the receipts stored
// together for one user's messages. Acking its id acks them all.
type Receipts struct {
	Type  string        `json:"type"`
	ID    string        `json:"id"`
	Items []ReceiptItem `json:"items"`
}

// ReceiptItem is one receipt of a receipts frame: a receipt frame's
// fields but its own type and id.
type ReceiptItem struct {
	Msg    string `json:"msg"`
	Status string `json:"status"`
	By     string `json:"by"`
	TS     int64  `json:"ts"`
}

// Typing relays a typing indicator.
type Typing struct {
	Type  string `json:"type"`
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	Group string `json:"group,omitempty"`
}

// Presence is a user's online state.
type Presence struct {
	Type     string `json:"type"`
	User     string `json:"user"`
	Online   bool   `json:"online"`
	LastSeen int64  `json:"last_seen,omitempty"`
}

// ErrorFrame reports a failed frame.
type ErrorFrame struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	CID     string `json:"cid,omitempty"`
}

// Envelope reads only the type of a server frame, so a client can pick the
// struct to decode into.
type Envelope struct {
	Type string `json:"type"`
}

// PeekType is a helper for clients: it returns the frame's type and leaves the
// rest for a second, typed json.Unmarshal.
func PeekType(data []byte) (string, error) {
	var e Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return "", err
	}
	return e.Type, nil
}
