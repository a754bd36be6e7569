package delivery

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/wire"
)

// Records are what the message log stores. Their JSON bodies are the frames
// clients receive (documented in docs/subjects.md for backend services); the
// headers below carry what delivery needs without parsing the JSON.
const (
	hdrMsgID = "Nats-Msg-Id"
	// dedupMessage begins a message's Nats-Msg-Id, m:<sender>:<cid> (c: a
	// copy's, r: a receipts record's).
	dedupMessage = "m:"
	// HdrKind is the record kind: KindMessage, KindCopy or KindReceipts.
	HdrKind = "Jc-Kind"
	// HdrFrom is the sender of a message.
	HdrFrom = "Jc-From"
	// HdrTo is the recipient of a message.
	HdrTo = "Jc-To"
	// HdrDevice is the device a message was sent from.
	HdrDevice = "Jc-Device"
	// HdrTS is the server time a message was accepted, in ms.
	HdrTS = "Jc-Ts"
	// HdrID is a message's id when its JSON carries it. Without it the id
	// is "m" + the record's own sequence.
	HdrID = "Jc-Id"
	// HdrGroup is the group of a group message or membership notice.
	HdrGroup = "Jc-Group"
	// HdrEvent is what a membership notice says: EventJoined or EventLeft.
	HdrEvent = "Jc-Event"
	// HdrVersion is the version of the record format that backend services
	// read (docs/subjects.md): RecordVersion on messages, copies and
	// receipts.
	HdrVersion = "Jc-V"
	// RecordVersion is the value of HdrVersion.
	RecordVersion = "1"
)

// Membership notice events.
const (
	EventJoined = "joined"
	EventLeft   = "left"
)

// hdrControl marks a core NATS notice on a live subject (never stored).
const hdrControl = "Jc-Control"

// controlDevices tells the gateways holding a user that its device list
// changed.
const controlDevices = "devices"

// controlFrame carries a frame to relay as is to the online devices of a
// user or the members of a group (typing indicators): never stored, never
// acked.
const controlFrame = "frame"

// Record kinds.
const (
	// KindMessage is a message in its recipient's inbox.
	KindMessage = "msg"
	// KindCopy is a copy of a message in its sender's inbox, for the sender's
	// other devices. It is stored before the message, and its sequence
	// makes the message's id.
	KindCopy = "copy"
	// KindReceipts is a batch of receipts in the inbox of the messages' sender.
	KindReceipts = "rcpt"
	// KindMember is a membership notice in a member's inbox: its sequence is
	// where the member starts (joined) or stops (left) seeing the group.
	// Devices act on it; clients never see it.
	KindMember = "member"
)

// MessageID is the id of the message stored at seq.
func MessageID(seq uint64) string { return "m" + strconv.FormatUint(seq, 10) }

// receiptID is the id of part i of the receipts record stored at seq.
func receiptID(seq uint64, i int) string {
	return "r" + strconv.FormatUint(seq, 10) + "-" + strconv.Itoa(i)
}

// batchID is the id of the receipts record stored at seq as one receipts
// frame: acking it acks all its parts.
func batchID(seq uint64) string { return "r" + strconv.FormatUint(seq, 10) }

// parsedID is a decoded message or receipt id.
type parsedID struct {
	receipt bool
	seq     uint64
	part    int // -1: the whole receipts record (a batch's id)
}

// parseID decodes "m<seq>", "r<seq>-<part>" and "r<seq>".
func parseID(id string) (parsedID, bool) {
	if len(id) < 2 {
		return parsedID{}, false
	}
	switch id[0] {
	case 'm':
		seq, err := strconv.ParseUint(id[1:], 10, 64)
		if err != nil || seq == 0 || id[1] == '0' || id[1] == '+' {
			return parsedID{}, false
		}
		return parsedID{seq: seq}, true
	case 'r':
		s, p, ok := strings.Cut(id[1:], "-")
		if !ok {
			seq, err := strconv.ParseUint(s, 10, 64)
			if err != nil || seq == 0 || s[0] == '0' || s[0] == '+' {
				return parsedID{}, false
			}
			return parsedID{receipt: true, seq: seq, part: -1}, true
		}
		if s == "" || p == "" || s[0] == '0' || s[0] == '+' || p[0] == '+' || (len(p) > 1 && p[0] == '0') {
			return parsedID{}, false
		}
		seq, err1 := strconv.ParseUint(s, 10, 64)
		part, err2 := strconv.Atoi(p)
		if err1 != nil || err2 != nil || seq == 0 || part < 0 || part >= maxReceiptItems {
			return parsedID{}, false
		}
		return parsedID{receipt: true, seq: seq, part: part}, true
	}
	return parsedID{}, false
}

// messageBody is the stored JSON of a 1:1 message.
type messageBody struct {
	Type  string `json:"type"`
	ID    string `json:"id,omitempty"`
	From  string `json:"from"`
	To    string `json:"to,omitempty"`
	Body  string `json:"body"`
	Media string `json:"media,omitempty"`
	TS    int64  `json:"ts"`
}

