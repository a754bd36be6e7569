package objectstore

import (
	"crypto/rand"
	"encoding/binary"
)

// Media ids are "md" followed by idRandLen characters of [A-Za-z0-9]: about
// 131 random bits, safe in a URL path, a NATS subject, a KV key and an
// object name.
const (
	idPrefix  = "md"
	idRandLen = 22
	idLen     = len(idPrefix) + idRandLen
	alphabet  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

// newID returns a fresh media id.
func newID() string {
	b := make([]byte, idLen)
	copy(b, idPrefix)
	var buf [8]byte
	for i := len(idPrefix); i < idLen; {
		rand.Read(buf[:]) // never fails (crypto/rand panics instead)
		v := binary.LittleEndian.Uint64(buf[:])
		// 62^10 < 2^64: draw up to 10 characters per word, rejecting the
		// top of the range so every character is equally likely.
		const span = 839299365868340224 // 62^10
		if v >= 21*span {               // 21*62^10 <= 2^64-1 < 22*62^10
			continue
		}
		v %= span
		for j := 0; j < 10 && i < idLen; j++ {
			b[i] = alphabet[v%62]
			v /= 62
			i++
		}
	}
	return string(b)
}

// ValidID reports whether id has the shape of a media id. Anything else is
// refused before it reaches a store, so that "../x" or a subject wildcard
// never becomes a key or an object name.
func ValidID(id string) bool {
	if len(id) != idLen || id[:len(idPrefix)] != idPrefix {
		return false
	}
	for i := len(idPrefix); i < idLen; i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
