package wire

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestDecodeValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Inbound
	}{
		{`{"type":"send","cid":"c1","to":"bob","body":"hi"}`, Inbound{Type: "send", CID: "c1", To: "bob", Body: "hi"}},
		{`{"type":"send","cid":"c1","group":"g1","body":"hi","extra":1}`, Inbound{Type: "send", CID: "c1", Group: "g1", Body: "hi"}},
		{`{"type":"send","cid":"c1","to":"bob","media":"m1"}`, Inbound{Type: "send", CID: "c1", To: "bob", Media: "m1"}},
		{`{"type":"send","cid":"c1","to":"bob","body":"hi","ack":["m1","r2-0"]}`, Inbound{Type: "send", CID: "c1", To: "bob", Body: "hi", Ack: []string{"m1", "r2-0"}}},
		{`{"ack":["m\u0031"],"type":"send","cid":"c1","group":"g1","body":"hi"}`, Inbound{Type: "send", CID: "c1", Group: "g1", Body: "hi", Ack: []string{"m1"}}},
		{`{"type":"send","cid":"c1","to":"bob","body":"hi","ack":[]}`, Inbound{Type: "send", CID: "c1", To: "bob", Body: "hi", Ack: []string{}}},
		{`{"type":"ack","ids":["m1"],"ack":["m2"]}`, Inbound{Type: "ack", IDs: []string{"m1"}}},
		{`{"type":"ack","ids":["m1","r2-0"]}`, Inbound{Type: "ack", IDs: []string{"m1", "r2-0"}}},
		{`{"type":"read","ids":["m1"]}`, Inbound{Type: "read", IDs: []string{"m1"}}},
		{`{"type":"typing","to":"bob"}`, Inbound{Type: "typing", To: "bob"}},
		{`{"type":"presence_subscribe","users":["a","b"]}`, Inbound{Type: "presence_subscribe", Users: []string{"a", "b"}}},
		{`{"type":"presence_unsubscribe","users":[]}`, Inbound{Type: "presence_unsubscribe", Users: []string{}}},
	}
	for _, tt := range tests {
		got, err := Decode([]byte(tt.in))
		if err != nil {
			t.Errorf("Decode(%s) error: %v", tt.in, err)
			continue
		}
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(tt.want)
		if string(g) != string(w) {
			t.Errorf("Decode(%s) = %s, want %s", tt.in, g, w)
		}
	}
}

