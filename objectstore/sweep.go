package objectstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// maxSweep bounds the media one sweep removes (and the ids it holds in
// memory); the next sweep goes on.
const maxSweep = 10000

// Run removes expired media every Config.SweepInterval until ctx ends, then
// returns nil. A failed sweep is logged and retried at the next interval.
// Several nodes may run it at once: removals are claimed with
// compare-and-set, so each media object is removed once.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		n, err := s.Sweep(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			s.log.Warn("media sweep failed", "removed", n, "err", err)
		case n > 0:
			s.log.Info("media swept", "removed", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep removes, once, the media that has expired (see the package
// documentation, "Lifetime") and returns how many objects it removed.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	type victim struct {
		id  string
		rev uint64
		rec *record
	}
	var victims []victim
	now := s.cfg.Now()
	w, err := s.acl.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, fmt.Errorf("list access records: %w", err)
	}
	for e := range w.Updates() {
		if e == nil {
			break // all current records seen
		}
		var rec record
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			s.log.Warn("undecodable access record", "media_id", e.Key(), "err", err)
			continue
		}
		if s.expired(&rec, now) {
			victims = append(victims, victim{e.Key(), e.Revision(), &rec})
			if len(victims) == maxSweep {
				break
			}
		}
	}
	if err := w.Stop(); err != nil {
		s.log.Debug("stop access watcher", "err", err)
	}
	removed := 0
	var errs []error
	for _, v := range victims {
		if ctx.Err() != nil {
			break
		}
		ok, err := s.remove(ctx, v.id, v.rev, v.rec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			removed++
		}
	}
	// Delete markers of removed records serve no reader: drop those older
	// than 30 minutes. It reads the whole bucket, like the pass above.
	pctx, cancel := context.WithTimeout(ctx, max(s.cfg.OpTimeout, s.cfg.SweepInterval))
	defer cancel()
	if err := s.acl.PurgeDeletes(pctx); err != nil && ctx.Err() == nil {
		errs = append(errs, fmt.Errorf("purge delete markers: %w", err))
	}
	return removed, errors.Join(errs...)
}

// expired reports whether the media of rec is due for removal at now.
func (s *Store) expired(rec *record, now time.Time) bool {
	age := now.Sub(time.UnixMilli(rec.TS))
	switch rec.State {
	case stateReady:
		if !rec.referenced() {
			return age >= s.cfg.GracePeriod
		}
		return s.cfg.Retention > 0 && now.Sub(time.UnixMilli(rec.Ref)) >= s.cfg.Retention
	case stateUploading:
		// An upload that outlived its timeout lost its node half way.
		return age >= s.cfg.UploadTimeout+s.cfg.GracePeriod
	case stateDeleting:
		// A removal that a node began and did not finish.
		return age >= s.cfg.OpTimeout
	}
	return false
}

// remove claims the media id at revision rev, then deletes its bytes and
// then its record. It reports false when another change (an Attach, another
// sweeper) came first.
func (s *Store) remove(ctx context.Context, id string, rev uint64, rec *record) (bool, error) {
	if rec.State != stateDeleting {
		claim := *rec
		claim.State, claim.TS = stateDeleting, s.cfg.Now().UnixMilli()
		r, err := s.update(ctx, id, &claim, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("claim media %s: %w", id, err)
		}
		rev = r
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	if err := s.blobs.Delete(ctx, id); err != nil {
		return false, fmt.Errorf("remove media %s: %w", id, err)
	}
	err := s.acl.Delete(ctx, id, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove access record %s: %w", id, err)
	}
	s.log.Debug("media removed", "media_id", id, "state", rec.State)
	return true, nil
}
