package delivery

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/jetchat/jetchat/internal/wire"
)

// The stored JSON of a receipts record is written and read on every
// receipt's way, once per record per node; these do it without reflection.
// Reading takes a fast path for the exact layout appendReceiptsBody writes
// and hands anything else to encoding/json, so every valid record reads the
// same either way (FuzzReceiptsBody checks that).

// appendReceiptsBody appends the stored JSON of a receipts record.
func appendReceiptsBody(dst []byte, items []receiptItem) []byte {
	dst = append(dst, `{"type":"receipts","items":[`...)
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"msg":`...)
		dst = wire.AppendString(dst, it.Msg)
		dst = append(dst, `,"status":`...)
		dst = wire.AppendString(dst, it.Status)
		dst = append(dst, `,"by":`...)
		dst = wire.AppendString(dst, it.By)
		dst = append(dst, `,"ts":`...)
		dst = strconv.AppendInt(dst, it.TS, 10)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// decodeReceiptsBody reads the stored JSON of a receipts record.
func decodeReceiptsBody(data []byte) (receiptsBody, error) {
	if b, ok := scanReceiptsBody(data); ok {
		return b, nil
	}
	var b receiptsBody
	err := json.Unmarshal(data, &b)
	return b, err
}

// scanReceiptsBody reads exactly appendReceiptsBody's layout with strings
// that need no unescaping; it reports false for anything else.
func scanReceiptsBody(data []byte) (receiptsBody, bool) {
	p := rscan{b: data}
	if !p.lit(`{"type":"receipts","items":[`) {
		return receiptsBody{}, false
	}
	b := receiptsBody{Type: "receipts", Items: []receiptItem{}}
	if !p.lit("]}") {
		for {
			var it receiptItem
			var ok bool
			if !p.lit(`{"msg":`) {
				return receiptsBody{}, false
			}
			if it.Msg, ok = p.str(); !ok || !p.lit(`,"status":`) {
				return receiptsBody{}, false
			}
			if it.Status, ok = p.str(); !ok || !p.lit(`,"by":`) {
				return receiptsBody{}, false
			}
			if it.By, ok = p.str(); !ok || !p.lit(`,"ts":`) {
				return receiptsBody{}, false
			}
			if it.TS, ok = p.num(); !ok || !p.lit("}") {
				return receiptsBody{}, false
			}
			b.Items = append(b.Items, it)
			if p.lit("]}") {
				break
			}
			if !p.lit(",") {
				return receiptsBody{}, false
			}
		}
	}
	return b, p.i == len(p.b)
}

// rscan is a cursor over a receipts record.
type rscan struct {
	b []byte
	i int
}

// lit consumes s if the input continues with it.
func (p *rscan) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// str reads a string literal of valid UTF-8 without escapes or control
// characters.
func (p *rscan) str() (string, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", false
	}
	start := p.i + 1
	for j := start; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			s := p.b[start:j]
			if !utf8.Valid(s) {
				return "", false
			}
			p.i = j + 1
			return string(s), true
		case c == '\\' || c < 0x20:
			return "", false
		}
	}
	return "", false
}

// num reads a non-negative integer of at most 18 digits, without leading
// zeros (it fits an int64 and reads as encoding/json reads it).
func (p *rscan) num() (int64, bool) {
	start := p.i
	var v int64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		v = v*10 + int64(p.b[p.i]-'0')
		p.i++
	}
	n := p.i - start
	if n == 0 || n > 18 || (n > 1 && p.b[start] == '0') {
		return 0, false
	}
	return v, true
}