func TestDecodeInvalid(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", MaxBody+1)
	manyIDs := `["` + strings.Repeat(`a","`, MaxIDs) + `a"]`
	manyUsers := `["` + strings.Repeat(`a","`, MaxPresenceUsers) + `a"]`
	tests := []struct {
		name, in, code, cid string
	}{
		{"not json", `hello`, CodeBadRequest, ""},
		{"array", `[1,2]`, CodeBadRequest, ""},
		{"no type", `{"cid":"c"}`, CodeBadRequest, ""},
		{"empty type", `{"type":""}`, CodeBadRequest, ""},
		{"unknown type", `{"type":"dance"}`, CodeBadRequest, ""},
		{"type not string", `{"type":5}`, CodeBadRequest, ""},
		{"send no cid", `{"type":"send","to":"bob","body":"x"}`, CodeBadRequest, ""},
		{"send long cid", `{"type":"send","cid":"` + strings.Repeat("c", 65) + `","to":"bob","body":"x"}`, CodeBadRequest, ""},
		{"send no target", `{"type":"send","cid":"c","body":"x"}`, CodeBadRequest, "c"},
		{"send both targets", `{"type":"send","cid":"c","to":"bob","group":"g","body":"x"}`, CodeBadRequest, "c"},
		{"send no body", `{"type":"send","cid":"c","to":"bob"}`, CodeBadRequest, "c"},
		{"send empty body", `{"type":"send","cid":"c","to":"bob","body":""}`, CodeBadRequest, "c"},
		{"send body not string", `{"type":"send","cid":"c","to":"bob","body":7}`, CodeBadRequest, ""},
		{"send to a.b", `{"type":"send","cid":"c","to":"a.b","body":"x"}`, CodeBadRequest, "c"},
		{"send to x>", `{"type":"send","cid":"c","to":"x>","body":"x"}`, CodeBadRequest, "c"},
		{"send to *", `{"type":"send","cid":"c","to":"*","body":"x"}`, CodeBadRequest, "c"},
		{"send to empty", `{"type":"send","cid":"c","to":"","body":"x"}`, CodeBadRequest, "c"},
		{"send to 65", `{"type":"send","cid":"c","to":"` + strings.Repeat("a", 65) + `","body":"x"}`, CodeBadRequest, "c"},
		{"send to spaces", `{"type":"send","cid":"c","to":"a b","body":"x"}`, CodeBadRequest, "c"},
		{"send bad media", `{"type":"send","cid":"c","to":"bob","media":"../x"}`, CodeBadRequest, "c"},
		{"send big body", `{"type":"send","cid":"c","to":"bob","body":"` + big + `"}`, CodeTooLarge, "c"},
		{"send bad ack id", `{"type":"send","cid":"c","to":"bob","body":"x","ack":["m1","a.b"]}`, CodeBadRequest, "c"},
		{"send ack not array", `{"type":"send","cid":"c","to":"bob","body":"x","ack":"m1"}`, CodeBadRequest, ""},
		{"send ack not strings", `{"type":"send","cid":"c","to":"bob","body":"x","ack":[1]}`, CodeBadRequest, ""},
		{"send too many acks", `{"type":"send","cid":"c","to":"bob","body":"x","ack":` + manyIDs + `}`, CodeBadRequest, "c"},
		{"ack no ids", `{"type":"ack"}`, CodeBadRequest, ""},
		{"ack empty ids", `{"type":"ack","ids":[]}`, CodeBadRequest, ""},
		{"ack bad id", `{"type":"ack","ids":["a.b"]}`, CodeBadRequest, ""},
		{"ack ids not array", `{"type":"ack","ids":"m1"}`, CodeBadRequest, ""},
		{"ack too many", `{"type":"ack","ids":` + manyIDs + `}`, CodeBadRequest, ""},
		{"read bad id", `{"type":"read","ids":["*"]}`, CodeBadRequest, ""},
		{"typing nobody", `{"type":"typing"}`, CodeBadRequest, ""},
		{"presence bad user", `{"type":"presence_subscribe","users":["a b"]}`, CodeBadRequest, ""},
		{"presence too many", `{"type":"presence_subscribe","users":` + manyUsers + `}`, CodeBadRequest, ""},
	}
	for _, tt := range tests {
		_, err := Decode([]byte(tt.in))
		var werr *Error
		if !errors.As(err, &werr) {
			t.Errorf("%s: Decode error = %v, want *Error", tt.name, err)
			continue
		}
		if werr.Code != tt.code || werr.CID != tt.cid {
			t.Errorf("%s: Decode = (%s, cid %q), want (%s, cid %q)", tt.name, werr.Code, werr.CID, tt.code, tt.cid)
		}
		if werr.Message == "" {
			t.Errorf("%s: error has no message", tt.name)
		}
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `q"b\s`, "ctl\x00\x01\x1f\n\r\t", "ünïcødé ✓ 😀", "bad\xffutf8", "sep\u2028\u2029", "<html>&"} {
		got := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("AppendString(%q) = %s, not valid JSON: %v", s, got, err)
			continue
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if back != want {
			t.Errorf("AppendString(%q) round-trips to %q, want %q", s, back, want)
		}
	}
}

func TestAppendFramesAreJSON(t *testing.T) {
	t.Parallel()
	var s Sent
	if err := json.Unmarshal(AppendSent(nil, "c\"1", "m5", 42), &s); err != nil || s.CID != "c\"1" || s.ID != "m5" || s.TS != 42 || s.Type != TypeSent {
		t.Errorf("AppendSent round trip = %+v, %v", s, err)
	}
	var e ErrorFrame
	if err := json.Unmarshal(AppendError(nil, CodeNotFound, "no such", ""), &e); err != nil || e.Code != CodeNotFound || e.CID != "" {
		t.Errorf("AppendError round trip = %+v, %v", e, err)
	}
	var r Receipt
	if err := json.Unmarshal(AppendReceipt(nil, "r1-0", "m1", StatusRead, "bob", 7), &r); err != nil || r.Status != StatusRead || r.By != "bob" {
		t.Errorf("AppendReceipt round trip = %+v, %v", r, err)
	}
}
