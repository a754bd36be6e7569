package natsx

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Retry calls a NATS operation again while a cluster cannot answer yet (no
// leader elected, peers still joining, a request lost in an election),
// with a growing pause between tries.
type Retry struct {
	// Try bounds each call (the ctx f gets); 0 leaves calls to ctx alone.
	Try time.Duration
	// Within stops the retries once this long has passed (0: until ctx
	// ends).
	Within time.Duration
	// Retryable tells which errors are worth another try; nil means all.
	Retryable func(error) bool
	// OnRetry, if set, is told of each failed try before the pause.
	OnRetry func(err error, pause time.Duration)
}

// Do calls f until it succeeds, fails with an error Retryable refuses, or
// ctx ends or Within passes; it returns f's last error.
func (r Retry) Do(ctx context.Context, f func(context.Context) error) error {
	var deadline time.Time
	if r.Within > 0 {
		deadline = time.Now().Add(r.Within)
	}
	pause := 100 * time.Millisecond
	for {
		err := r.try(ctx, f)
		if err == nil || ctx.Err() != nil || (r.Retryable != nil && !r.Retryable(err)) ||
			(!deadline.IsZero() && time.Now().Add(pause).After(deadline)) {
			return err
		}
		if r.OnRetry != nil {
			r.OnRetry(err, pause)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

func (r Retry) try(ctx context.Context, f func(context.Context) error) error {
	if r.Try <= 0 {
		return f(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, r.Try)
	defer cancel()
	return f(ctx)
}

// transient reports whether a JetStream API error may go away by itself:
// no answer in time, nobody answering yet, or the cluster saying it is
// temporarily unavailable or has no peers to place a stream on yet.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 || apiErr.ErrorCode == jsErrCodeNoPeers
	}
	return false
}

// jsErrCodeNoPeers is JetStream's "insufficient resources / no suitable
// peers for placement", which a forming cluster answers until its peers
// have joined.
const jsErrCodeNoPeers jetstream.ErrorCode = 10005
