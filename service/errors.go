package service

import (
	"errors"

	"github.com/jetchat/jetchat/internal/wire"
)

// Errors of this package, wrapping those of package chat.
var (
	// ErrNotBot: the user is not one services may send as (Config.Bots).
	ErrNotBot = errors.New("service: not a bot user")
	// ErrReserved: the consumer name belongs to jetchat.
	ErrReserved = errors.New("service: reserved consumer name")
)

// codeOf maps an error to a protocol error code with the gateway's
// mapping (wire.CodeOf), plus this package's refusals.
func codeOf(err error) string {
	if errors.Is(err, ErrNotBot) || errors.Is(err, ErrReserved) {
		return wire.CodeForbidden
	}
	return wire.CodeOf(err)
}

// publicMessage is the text of err that a service may see.
func publicMessage(code string, err error) string { return wire.PublicMessage(code, err) }
