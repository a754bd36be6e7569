package objectstore

import (
	"errors"
	"fmt"

	"github.com/jetchat/jetchat/internal/chat"
)

// Errors of this package. Each wraps the chat error the gateway maps to a
// protocol code (test with errors.Is against either), and its text is safe
// to show to the client.
var (
	// ErrNotFound: the media does not exist, its id is malformed, or the
	// caller may not read it (the three are indistinguishable on purpose).
	ErrNotFound = kind(chat.ErrNotFound, "no such media")
	// ErrEmpty: an upload of zero bytes.
	ErrEmpty = kind(chat.ErrBadRequest, "the upload is empty")
	// ErrContentType: the Content-Type is missing or is not a valid
	// "type/subtype" media type.
	ErrContentType = kind(chat.ErrBadRequest, "a valid Content-Type (type/subtype) is required")
	// ErrTypeMismatch: an image type that the bytes are not.
	ErrTypeMismatch = kind(chat.ErrBadRequest, "the bytes do not match the declared image type")
	// ErrInterrupted: reading the upload failed before its end (the client
	// went away or stalled).
	ErrInterrupted = kind(chat.ErrBadRequest, "the upload was interrupted")
	// ErrTooLarge: an upload over Config.MaxSize.
	ErrTooLarge = kind(chat.ErrTooLarge, "the upload exceeds the media size limit")
	// ErrBadGrant: Attach was given no recipient, or a malformed one.
	ErrBadGrant = kind(chat.ErrBadRequest, "a media grant needs valid users or a group and position")
	// ErrTooManyGrants: the media was attached to more recipients than
	// Config.MaxGrants.
	ErrTooManyGrants = kind(chat.ErrTooLarge, "the media was shared with too many recipients")
	// ErrUnavailable wraps failures of the underlying stores (JetStream,
	// the group membership); it is retryable.
	ErrUnavailable = kind(chat.ErrUnavailable, "media storage unavailable")
)

// ErrBlobNotFound is returned by Blobs.Get for a name that holds nothing.
var ErrBlobNotFound = errors.New("objectstore: blob not found")

// sentinel is an error with client-safe text that belongs to a chat error
// class.
type sentinel struct {
	class error
	msg   string
}

func kind(class error, msg string) error { return &sentinel{class: class, msg: msg} }

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.class }

// unavailable wraps a store failure of op as ErrUnavailable, keeping err in
// the chain for logs and errors.Is.
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}
