package svcapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Version is the version of the envelope this package reads and writes.
const Version = 1

// Record headers: what a record is, without parsing its body.
const (
	// HdrVersion is the envelope version ("1"). Records stored before the
	// header existed have none; they are version 1.
	HdrVersion = "Jc-V"
	// HdrKind is the record kind: KindMessage, KindCopy or KindReceipts
	// (others are internal: skip them).
	HdrKind = "Jc-Kind"
	// HdrFrom is the sender of a message.
	HdrFrom = "Jc-From"
	// HdrTo is the recipient of a 1:1 message.
	HdrTo = "Jc-To"
	// HdrGroup is the group of a group message.
	HdrGroup = "Jc-Group"
	// HdrDevice is the device a message was sent from (empty for bots).
	HdrDevice = "Jc-Device"
	// HdrTS is the time the record was stored, in ms since the Unix epoch.
	HdrTS = "Jc-Ts"
	// HdrID is a message's id when the record does not make it itself;
	// without it the id is "m" followed by the record's stream sequence.
	HdrID = "Jc-Id"
)

// Record kinds.
const (
	// KindMessage is a message: in its recipient's inbox (chat.u.<to>) or
	// on its group's subject (chat.g.<group>), once per message. Count
	// these.
	KindMessage = "msg"
	// KindCopy repeats a message in its sender's inbox for the sender's
	// other devices, with the same id. Services usually skip it.
	KindCopy = "copy"
	// KindReceipts is a batch of delivered/read receipts, in the inbox of
	// the messages' sender.
	KindReceipts = "rcpt"
)

// Event is one record of the message log in the v1 envelope.
type Event struct {
	// Version is the envelope version (1).
	Version int `json:"v"`
	// Seq is the record's stream sequence.
	Seq uint64 `json:"seq"`
	// Subject is the record's stream subject: chat.u.<user> (an inbox) or
	// chat.g.<group>.
	Subject string `json:"subject"`
	// Kind is KindMessage, KindCopy, KindReceipts, or a kind this version
	// does not describe (skip it).
	Kind string `json:"kind"`
	// Message is set for KindMessage and KindCopy.
	Message *Message `json:"message,omitempty"`
	// Receipts is set for KindReceipts.
	Receipts []Receipt `json:"receipts,omitempty"`
}

// Message is a chat message as clients see it (the protocol's message
// frame), plus the device it was sent from.
type Message struct {
	ID     string `json:"id"`
	From   string `json:"from"`
	To     string `json:"to,omitempty"`
	Group  string `json:"group,omitempty"`
	Body   string `json:"body"`
	Media  string `json:"media,omitempty"`
	TS     int64  `json:"ts"`
	Device string `json:"device,omitempty"`
}

// Receipt is one delivered or read receipt.
type Receipt struct {
	// ID is the receipt's own id (what the sender's devices ack).
	ID string `json:"id"`
	// Msg is the id of the message it is about.
	Msg string `json:"msg"`
	// Status is "delivered" or "read".
	Status string `json:"status"`
	// By is the recipient who received or read the message.
	By string `json:"by"`
	// To is the message's sender, who gets the receipt.
	To string `json:"to"`
	TS int64  `json:"ts"`
}

// Errors of Decode.
var (
	// ErrVersion: the record is of a newer envelope version than this
	// package knows. Skip (ack) it, or upgrade.
	ErrVersion = errors.New("svcapi: unsupported record version")
	// ErrMalformed: the record cannot be read.
	ErrMalformed = errors.New("svcapi: malformed record")
)

// DecodeMsg decodes a record received from a JetStream consumer.
func DecodeMsg(m jetstream.Msg) (*Event, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return Decode(m.Subject(), md.Sequence.Stream, m.Headers(), m.Data())
}

// DecodeLive decodes a record republished on live.u.<user> or
// live.g.<group> (core NATS). It returns nil and no error for the notices
// that also travel there (header Jc-Control) and are not records.
func DecodeLive(m *nats.Msg) (*Event, error) {
	if m.Header.Get("Jc-Control") != "" {
		return nil, nil
	}
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: no Nats-Sequence on %s", ErrMalformed, m.Subject)
	}
	subject, ok := strings.CutPrefix(m.Subject, "live.")
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a live subject", ErrMalformed, m.Subject)
	}
	return Decode("chat."+subject, seq, m.Header, m.Data)
}

// Decode decodes the record stored at seq on subject. It returns an error
// wrapping ErrVersion or ErrMalformed.
func Decode(subject string, seq uint64, h nats.Header, data []byte) (*Event, error) {
	if v := h.Get(HdrVersion); v != "" && v != "1" {
		return nil, fmt.Errorf("%w: %s %q at %d", ErrVersion, HdrVersion, v, seq)
	}
	ev := &Event{Version: Version, Seq: seq, Subject: subject, Kind: h.Get(HdrKind)}
	ts, _ := strconv.ParseInt(h.Get(HdrTS), 10, 64)
	switch ev.Kind {
	case KindMessage, KindCopy:
		var b Message
		if err := json.Unmarshal(data, &b); err != nil {
			return nil, fmt.Errorf("%w: message at %d: %v", ErrMalformed, seq, err)
		}
		b.ID = h.Get(HdrID)
		if b.ID == "" {
			b.ID = "m" + strconv.FormatUint(seq, 10)
		}
		b.Device = h.Get(HdrDevice)
		if b.TS == 0 {
			b.TS = ts
		}
		ev.Message = &b
	case KindReceipts:
		var b struct {
			Items []Receipt `json:"items"`
		}
		if err := json.Unmarshal(data, &b); err != nil {
			return nil, fmt.Errorf("%w: receipts at %d: %v", ErrMalformed, seq, err)
		}
		owner, _ := strings.CutPrefix(subject, "chat.u.")
		for i := range b.Items {
			b.Items[i].ID = "r" + strconv.FormatUint(seq, 10) + "-" + strconv.Itoa(i)
			b.Items[i].To = owner
		}
		ev.Receipts = b.Items
	}
	return ev, nil
}
