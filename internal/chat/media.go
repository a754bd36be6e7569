package chat

import (
	"context"
	"fmt"
	"time"
)

// MediaGranter is what a send with media needs of the media store.
type MediaGranter interface {
	// Check returns nil when sender may attach id (it uploaded or received it).
	Check(ctx context.Context, sender, id string) error
	// Attach grants a message's recipients access to id; idempotent.
	Attach(ctx context.Context, sender, id string, g MediaGrant) error
}

// SendWithMedia stores req with send, granting the message's recipients
// access to its media: a 1:1 recipient before the message is stored, so it
// can download the moment the message reaches it; a group's members after,
// because their grant names the message's position. Media the sender may
// not attach (or a nil media store) fails with ErrNotFound before anything
// is stored. A failed group grant is retried, then reported; resending the
// same cid is safe (the message is not stored twice, the grant is
// idempotent).
func SendWithMedia(ctx context.Context, media MediaGranter, sender string, req SendRequest, send func(context.Context, SendRequest) (Sent, error)) (Sent, error) {
	if req.Media == "" {
		return send(ctx, req)
	}
	if media == nil {
		return Sent{}, fmt.Errorf("%w: no such media", ErrNotFound)
	}
	var err error
	if req.Group == "" {
		err = media.Attach(ctx, sender, req.Media, MediaGrant{Users: []string{req.To}})
	} else {
		err = media.Check(ctx, sender, req.Media)
	}
	if err != nil {
		return Sent{}, err
	}
	sent, err := send(ctx, req)
	if err != nil || req.Group == "" {
		return sent, err
	}
	g := MediaGrant{Group: req.Group, Seq: sent.Seq}
	for attempt := 0; ; attempt++ {
		if err = media.Attach(ctx, sender, req.Media, g); err == nil {
			return sent, nil
		}
		if attempt == 2 || ctx.Err() != nil {
			return Sent{}, fmt.Errorf("grant access to media %s of message %s: %w", req.Media, sent.ID, err)
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
}
