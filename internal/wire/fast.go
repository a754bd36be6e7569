package wire

import (
	"strings"
	"unicode/utf8"
)

// scanRaw is the fast path of Decode: it reads a frame whose values are
// plain strings (no escapes) or arrays of them into r, and reports false for
// anything else — escapes, numbers, nulls, nested objects, malformed JSON —
// which the caller then decodes with encoding/json. Whatever it accepts it
// reads exactly as encoding/json would (a repeated key keeps its last value).
func scanRaw(data []byte, r *raw) bool {
	p := scanner{b: data}
	return p.object(func(k []byte) bool {
		key := string(k) // does not allocate in the switch below
		switch key {
		case "type", "cid", "to", "group", "body", "media":
			v, ok := p.str()
			if !ok {
				return false
			}
			s := string(v)
			switch key {
			case "type":
				r.Type = &s
			case "cid":
				r.CID = &s
			case "to":
				r.To = &s
			case "group":
				r.Group = &s
			case "body":
				r.Body = &s
			case "media":
				r.Media = &s
			}
		case "ids", "users", "ack":
			list, ok := p.strs()
			if !ok {
				return false
			}
			switch key {
			case "ids":
				r.IDs = &list
			case "users":
				r.Users = &list
			case "ack":
				r.Ack = &list
			}
		default:
			// encoding/json matches keys without regard to case (Unicode
			// simple folding, as strings.EqualFold): "tYpe" is the type.
			// Such a key goes to the slow path.
			if foldsTo(key, knownKeys[:]) {
				return false
			}
			// An unknown field: skip a plain string; anything else goes
			// to the slow path.
			if _, ok := p.str(); !ok {
				return false
			}
		}
		return true
	})
}

// foldsTo reports whether key equals one of known without regard to case.
func foldsTo(key string, known []string) bool {
	for _, k := range known {
		if strings.EqualFold(key, k) {
			return true
		}
	}
	return false
}

// knownKeys are the keys scanRaw reads.
var knownKeys = [...]string{"type", "cid", "to", "group", "body", "media", "ids", "users", "ack"}

type scanner struct {
	b []byte
	i int
}

// Scanner reads JSON whose layout is known in advance, without
// reflection: the fast paths of jetchat's codecs. Each method consumes
// what it reads and reports false when the input does not continue as
// asked, and the caller then hands the whole input to encoding/json.
type Scanner struct{ p scanner }

// NewScanner returns a Scanner at the start of b.
func NewScanner(b []byte) Scanner { return Scanner{scanner{b: b}} }

// Lit consumes lit if the input continues with it.
func (s *Scanner) Lit(lit string) bool {
	rest := s.p.b[s.p.i:]
	if len(rest) < len(lit) || string(rest[:len(lit)]) != lit {
		return false
	}
	s.p.i += len(lit)
	return true
}

// Str reads a string without escapes or control characters, of valid
// UTF-8 (read by encoding/json as it stands).
func (s *Scanner) Str() (string, bool) {
	b, ok := s.p.str()
	return string(b), ok
}

// Int reads an integer as an int64 field reads it, of at most 18 digits.
func (s *Scanner) Int() (int64, bool) { return s.p.int() }

// Done reports whether the whole input has been read.
func (s *Scanner) Done() bool { return s.p.i == len(s.p.b) }

func (p *scanner) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// object reads a whole JSON object: for each key it calls value, which
// must read the key's value and report whether it could. object reports
// false when value does, or the object is malformed or followed by more
// than white space.
func (p *scanner) object(value func(key []byte) bool) bool {
	return p.inner(value) && p.end()
}

// inner reads an object like object, one nested in another: it stops
// after the closing brace.
func (p *scanner) inner(value func(key []byte) bool) bool {
	p.space()
	if !p.eat('{') {
		return false
	}
	p.space()
	if p.eat('}') {
		return true
	}
	for {
		p.space()
		k, ok := p.str()
		if !ok {
			return false
		}
		p.space()
		if !p.eat(':') {
			return false
		}
		p.space()
		if !value(k) {
			return false
		}
		p.space()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			return true
		}
		return false
	}
}

// end accepts only trailing white space.
func (p *scanner) end() bool {
	p.space()
	return p.i == len(p.b)
}

// str reads a string without escapes or control characters, of valid UTF-8.
func (p *scanner) str() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	ascii := true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.i++
	}
	return nil, false
}

// strs reads an array of strings.
func (p *scanner) strs() ([]string, bool) {
	list := []string{}
	ok := p.array(func() bool {
		s, ok := p.str()
		if ok {
			list = append(list, string(s))
		}
		return ok
	})
	if !ok {
		return nil, false
	}
	return list, true
}

// array reads a JSON array, calling elem to read each element; it reports
// false when elem does or the array is malformed.
func (p *scanner) array(elem func() bool) bool {
	if !p.eat('[') {
		return false
	}
	p.space()
	if p.eat(']') {
		return true
	}
	for {
		p.space()
		if !elem() {
			return false
		}
		p.space()
		if p.eat(',') {
			continue
		}
		return p.eat(']')
	}
}
