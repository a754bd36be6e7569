package service

import (
	"context"
	"errors"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/wire"
)

// Errors of this package, wrapping those of package chat.
var (
	// ErrNotBot: the user is not one services may send as (Config.Bots).
	ErrNotBot = errors.New("service: not a bot user")
	// ErrReserved: the consumer name belongs to jetchat.
	ErrReserved = errors.New("service: reserved consumer name")
)

// codeOf maps an error to a protocol error code, as the gateway does for
// clients: the service API answers with the same codes.
func codeOf(err error) string {
	var werr *wire.Error
	switch {
	case errors.As(err, &werr):
		return werr.Code
	case errors.Is(err, ErrNotBot), errors.Is(err, ErrReserved), errors.Is(err, chat.ErrForbidden):
		return wire.CodeForbidden
	case errors.Is(err, chat.ErrBadRequest):
		return wire.CodeBadRequest
	case errors.Is(err, chat.ErrNotFound):
		return wire.CodeNotFound
	case errors.Is(err, chat.ErrTooLarge):
		return wire.CodeTooLarge
	case errors.Is(err, chat.ErrConflict):
		return wire.CodeConflict
	case errors.Is(err, chat.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, chat.ErrClosed):
		return wire.CodeUnavailable
	}
	return wire.CodeInternal
}

// publicMessage is the text of err that a service may see: internal
// failures are not described.
func publicMessage(code string, err error) string {
	var werr *wire.Error
	if errors.As(err, &werr) {
		return werr.Message
	}
	switch code {
	case wire.CodeInternal:
		return "internal error"
	case wire.CodeUnavailable:
		return "service temporarily unavailable, retry"
	}
	return err.Error()
}
