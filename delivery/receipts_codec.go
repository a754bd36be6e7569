package delivery

import (
	"encoding/json"

	"github.com/jetchat/jetchat/internal/wire"
)

// The stored JSON of a receipts record is written and read on every
// receipt's way, once per record per node; these do it without reflection.
// Reading takes a fast path for the exact layout appendReceiptsBody writes
// and hands anything else to encoding/json, so every valid record reads the
// same either way (FuzzReceiptsBody checks that).

// appendReceiptsBody appends the stored JSON of a receipts record.
func appendReceiptsBody(dst []byte, items []receiptItem) []byte {
	return wire.AppendReceiptItems(append(dst, receiptsPrefix...), items)
}

// receiptsPrefix begins a receipts record as appendReceiptsBody writes it.
const receiptsPrefix = `{"type":"receipts",`

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
	p := wire.NewScanner(data)
	if !p.Lit(receiptsPrefix + `"items":[`) {
		return receiptsBody{}, false
	}
	b := receiptsBody{Type: "receipts", Items: []receiptItem{}}
	if !p.Lit("]}") {
		for {
			var it receiptItem
			var ok bool
			if !p.Lit(`{"msg":`) {
				return receiptsBody{}, false
			}
			if it.Msg, ok = p.Str(); !ok || !p.Lit(`,"status":`) {
				return receiptsBody{}, false
			}
			if it.Status, ok = p.Str(); !ok || !p.Lit(`,"by":`) {
				return receiptsBody{}, false
			}
			if it.By, ok = p.Str(); !ok || !p.Lit(`,"ts":`) {
				return receiptsBody{}, false
			}
			if it.TS, ok = p.Int(); !ok || !p.Lit("}") {
				return receiptsBody{}, false
			}
			b.Items = append(b.Items, it)
			if p.Lit("]}") {
				break
			}
			if !p.Lit(",") {
				return receiptsBody{}, false
			}
		}
	}
	return b, p.Done()
}
