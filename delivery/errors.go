package delivery

import "github.com/jetchat/jetchat/internal/chat"

// The errors of this package are those of package chat, so that the gateway
// maps them without knowing delivery.
var (
	ErrNotFound    = chat.ErrNotFound
	ErrBadRequest  = chat.ErrBadRequest
	ErrUnavailable = chat.ErrUnavailable
	ErrClosed      = chat.ErrClosed
	ErrReplaced    = chat.ErrReplaced
	ErrSlowClient  = chat.ErrSlowClient
	ErrShutdown    = chat.ErrShutdown
)
