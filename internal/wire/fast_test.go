package wire

import (
	"encoding/json"
	"reflect"
	"testing"
)

// slowRaw decodes data the reference way.
func slowRaw(data []byte) (raw, error) {
	var r raw
	err := json.Unmarshal(data, &r)
	return r, err
}

func TestScanRawAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		`{"type":"send","cid":"c1","to":"bob","body":"hi"}`,
		` { "type" : "ack" , "ids" : [ "m1" , "r2-0" ] } `,
		`{"type":"send","type":"ack"}`,
		`{"type":"send","extra":"x","body":"ünïcødé ✓"}`,
		`{"users":[],"type":"presence_subscribe"}`,
		`{"type":"send","cid":"c1","to":"bob","body":"hi","ack":["m1","r2-0"]}`,
		`{"ack":[],"ids":["m1"]}`,
		`{}`,
	} {
		var fast raw
		if !scanRaw([]byte(s), &fast) {
			t.Errorf("scanRaw(%s) took the slow path", s)
			continue
		}
		slow, err := slowRaw([]byte(s))
		if err != nil || !reflect.DeepEqual(fast, slow) {
			t.Errorf("scanRaw(%s) = %+v, encoding/json = %+v (%v)", s, fast, slow, err)
		}
	}
	for _, s := range []string{
		`{"body":"esc\"aped"}`, `{"n":1}`, `{"to":null}`, `{"o":{}}`, `{"a":"b"} x`, `{"a":"b",}`,
		`{"ids":["a",1]}`, `{"ACK":["m1"]}`, "{\"body\":\"ctl\x01\"}", "{\"body\":\"bad\xff\"}", `[1]`, ``, `{"a"}`,
	} {
		var fast raw
		if scanRaw([]byte(s), &fast) {
			t.Errorf("scanRaw(%q) accepted what it must leave to encoding/json", s)
		}
	}
}

// FuzzScanRaw checks the fast path against encoding/json: whatever it
// accepts, encoding/json accepts and decodes to the same.
func FuzzScanRaw(f *testing.F) {
	f.Add([]byte(`{"type":"send","cid":"c1","to":"bob","body":"hi"}`))
	f.Add([]byte(`{"type":"ack","ids":["m1","r2-0"]}`))
	f.Add([]byte(`{"users":["a","b"],"x":"y"}`))
	f.Add([]byte(`{"type":"send","ack":["m1"],"cid":"c"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast raw
		if !scanRaw(data, &fast) {
			return
		}
		slow, err := slowRaw(data)
		if err != nil {
			t.Fatalf("scanRaw accepted %q, encoding/json refused it: %v", data, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("scanRaw(%q) = %+v, encoding/json = %+v", data, fast, slow)
		}
	})
}

func BenchmarkDecodeSend(b *testing.B) {
	frame := []byte(`{"type":"send","cid":"lq3k2-1a","to":"user-4711","body":"see you at the station at eight, I will bring the tickets"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSendSlowPath(b *testing.B) {
	frame := []byte(`{"type":"send","cid":"lq3k2-1a","to":"user-4711","body":"see you at the station at eight, I will bring the tickets"}`)
	b.ReportAllocs()
	for b.Loop() {
		var r raw
		if err := json.Unmarshal(frame, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAck(b *testing.B) {
	frame := []byte(`{"type":"ack","ids":["m1042","m1043","m1044","r1045-0","r1045-1"]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}
