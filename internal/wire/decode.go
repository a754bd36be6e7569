package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jetchat/jetchat/internal/ident"
)

// Error is a protocol error: a code from the Code constants and a message
// that is safe to show to the client.
type Error struct {
	Code    string
	Message string
	CID     string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// raw mirrors every field a client frame may carry. Pointers tell a missing
// field from an empty one.
type raw struct {
	Type  *string   `json:"type"`
	CID   *string   `json:"cid"`
	To    *string   `json:"to"`
	Group *string   `json:"group"`
	Body  *string   `json:"body"`
	Media *string   `json:"media"`
	IDs   *[]string `json:"ids"`
	Users *[]string `json:"users"`
	Ack   *[]string `json:"ack"`
}

// Decode parses and validates one client frame. It returns an *Error with
// code bad_request or too_large for anything malformed; for a send frame the
// error carries the frame's cid when it could be read.
func Decode(data []byte) (*Inbound, error) {
	if len(data) > MaxFrame {
		return nil, Errorf(CodeTooLarge, "frame is larger than %d bytes", MaxFrame)
	}
	var r raw
	if !scanRaw(data, &r) {
		r = raw{}
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, Errorf(CodeBadRequest, "frame is not a JSON object of the protocol: %s", jsonProblem(err))
		}
	}
	if r.Type == nil {
		return nil, Errorf(CodeBadRequest, "frame has no type")
	}
	in := &Inbound{Type: *r.Type}
	switch in.Type {
	case TypeSend:
		return in, decodeSend(in, &r)
	case TypeAck, TypeRead:
		if r.IDs == nil {
			return nil, Errorf(CodeBadRequest, "%s needs ids", in.Type)
		}
		if len(*r.IDs) == 0 {
			return nil, Errorf(CodeBadRequest, "%s needs at least one id", in.Type)
		}
		if err := checkIDs(in.Type, "", *r.IDs); err != nil {
			return nil, err
		}
		in.IDs = *r.IDs
		return in, nil
	case TypeTyping:
		to, group, err := target(in.Type, &r)
		if err != nil {
			return nil, err
		}
		in.To, in.Group = to, group
		return in, nil
	case TypePresenceSubscribe, TypePresenceUnsubscribe:
		if r.Users == nil {
			return nil, Errorf(CodeBadRequest, "%s needs users", in.Type)
		}
		users := *r.Users
		if len(users) > MaxPresenceUsers {
			return nil, Errorf(CodeBadRequest, "%s names %d users, at most %d are allowed in one frame", in.Type, len(users), MaxPresenceUsers)
		}
		for _, u := range users {
			if err := ident.User(u); err != nil {
				return nil, Errorf(CodeBadRequest, "%s: %v", in.Type, err)
			}
		}
		in.Users = users
		return in, nil
	case "":
		return nil, Errorf(CodeBadRequest, "frame has an empty type")
	default:
		return nil, Errorf(CodeBadRequest, "unknown frame type %q", Clip(in.Type))
	}
}

func decodeSend(in *Inbound, r *raw) error {
	if r.CID != nil {
		in.CID = *r.CID
	}
	fail := func(code, format string, args ...any) error {
		e := Errorf(code, format, args...)
		if ident.CID(in.CID) == nil {
			e.CID = in.CID
		}
		return e
	}
	if err := ident.CID(in.CID); err != nil {
		return fail(CodeBadRequest, "send: %v", err)
	}
	to, group, err := target(TypeSend, r)
	if err != nil {
		return fail(err.(*Error).Code, "%s", err.(*Error).Message)
	}
	in.To, in.Group = to, group
	if r.Media != nil {
		if !ident.ValidToken(*r.Media) {
			return fail(CodeBadRequest, "send: invalid media id %q", Clip(*r.Media))
		}
		in.Media = *r.Media
	}
	if r.Body == nil {
		if in.Media == "" {
			return fail(CodeBadRequest, "send needs a body")
		}
	} else {
		in.Body = *r.Body
	}
	if len(in.Body) > MaxBody {
		return fail(CodeTooLarge, "body is %d bytes, at most %d are allowed", len(in.Body), MaxBody)
	}
	if in.Body == "" && in.Media == "" {
		return fail(CodeBadRequest, "send needs a non-empty body or a media id")
	}
	if r.Ack != nil {
		if err := checkIDs(TypeSend, " ack", *r.Ack); err != nil {
			return fail(CodeBadRequest, "%s", err.(*Error).Message)
		}
		in.Ack = *r.Ack
	}
	return nil
}

// checkIDs checks a list of message or receipt ids: at most MaxIDs, each a
// valid token. field names the list in the error ("" for an ack or read
// frame's ids).
func checkIDs(typ, field string, ids []string) error {
	if len(ids) > MaxIDs {
		return Errorf(CodeBadRequest, "%s%s carries %d ids, at most %d are allowed", typ, field, len(ids), MaxIDs)
	}
	for _, id := range ids {
		if !ident.ValidToken(id) {
			return Errorf(CodeBadRequest, "%s%s names an invalid id %q", typ, field, Clip(id))
		}
	}
	return nil
}

// target reads exactly one of to and group.
func target(typ string, r *raw) (to, group string, err error) {
	switch {
	case r.To != nil && r.Group != nil:
		return "", "", Errorf(CodeBadRequest, "%s takes either to or group, not both", typ)
	case r.To != nil:
		if e := ident.User(*r.To); e != nil {
			return "", "", Errorf(CodeBadRequest, "%s: %v", typ, e)
		}
		return *r.To, "", nil
	case r.Group != nil:
		if !ident.ValidToken(*r.Group) {
			return "", "", Errorf(CodeBadRequest, "%s: invalid group id %q", typ, Clip(*r.Group))
		}
		return "", *r.Group, nil
	default:
		return "", "", Errorf(CodeBadRequest, "%s needs to or group", typ)
	}
}

// jsonProblem turns a decoding error into a short, client-safe description.
func jsonProblem(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("syntax error at byte %d", e.Offset)
	case *json.UnmarshalTypeError:
		if e.Field != "" {
			return fmt.Sprintf("field %q must be %s", e.Field, kind(e.Type.Kind().String()))
		}
		return "the frame must be a JSON object"
	default:
		msg := err.Error()
		msg = strings.TrimPrefix(msg, "json: ")
		return Clip(msg)
	}
}

func kind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice":
		return "an array of strings"
	case "struct", "ptr":
		return "an object"
	default:
		return k
	}
}

// Clip shortens s, a client's value quoted in an error message, to at most
// 64 bytes of valid UTF-8.
func Clip(s string) string {
	const max = 64
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
