package delivery

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzReceiptsBody checks that the receipts codec reads every input as
// encoding/json does (the fast path may only accept what encoding/json
// reads the same), and that what it writes reads back unchanged.
//
//	go test ./delivery/ -run '^$' -fuzz FuzzReceiptsBody -fuzztime 30s
func FuzzReceiptsBody(f *testing.F) {
	f.Add([]byte(`{"type":"receipts","items":[{"msg":"m1","status":"delivered","by":"bob","ts":1795775914762}]}`), "m1", "read", "bob", int64(5))
	f.Add([]byte(`{"type":"receipts","items":[]}`), "m\"2", "delivered", "b\\o", int64(0))
	f.Add([]byte(`{"type":"receipts","items":[{"msg":"m1","status":"read","by":"é","ts":01}]}`), "\xff", "", "\u2028", int64(-1))
	f.Add([]byte(`{"items":[{"ts":3,"msg":"m1","status":"read","by":"x"}],"type":"receipts"}`), "<&>", "x", "y", int64(1<<62))
	f.Fuzz(func(t *testing.T, data []byte, msg, status, by string, ts int64) {
		var want receiptsBody
		wantErr := json.Unmarshal(data, &want)
		if got, ok := scanReceiptsBody(data); ok {
			if wantErr != nil {
				t.Fatalf("fast path accepted %q, which encoding/json refuses: %v", data, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("fast path read %q as %+v, encoding/json as %+v", data, got, want)
			}
		}
		got, err := decodeReceiptsBody(data)
		if (err == nil) != (wantErr == nil) || (err == nil && !reflect.DeepEqual(got, want)) {
			t.Fatalf("decodeReceiptsBody(%q) = %+v, %v; encoding/json: %+v, %v", data, got, err, want, wantErr)
		}

		items := []receiptItem{{Msg: msg, Status: status, By: by, TS: ts}, {Msg: "m7", Status: "read", By: "carol", TS: 7}}
		out, err := marshalReceipts(items)
		if err != nil {
			t.Fatal(err)
		}
		var back receiptsBody
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("marshalReceipts wrote %q, which encoding/json cannot read: %v", out, err)
		}
		// encoding/json reads invalid UTF-8 as U+FFFD: compare with what
		// it would have written.
		ref, _ := json.Marshal(receiptsBody{Type: "receipts", Items: items})
		var refBack receiptsBody
		json.Unmarshal(ref, &refBack)
		if !reflect.DeepEqual(back, refBack) {
			t.Fatalf("marshalReceipts(%+v) reads back as %+v, want %+v", items, back, refBack)
		}
		if again, err := decodeReceiptsBody(out); err != nil || !reflect.DeepEqual(again, refBack) {
			t.Fatalf("decodeReceiptsBody(marshalReceipts) = %+v, %v; want %+v", again, err, refBack)
		}
	})
}

func TestReceiptsBodyFastPath(t *testing.T) {
	items := []receiptItem{{Msg: "m1", Status: "delivered", By: "bob", TS: 1795775914762}, {Msg: "m2", Status: "read", By: "carol", TS: 1}}
	data, _ := marshalReceipts(items)
	b, ok := scanReceiptsBody(data)
	if !ok || !reflect.DeepEqual(b.Items, items) || b.Type != "receipts" {
		t.Fatalf("fast path on %s = %+v, %v", data, b, ok)
	}
	for _, in := range []string{
		`{"type":"receipts","items":[{"msg":"m\"1","status":"read","by":"b","ts":1}]}`, // escape
		`{"type":"receipts","items":[{"msg":"m1","status":"read","by":"b","ts":1.5}]}`, // not an integer
		`{"type":"receipts", "items":[]}`,                                              // space
		`{"type":"receipts","items":[]} `,                                              // trailing space
	} {
		if _, ok := scanReceiptsBody([]byte(in)); ok {
			t.Errorf("fast path accepted %s", in)
		}
	}
	if _, err := decodeReceiptsBody([]byte(`{"type":"receipts","items":[{"msg":"m1","status":"read","by":"b","ts":"x"}]}`)); err == nil {
		t.Error("a receipts record with a string ts decoded without error")
	}
}
