package wire

import (
	"encoding/json"
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
	}
	for _, s := range fastFrames {
		var fast ServerFrame
		if !scanServer([]byte(s), &fast) {
			t.Errorf("scanServer(%s) took the slow path", s)
			continue
		}
		var slow ServerFrame
		if err := json.Unmarshal([]byte(s), &slow); err != nil || fast != slow {
			t.Errorf("scanServer(%s) = %+v, encoding/json = %+v (%v)", s, fast, slow, err)
		}
	}
	slowFrames := []string{
		`{"body":"esc\"aped"}`, `{"ts":1.5}`, `{"ts":1e3}`, `{"ts":01}`, `{"ts":-}`, `{"ts":1234567890123456789}`,
		`{"to":null}`, `{"o":{}}`, `{"a":"b"} x`, `{"a":"b",}`, `{"online":"yes"}`, `{"online":tru}`,
		`{"Type":"message"}`, `{"LAST_SEEN":1}`, "{\"body\":\"bad\xff\"}", `[1]`, ``, `{"a"}`, `{"ts":12x}`,
	}
	for _, s := range slowFrames {
		var fast ServerFrame
		if scanServer([]byte(s), &fast) {
			t.Errorf("scanServer(%q) accepted what it must leave to encoding/json", s)
		}
	}
	// Whatever the path, DecodeServer gives encoding/json's answer.
	for _, s := range append(fastFrames, `{"body":"esc\"aped \u00e9","Type":"message","ts":1e3}`, `{"body":"a\nb","ts":7}`) {
		f := ServerFrame{Code: "left over"}
		err := DecodeServer([]byte(s), &f)
		var slow ServerFrame
		serr := json.Unmarshal([]byte(s), &slow)
		if (err == nil) != (serr == nil) || (err == nil && f != slow) {
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
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast ServerFrame
		if !scanServer(data, &fast) {
			return
		}
		var slow ServerFrame
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("scanServer accepted %q, encoding/json refused it: %v", data, err)
		}
		if fast != slow {
			t.Fatalf("scanServer(%q) = %+v, encoding/json = %+v", data, fast, slow)
		}
	})
}

func BenchmarkDecodeServer(b *testing.B) {
	data := []byte(`{"type":"message","id":"m5","from":"alice","to":"bob","body":"1764000000000123456|xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","ts":1764000000000}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var f ServerFrame
			if err := DecodeServer(data, &f); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var f ServerFrame
			if err := json.Unmarshal(data, &f); err != nil {
				b.Fatal(err)
			}
		}
	})
}
