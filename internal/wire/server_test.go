package wire

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
)

func TestDecodeServerAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	fastFrames := []string{
		`{"type":"message","id":"m5","from":"alice","to":"bob","body":"hi","ts":1764000000000}`,
		`{"type":"sent","cid":"c1","id":"m5","ts":1764000000000}`,
		`{"type":"receipt","id":"r3-0","msg":"m5","status":"read","by":"bob","ts":-5}`,
		`{"type":"presence","user":"bob","online":false,"last_seen":0}`,
		`{"type":"presence","user":"bob","online":true}`,
		`{"type":"error","cid":"c1","code":"bad_request","message":"ünïcødé ✓"}`,
		` { "type" : "typing" , "from" : "a" , "group" : "g" , "extra" : 12 , "more" : true , "x" : "y" } `,
		`{"type":"a","type":"b"}`,
		`{}`,
		`{"type":"receipts","id":"r9","items":[{"msg":"m5","status":"delivered","by":"bob","ts":1764000000000},{"msg":"m6","status":"read","by":"carol","ts":1764000000001}]}`,
		`{"type":"receipts","id":"r9","items":[]}`,
		` {"items" : [ { "ts" : 3 , "by" : "b" , "msg":"m", "status":"s", "msg":"m2" } ] } `,
	}
	for _, s := range fastFrames {
		var fast ServerFrame
		if !scanServer([]byte(s), &fast) {
			t.Errorf("scanServer(%s) took the slow path", s)
			continue
		}
		var slow ServerFrame
		if err := json.Unmarshal([]byte(s), &slow); err != nil || !reflect.DeepEqual(fast, slow) {
			t.Errorf("scanServer(%s) = %+v, encoding/json = %+v (%v)", s, fast, slow, err)
		}
	}
	slowFrames := []string{
		`{"body":"esc\"aped"}`, `{"ts":1.5}`, `{"ts":1e3}`, `{"ts":01}`, `{"ts":-}`, `{"ts":1234567890123456789}`,
		`{"to":null}`, `{"o":{}}`, `{"a":"b"} x`, `{"a":"b",}`, `{"online":"yes"}`, `{"online":tru}`,
		`{"Type":"message"}`, `{"LAST_SEEN":1}`, "{\"body\":\"bad\xff\"}", `[1]`, ``, `{"a"}`, `{"ts":12x}`,
		`{"items":null}`, `{"items":[{"msg":"m","extra":1}]}`, `{"items":[{"MSG":"m"}]}`, `{"items":[{"ts":1.5}]}`,
		`{"items":[{}],}`, `{"items":[{},]}`, `{"items":[{}}`, `{"Items":[]}`, `{"items":{}}`, `{"items":[{"by":"a\"b"}]}`,
		`{"items":[{"msg":"m"}],"items":[{}]}`,
	}
	for _, s := range slowFrames {
		var fast ServerFrame
		if scanServer([]byte(s), &fast) {
			t.Errorf("scanServer(%q) accepted what it must leave to encoding/json", s)
		}
	}
	// Whatever the path, DecodeServer gives encoding/json's answer.
	for _, s := range append(fastFrames, `{"body":"esc\"aped \u00e9","Type":"message","ts":1e3}`, `{"body":"a\nb","ts":7}`,
		`{"items":[{"msg":"m","extra":1}]}`, `{"items":null}`, `{"items":[{"MSG":"m","ts":2}]}`, `{"items":[{"msg":"m"}],"items":[{}]}`) {
		f := ServerFrame{Code: "left over"}
		err := DecodeServer([]byte(s), &f)
		var slow ServerFrame
		serr := json.Unmarshal([]byte(s), &slow)
		if (err == nil) != (serr == nil) || (err == nil && !reflect.DeepEqual(f, slow)) {
			t.Errorf("DecodeServer(%s) = %+v, %v; encoding/json = %+v, %v", s, f, err, slow, serr)
		}
	}
}

// FuzzScanServer checks the fast path against encoding/json: whatever it
// accepts, encoding/json accepts and decodes to the same.
func FuzzScanServer(f *testing.F) {
	f.Add([]byte(`{"type":"message","id":"m5","from":"alice","to":"bob","body":"hi","ts":1764000000000}`))
	f.Add([]byte(`{"type":"presence","user":"bob","online":false,"last_seen":-12}`))
	f.Add([]byte(`{"type":"error","code":"x","message":"y","extra":true,"n":5}`))
	f.Add([]byte(`{"type":"receipts","id":"r9","items":[{"msg":"m5","status":"delivered","by":"bob","ts":1764000000000}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast ServerFrame
		if !scanServer(data, &fast) {
			return
		}
		var slow ServerFrame
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("scanServer accepted %q, encoding/json refused it: %v", data, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("scanServer(%q) = %+v, encoding/json = %+v", data, fast, slow)
		}
	})
}

func BenchmarkDecodeServer(b *testing.B) {
	items := make([]ReceiptItem, 64)
	for i := range items {
		items[i] = ReceiptItem{Msg: "m" + strconv.Itoa(100000+i), Status: StatusDelivered, By: "bob", TS: 1764000000000}
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"message", []byte(`{"type":"message","id":"m5","from":"alice","to":"bob","body":"1764000000000123456|xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","ts":1764000000000}`)},
		{"receipt", AppendReceipt(nil, "r100-0", "m100000", StatusDelivered, "bob", 1764000000000)},
		{"receipts64", AppendReceipts(nil, "r100", items)},
	} {
		b.Run(tc.name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var f ServerFrame
				if err := DecodeServer(tc.data, &f); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/encoding_json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var f ServerFrame
				if err := json.Unmarshal(tc.data, &f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
