package gateway

import (
	"context"
	"io"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/chat"
)

// Deps are the components a gateway drives. Delivery and Keys are required;
// a nil Groups, Presence or Media leaves its endpoints and frames answering
// unavailable.
type Deps struct {
	Delivery Delivery
	Keys     Verifier
	Checks   []Check
	Groups   Groups
	Presence Presence
	Media    Media
	// Router decides which gateway owns a user (GET /v1/route, and the 421
	// and moved sessions of Config.EnforceOwnership); nil: this one.
	Router Router
}

// Delivery is what the gateway needs of the message log.
type Delivery interface {
	// Connect attaches a device and starts feeding sink.
	Connect(ctx context.Context, user, device string, sink chat.Sink) (chat.Device, error)
	// History returns a page of a conversation.
	History(ctx context.Context, user string, q chat.HistoryQuery) (chat.History, error)
	// Status returns a message's status per recipient, for its sender.
	Status(ctx context.Context, user, id string) (*chat.MessageStatus, error)
}

// Verifier checks access tokens.
type Verifier interface {
	Verify(token string) (auth.Claims, error)
}

// Check is a readiness probe of one dependency.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Groups is what the gateway needs of group membership (the /v1/groups API).
// Errors wrap chat.ErrNotFound (no such group, or not a member),
// chat.ErrForbidden (not an admin), chat.ErrBadRequest, chat.ErrTooLarge
// (group size limit) or chat.ErrUnavailable (Postgres down).
type Groups interface {
	// Create makes a group whose admin is creator and whose other members
	// are members.
	Create(ctx context.Context, creator, name string, members []string) (*chat.Group, error)
	// Get returns a group for one of its members.
	Get(ctx context.Context, user, id string) (*chat.Group, error)
	// List returns the groups user belongs to.
	List(ctx context.Context, user string) ([]chat.Group, error)
	// AddMembers adds users to a group; admin must be an admin of it.
	// Adding an existing member changes nothing.
	AddMembers(ctx context.Context, admin, id string, users []string) (*chat.Group, error)
	// RemoveMember removes user from a group: an admin removes anyone, a
	// member removes itself.
	RemoveMember(ctx context.Context, actor, id, user string) error
}

// Presence is what the gateway needs of online state.
type Presence interface {
	// Connected and Disconnected report a device's session.
	Connected(ctx context.Context, user, device string) error
	Disconnected(ctx context.Context, user, device string) error
	// Activity reports that user did something (coalesced by Presence).
	Activity(user string)
	// Subscribe sends sub a presence frame for each of users now and on
	// every change. It returns an error wrapping chat.ErrTooLarge when the
	// session would follow more users than allowed.
	Subscribe(ctx context.Context, sub chat.Frames, viewer string, users []string) error
	// Unsubscribe stops presence frames of users to sub.
	Unsubscribe(sub chat.Frames, users []string)
	// Forget drops all of sub's subscriptions (the session ended).
	Forget(sub chat.Frames)
	// Get returns user's presence as viewer may see it.
	Get(ctx context.Context, viewer, user string) (chat.PresenceState, error)
	// SetLastSeenPrivacy sets who may see user's last-seen: "everyone" or
	// "nobody".
	SetLastSeenPrivacy(ctx context.Context, user, who string) error
}

// Media is what the gateway needs of the media store.
type Media interface {
	// Put stores body as a new object of owner. It returns an error
	// wrapping chat.ErrTooLarge past the size limit and chat.ErrBadRequest
	// for an empty body or a type that does not match the bytes; nothing
	// is left behind on error.
	Put(ctx context.Context, owner, contentType string, body io.Reader) (chat.MediaInfo, error)
	// Open returns an object user may read, or an error wrapping
	// chat.ErrNotFound (also when user may not read it).
	Open(ctx context.Context, user, id string) (chat.MediaObject, error)
	// Check returns nil when sender may attach id to a message (it
	// uploaded or received it), else an error wrapping chat.ErrNotFound.
	Check(ctx context.Context, sender, id string) error
	// Attach checks that sender may attach id to a message and grants the
	// message's recipients access. It is idempotent.
	Attach(ctx context.Context, sender, id string, g chat.MediaGrant) error
}
