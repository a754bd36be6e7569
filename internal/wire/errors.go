package wire

import (
	"context"
	"errors"

	"github.com/jetchat/jetchat/internal/chat"
)

// CodeOf maps an error of a component to a protocol error code: the one
// mapping shared by the gateway (for clients) and the service API (for
// backend services). Anything unknown is internal.
func CodeOf(err error) string {
	var werr *Error
	switch {
	case errors.As(err, &werr):
		return werr.Code
	case errors.Is(err, chat.ErrBadRequest):
		return CodeBadRequest
	case errors.Is(err, chat.ErrNotFound):
		return CodeNotFound
	case errors.Is(err, chat.ErrForbidden):
		return CodeForbidden
	case errors.Is(err, chat.ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, chat.ErrConflict):
		return CodeConflict
	case errors.Is(err, chat.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, chat.ErrClosed):
		return CodeUnavailable
	}
	return CodeInternal
}

// PublicMessage is the text of err that a client or service may see:
// protocol and client errors say what is wrong, internal failures are not
// described.
func PublicMessage(code string, err error) string {
	var werr *Error
	if errors.As(err, &werr) {
		return werr.Message
	}
	switch code {
	case CodeInternal:
		return "internal error"
	case CodeUnavailable:
		return "service temporarily unavailable, retry"
	}
	return err.Error()
}
