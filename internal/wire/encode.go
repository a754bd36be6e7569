package wire

import (
	"strconv"
	"unicode/utf8"
)

// AppendString appends s to dst as a JSON string literal. It escapes like
// encoding/json without HTML escaping and replaces invalid UTF-8 with U+FFFD.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendSent appends a sent frame.
func AppendSent(dst []byte, cid, id string, ts int64) []byte {
	dst = append(dst, `{"type":"sent","cid":`...)
	dst = AppendString(dst, cid)
	dst = append(dst, `,"id":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// AppendError appends an error frame; cid is omitted when empty.
func AppendError(dst []byte, code, message, cid string) []byte {
	dst = append(dst, `{"type":"error","code":`...)
	dst = AppendString(dst, code)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, message)
	if cid != "" {
		dst = append(dst, `,"cid":`...)
		dst = AppendString(dst, cid)
	}
	return append(dst, '}')
}

// AppendReceipt appends a receipt frame.
func AppendReceipt(dst []byte, id, msg, status, by string, ts int64) []byte {
	dst = append(dst, `{"type":"receipt","id":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"msg":`...)
	dst = AppendString(dst, msg)
	dst = append(dst, `,"status":`...)
	dst = AppendString(dst, status)
	dst = append(dst, `,"by":`...)
	dst = AppendString(dst, by)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// AppendReceipts appends a receipts frame: a batch of receipts under one id.
func AppendReceipts(dst []byte, id string, items []ReceiptItem) []byte {
	dst = append(dst, `{"type":"receipts","id":`...)
	dst = AppendString(dst, id)
	return AppendReceiptItems(append(dst, ','), items)
}

// AppendReceiptItems appends the items field of a receipts frame (or of a
// stored receipts record) and the closing brace.
func AppendReceiptItems(dst []byte, items []ReceiptItem) []byte {
	dst = append(dst, `"items":[`...)
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"msg":`...)
		dst = AppendString(dst, it.Msg)
		dst = append(dst, `,"status":`...)
		dst = AppendString(dst, it.Status)
		dst = append(dst, `,"by":`...)
		dst = AppendString(dst, it.By)
		dst = append(dst, `,"ts":`...)
		dst = strconv.AppendInt(dst, it.TS, 10)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// AppendTyping appends a typing frame, to a user or in a group.
func AppendTyping(dst []byte, from, to, group string) []byte {
	dst = append(dst, `{"type":"typing","from":`...)
	dst = AppendString(dst, from)
	if group != "" {
		dst = append(dst, `,"group":`...)
		dst = AppendString(dst, group)
	} else {
		dst = append(dst, `,"to":`...)
		dst = AppendString(dst, to)
	}
	return append(dst, '}')
}

// AppendSend appends a client's send frame.
func AppendSend(dst []byte, cid, to, group, body, media string, ack []string) []byte {
	dst = append(dst, `{"type":"send","cid":`...)
	dst = AppendString(dst, cid)
	if group != "" {
		dst = append(dst, `,"group":`...)
		dst = AppendString(dst, group)
	} else {
		dst = append(dst, `,"to":`...)
		dst = AppendString(dst, to)
	}
	dst = append(dst, `,"body":`...)
	dst = AppendString(dst, body)
	if media != "" {
		dst = append(dst, `,"media":`...)
		dst = AppendString(dst, media)
	}
	if len(ack) > 0 {
		dst = append(dst, `,"ack":`...)
		dst = appendStrings(dst, ack)
	}
	return append(dst, '}')
}

// AppendIDs appends an ack or read frame.
func AppendIDs(dst []byte, typ string, ids []string) []byte {
	dst = append(dst, `{"type":`...)
	dst = AppendString(dst, typ)
	dst = append(dst, `,"ids":`...)
	dst = appendStrings(dst, ids)
	return append(dst, '}')
}

// appendStrings appends a JSON array of strings.
func appendStrings(dst []byte, list []string) []byte {
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, s)
	}
	return append(dst, ']')
}
