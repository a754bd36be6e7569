package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/registry"
)

// Last-seen privacy settings.
const (
	Everyone = "everyone"
	Nobody   = "nobody"
)

// record is the stored presence of one user, the value of its key.
type record struct {
	// On names the gateways where the user is online: gateway id → entry.
	On map[string]onEntry `json:"on,omitempty"`
	// LastSeen is when the user was last online (ms); the entries of On
	// may name a later time (their gateway's last heartbeat).
	LastSeen int64 `json:"last_seen,omitempty"`
	// Privacy is Nobody when the user hides its last-seen; empty means
	// Everyone.
	Privacy string `json:"privacy,omitempty"`
}

// onEntry says that the user is online on one gateway incarnation.
type onEntry struct {
	// Started names the incarnation: its start time (ns).
	Started int64 `json:"started"`
	// Since is when the user came online there (ms).
	Since int64 `json:"since"`
}

// update is what a writer publishes on natsx.Presence(user).
type update struct {
	Rev uint64 `json:"rev"`
	Rec record `json:"rec"`
}

// view is a user's presence as someone sees it.
type view struct {
	online   bool
	lastSeen int64 // ms; 0 while online or hidden
}

func decodeRecord(b []byte) (record, error) {
	var r record
	if len(b) == 0 {
		return r, nil
	}
	err := json.Unmarshal(b, &r)
	return r, err
}

func (r *record) clone() record {
	c := *r
	if r.On != nil {
		c.On = make(map[string]onEntry, len(r.On))
		for k, v := range r.On {
			c.On[k] = v
		}
	}
	return c
}

// alive judges one entry: whether its gateway incarnation is online, and
// otherwise the last time the user was seen through it (ms).
func (t *Tracker) alive(gw string, e onEntry, now time.Time) (bool, int64) {
	if gw == t.self.ID && e.Started == t.self.Started.UnixNano() {
		return true, 0
	}
	st, hb := t.reg.State(gw, time.Unix(0, e.Started))
	switch st {
	case registry.Alive:
		return true, 0
	case registry.Gone:
		if !hb.IsZero() {
			return false, max(hb.UnixMilli(), e.Since)
		}
	default:
		if until := e.Since + t.cfg.Pending.Milliseconds(); now.UnixMilli() < until {
			// A gateway that started a moment ago, not yet seen here:
			// judge again when the benefit of the doubt ends.
			t.recheckAt(until)
			return true, 0
		}
	}
	// Left long ago, or replaced by a newer incarnation before its
	// heartbeats were seen: the best known time is when the user came.
	return false, e.Since
}

// eval returns the full presence of a record (last-seen not hidden).
func (t *Tracker) eval(r *record, now time.Time) view {
	v := view{lastSeen: r.LastSeen}
	for gw, e := range r.On {
		on, last := t.alive(gw, e, now)
		if on {
			return view{online: true}
		}
		v.lastSeen = max(v.lastSeen, last)
	}
	return v
}

// views returns what others see of a record and what the user itself sees.
func (t *Tracker) views(r *record, now time.Time) (public, own view) {
	own = t.eval(r, now)
	public = own
	if r.Privacy == Nobody {
		public.lastSeen = 0
	}
	return public, own
}

// mentions reports whether r has an entry of gateway gw.
func (r *record) mentions(gw string) bool {
	_, ok := r.On[gw]
	return ok
}

// prune removes the entries of dead gateway incarnations, folding their
// last-seen into LastSeen. It reports whether r changed.
func (t *Tracker) prune(r *record, now time.Time) bool {
	changed := false
	for gw, e := range r.On {
		if on, last := t.alive(gw, e, now); !on {
			delete(r.On, gw)
			r.LastSeen = max(r.LastSeen, last)
			changed = true
		}
	}
	return changed
}

// load reads a user's record; a missing key is an empty record at revision 0.
func (t *Tracker) load(ctx context.Context, user string) (record, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	e, err := t.kv.Get(ctx, user)
	switch {
	case err == nil:
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return record{}, 0, nil
	case errors.Is(err, jetstream.ErrKeyDeleted) && e != nil:
		return record{}, e.Revision(), nil
	default:
		return record{}, 0, fmt.Errorf("presence: read %s: %w: %v", user, chat.ErrUnavailable, err)
	}
	r, err := decodeRecord(e.Value())
	if err != nil {
		t.log.Warn("malformed presence record, starting afresh", "user_id", user, "err", err)
		return record{}, e.Revision(), nil
	}
	return r, e.Revision(), nil
}

// maxCAS bounds the retries of one compare-and-set write.
const maxCAS = 20

// modify applies fn to user's record with compare-and-set, retrying on
// conflicts, pruning dead entries on the way. When the record changed it is
// stored and published. It returns the stored (or unchanged) record.
func (t *Tracker) modify(ctx context.Context, user string, fn func(r *record, now time.Time) bool) (record, error) {
	for range maxCAS {
		r, rev, err := t.load(ctx, user)
		if err != nil {
			return r, err
		}
		now := time.Now()
		changed := t.prune(&r, now)
		if fn(&r, now) {
			changed = true
		}
		if !changed {
			return r, nil
		}
		b, err := json.Marshal(r)
		if err != nil {
			return r, err
		}
		wctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
		if rev == 0 {
			rev, err = t.kv.Create(wctx, user, b)
		} else {
			rev, err = t.kv.Update(wctx, user, b, rev)
		}
		cancel()
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return r, fmt.Errorf("presence: write %s: %w: %v", user, chat.ErrUnavailable, err)
		}
		t.writes.Add(1)
		t.announce(user, rev, r)
		return r, nil
	}
	return record{}, fmt.Errorf("presence: write %s: %w: too many concurrent writers", user, chat.ErrUnavailable)
}

// announce publishes a stored record to the trackers that follow the user.
func (t *Tracker) announce(user string, rev uint64, r record) {
	b, err := json.Marshal(update{Rev: rev, Rec: r})
	if err == nil {
		err = t.nc.Publish(natsx.Presence(user), b)
	}
	if err != nil {
		// Followers catch up on their next Resync or the user's next change.
		t.log.Warn("publish presence change", "user_id", user, "err", err)
	}
}

// recheckAt asks Run to re-evaluate followed users at ms (the earliest
// request wins).
func (t *Tracker) recheckAt(ms int64) {
	for {
		cur := t.recheck.Load()
		if cur != 0 && cur <= ms {
			return
		}
		if t.recheck.CompareAndSwap(cur, ms) {
			return
		}
	}
}
