package wire

import "encoding/json"

// ServerFrame holds every field of every frame the server sends, so a
// client parses a frame once whatever its type.
type ServerFrame struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	CID      string `json:"cid"`
	From     string `json:"from"`
	To       string `json:"to"`
	Group    string `json:"group"`
	Body     string `json:"body"`
	Media    string `json:"media"`
	TS       int64  `json:"ts"`
	Msg      string `json:"msg"`
	Status   string `json:"status"`
	By       string `json:"by"`
	User     string `json:"user"`
	Online   bool   `json:"online"`
	LastSeen int64  `json:"last_seen"`
	Code     string `json:"code"`
	Message  string `json:"message"`
	// Items are a receipts frame's receipts.
	Items []ReceiptItem `json:"items"`
}

// DecodeServer parses a server frame into f (reset first), as
// encoding/json would.
//
// Frames as the server writes them — a flat object of plain strings,
// integers and booleans, and a receipts frame's items — are read without
// reflection, about four times faster (BenchmarkDecodeServer); anything
// else (escapes, nulls, other nested values, keys in another case) goes
// through encoding/json, so the result is the same either way.
func DecodeServer(data []byte, f *ServerFrame) error {
	*f = ServerFrame{}
	if scanServer(data, f) {
		return nil
	}
	*f = ServerFrame{}
	return json.Unmarshal(data, f)
}

// serverKeys are the keys scanServer reads; a key equal to one of them
// only without regard to case goes to encoding/json.
var serverKeys = [...]string{"type", "id", "cid", "from", "to", "group", "body", "media", "ts", "msg",
	"status", "by", "user", "online", "last_seen", "code", "message", "items"}

// scanServer is DecodeServer's fast path; it reports false for anything it
// leaves to encoding/json.
func scanServer(data []byte, f *ServerFrame) bool {
	p := scanner{b: data}
	return p.object(func(k []byte) bool {
		var dst *string
		var ok bool
		switch string(k) { // does not allocate
		case "type":
			dst = &f.Type
		case "id":
			dst = &f.ID
		case "cid":
			dst = &f.CID
		case "from":
			dst = &f.From
		case "to":
			dst = &f.To
		case "group":
			dst = &f.Group
		case "body":
			dst = &f.Body
		case "media":
			dst = &f.Media
		case "msg":
			dst = &f.Msg
		case "status":
			dst = &f.Status
		case "by":
			dst = &f.By
		case "user":
			dst = &f.User
		case "code":
			dst = &f.Code
		case "message":
			dst = &f.Message
		case "ts":
			f.TS, ok = p.int()
			return ok
		case "last_seen":
			f.LastSeen, ok = p.int()
			return ok
		case "online":
			f.Online, ok = p.bool()
			return ok
		case "items":
			if f.Items != nil {
				// Repeated: encoding/json decodes the second array into
				// the first one's elements; leave that to it.
				return false
			}
			f.Items, ok = p.receiptItems()
			return ok
		default:
			if foldsTo(string(k), serverKeys[:]) {
				return false
			}
			// An unknown field: skip a plain value; anything else goes to
			// the slow path.
			return p.skipPlain()
		}
		v, ok := p.str()
		if ok {
			*dst = string(v)
		}
		return ok
	})
}

// receiptItems reads the items of a receipts frame: an array of flat
// objects of the keys msg, status, by and ts (any other key, or a key of
// them in another case, goes to the slow path).
func (p *scanner) receiptItems() ([]ReceiptItem, bool) {
	items := []ReceiptItem{}
	ok := p.array(func() bool {
		var it ReceiptItem
		ok := p.inner(func(k []byte) bool {
			var dst *string
			switch string(k) {
			case "msg":
				dst = &it.Msg
			case "status":
				dst = &it.Status
			case "by":
				dst = &it.By
			case "ts":
				var ok bool
				it.TS, ok = p.int()
				return ok
			default:
				return false
			}
			v, ok := p.str()
			if ok {
				*dst = string(v)
			}
			return ok
		})
		if ok {
			items = append(items, it)
		}
		return ok
	})
	if !ok {
		return nil, false
	}
	return items, true
}

// int reads an integer of at most 18 digits (no fraction, no exponent: an
// int64 field refuses those), so it cannot overflow.
func (p *scanner) int() (int64, bool) {
	neg := p.eat('-')
	start := p.i
	var n int64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		n = n*10 + int64(p.b[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > 18 || (digits > 1 && p.b[start] == '0') {
		return 0, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

// bool reads true or false.
func (p *scanner) bool() (bool, bool) {
	rest := p.b[p.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		p.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

// skipPlain skips a plain string, an integer or a boolean.
func (p *scanner) skipPlain() bool {
	if p.i >= len(p.b) {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		_, ok := p.str()
		return ok
	case c == 't' || c == 'f':
		_, ok := p.bool()
		return ok
	default:
		_, ok := p.int()
		return ok
	}
}
