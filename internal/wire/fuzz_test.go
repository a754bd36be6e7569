package wire

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/jetchat/jetchat/internal/ident"
)

// FuzzDecode checks that no input panics the decoder and that everything it
// accepts is valid by the protocol's rules.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"send","cid":"c1","to":"bob","body":"hi"}`,
		`{"type":"send","cid":"c1","group":"g","body":"hi","media":"x"}`,
		`{"type":"send","cid":"c1","to":"bob","body":"hi","ack":["m1","r2-0"]}`,
		`{"type":"ack","ids":["m1","r2-0"]}`,
		`{"type":"read","ids":["m1"]}`,
		`{"type":"typing","to":"bob"}`,
		`{"type":"presence_subscribe","users":["a"]}`,
		`{"type":"send","cid":"","to":"a.b"}`,
		`{"type":null}`, `[]`, `"x"`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := Decode(data)
		if err != nil {
			var werr *Error
			if !errors.As(err, &werr) || werr.Code == "" || werr.Message == "" {
				t.Fatalf("Decode(%q) error %v is not a complete *Error", data, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("Decode accepted invalid JSON %q", data)
		}
		switch in.Type {
		case TypeSend:
			if ident.CID(in.CID) != nil || len(in.Body) > MaxBody || (in.To == "") == (in.Group == "") {
				t.Fatalf("Decode accepted a bad send %+v", in)
			}
			if in.To != "" && ident.User(in.To) != nil {
				t.Fatalf("Decode accepted bad recipient %q", in.To)
			}
			if len(in.Ack) > MaxIDs {
				t.Fatalf("Decode accepted a send acking %d ids", len(in.Ack))
			}
			for _, id := range in.Ack {
				if !ident.ValidToken(id) {
					t.Fatalf("Decode accepted acked id %q", id)
				}
			}
		case TypeAck, TypeRead:
			if len(in.IDs) == 0 || len(in.IDs) > MaxIDs {
				t.Fatalf("Decode accepted %d ids", len(in.IDs))
			}
			for _, id := range in.IDs {
				if !ident.ValidToken(id) {
					t.Fatalf("Decode accepted id %q", id)
				}
			}
		case TypeTyping, TypePresenceSubscribe, TypePresenceUnsubscribe:
			for _, u := range in.Users {
				if ident.User(u) != nil {
					t.Fatalf("Decode accepted user %q", u)
				}
			}
		default:
			t.Fatalf("Decode accepted type %q", in.Type)
		}
	})
}