// appendMessage appends the stored JSON of a message to user to or to a
// group. id is empty when the record's own sequence makes the id.
func appendMessage(dst []byte, id, from, to, group, body, media string, ts int64) []byte {
	dst = append(dst, `{"type":"message",`...)
	if id != "" {
		dst = append(dst, `"id":`...)
		dst = wire.AppendString(dst, id)
		dst = append(dst, ',')
	}
	dst = append(dst, `"from":`...)
	dst = wire.AppendString(dst, from)
	if group != "" {
		dst = append(dst, `,"group":`...)
		dst = wire.AppendString(dst, group)
	} else {
		dst = append(dst, `,"to":`...)
		dst = wire.AppendString(dst, to)
	}
	dst = append(dst, `,"body":`...)
	dst = wire.AppendString(dst, body)
	if media != "" {
		dst = append(dst, `,"media":`...)
		dst = wire.AppendString(dst, media)
	}
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// receiptItem is one receipt inside a receipts record: the items of the
// stored record are those of the receipts frame.
type receiptItem = wire.ReceiptItem

// receiptsBody is the stored JSON of a receipts record: the receipts made
// for one user's messages during one batching window, by any recipients.
type receiptsBody struct {
	Type  string        `json:"type"`
	Items []receiptItem `json:"items"`
}

// maxReceiptItems bounds a receipts record (an ack tracks parts in a uint64).
const maxReceiptItems = 64

// record is a stored record decoded for delivery.
type record struct {
	subject string // the stream subject (chat.u.<user> or chat.g.<group>)
	group   string // for group messages and membership notices
	event   string // for membership notices
	seq     uint64
	idSeq   uint64 // sequence in the message id (seq unless HdrID says otherwise)
	last    uint64 // previous sequence on the same subject (live records only)
	kind    string
	from    string
	to      string
	device  string
	ts      int64
	// frames are what the record's recipients receive: one message frame,
	// or one receipt frame per receipt.
	frames [][]byte
	// items are a receipts record's receipts; batch is the one receipts
	// frame that carries them all, made by batchFrames at the first need.
	items     []receiptItem
	batchOnce sync.Once
	batch     [][]byte
}

// batchFrames returns, for a receipts record, the one receipts frame that
// carries all its receipts, for sessions that take receipts in batches; nil
// for any other record. It is made once, when a first such session needs it,
// so a node none of whose sessions asks for batches never makes it.
func (r *record) batchFrames() [][]byte {
	if len(r.items) == 0 {
		return nil
	}
	r.batchOnce.Do(func() {
		r.batch = [][]byte{wire.AppendReceipts(nil, batchID(r.seq), r.items)}
	})
	return r.batch
}

// decodeRecord turns a stored message (from a direct get or a republish)
// into a record. live says whether Nats-Last-Sequence is the per-subject
// previous sequence (republish) rather than a batch position (direct get).
func decodeRecord(m *nats.Msg, live bool) (*record, error) {
	seq := natsx.Seq(m)
	if seq == 0 {
		return nil, fmt.Errorf("record without sequence on %s", m.Subject)
	}
	if !live {
		return decodeStored(m, seq, m.Header.Get(natsx.HdrSubject))
	}
	r, err := decodeStored(m, seq, "chat."+strings.TrimPrefix(m.Subject, "live."))
	if err != nil {
		return nil, err
	}
	r.last, _ = strconv.ParseUint(m.Header.Get(natsx.HdrLastSequence), 10, 64)
	return r, nil
}

// decodeStored turns the stored message with sequence seq on subject into
// a record.
func decodeStored(m *nats.Msg, seq uint64, subject string) (*record, error) {
	h := m.Header
	r := &record{seq: seq, subject: subject, kind: h.Get(HdrKind), from: h.Get(HdrFrom), to: h.Get(HdrTo), device: h.Get(HdrDevice), group: h.Get(HdrGroup)}
	r.ts, _ = strconv.ParseInt(h.Get(HdrTS), 10, 64)
	r.idSeq = seq
	switch r.kind {
	case KindMessage, KindCopy:
		if len(m.Data) < 2 || m.Data[0] != '{' {
			return nil, fmt.Errorf("record %d: malformed message", seq)
		}
		if id := h.Get(HdrID); id != "" {
			p, ok := parseID(id)
			if !ok || p.receipt {
				return nil, fmt.Errorf("record %d: bad id %q", seq, id)
			}
			r.idSeq = p.seq
			r.frames = [][]byte{m.Data}
			break
		}
		id := MessageID(seq)
		f := make([]byte, 0, len(m.Data)+len(id)+8)
		f = append(f, `{"id":"`...)
		f = append(f, id...)
		f = append(f, `",`...)
		f = append(f, m.Data[1:]...)
		r.frames = [][]byte{f}
	case KindMember:
		// No frames: clients do not see membership records. In an inbox a
		// notice tells the device to start or stop reading a group; on a
		// group's subject it is the group's own account of the change, which
		// devices pass over.
		r.event = h.Get(HdrEvent)
		if strings.HasPrefix(r.subject, natsx.InboxPrefix) && (r.group == "" || (r.event != EventJoined && r.event != EventLeft)) {
			return nil, fmt.Errorf("record %d: malformed membership notice", seq)
		}
	case KindReceipts:
		b, err := decodeReceiptsBody(m.Data)
		if err != nil {
			return nil, fmt.Errorf("record %d: malformed receipts: %w", seq, err)
		}
		if len(b.Items) > maxReceiptItems {
			b.Items = b.Items[:maxReceiptItems]
		}
		r.items = b.Items
		// One buffer for all the frames (each capped, so none grows into
		// the next).
		r.frames = make([][]byte, len(b.Items))
		buf := make([]byte, 0, len(m.Data)+len(b.Items)*48)
		for i, it := range b.Items {
			start := len(buf)
			buf = wire.AppendReceipt(buf, receiptID(seq, i), it.Msg, it.Status, it.By, it.TS)
			r.frames[i] = buf[start:len(buf):len(buf)]
		}
	default:
		return nil, fmt.Errorf("record %d: unknown kind %q", seq, r.kind)
	}
	return r, nil
}
