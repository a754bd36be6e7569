package objectstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natsx"
)

// The states of an access record. A record is created before the first byte
// is stored and removed after the last one is deleted, so stored bytes never
// lack a record that accounts for them.
const (
	// stateUploading: the bytes are being written; nobody may read them.
	stateUploading = "uploading"
	// stateReady: complete and readable by the owner and the grantees.
	stateReady = "ready"
	// stateDeleting: the sweeper is removing the media; nobody may read or
	// attach it.
	stateDeleting = "deleting"
)

// record is the value of a media object's key in the access bucket: who
// uploaded it, what it is, and who may read it. It is changed only with
// compare-and-set on the key's revision.
type record struct {
	State string `json:"state"`
	Owner string `json:"owner"`
	// TS is when State last changed (ms): the start of an upload, the end
	// of it, the start of a removal.
	TS     int64  `json:"ts"`
	Size   int64  `json:"size,omitempty"`
	MIME   string `json:"mime,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// Users are the recipients of 1:1 messages that carry the media.
	Users []string `json:"users,omitempty"`
	// Groups are the group messages that carry it: members of the group at
	// that message's log position may read it.
	Groups []groupGrant `json:"groups,omitempty"`
	// Ref is when the media was last attached to a message (ms), 0 if
	// never.
	Ref int64 `json:"ref,omitempty"`
}

type groupGrant struct {
	Group string `json:"group"`
	Seq   uint64 `json:"seq"`
}

// referenced reports whether some message carries the media.
func (r *record) referenced() bool { return len(r.Users) > 0 || len(r.Groups) > 0 }

// grants is the number of recorded grants.
func (r *record) grants() int { return len(r.Users) + len(r.Groups) }

// addGrant records users and a group grant; it reports whether anything was
// new.
func (r *record) addGrant(users []string, g groupGrant) bool {
	changed := false
	for _, u := range users {
		if u != r.Owner && !slices.Contains(r.Users, u) {
			r.Users = append(r.Users, u)
			changed = true
		}
	}
	if g.Group != "" && !slices.Contains(r.Groups, g) {
		r.Groups = append(r.Groups, g)
		changed = true
	}
	return changed
}

// load reads the record of id, from the bucket (any replica may answer)
// or, fresh, from its stream's leader (see New; it needs s.nc). A missing
// or deleted key is ErrNotFound.
func (s *Store) load(ctx context.Context, id string, fresh bool) (*record, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	var value []byte
	var rev uint64
	if fresh {
		bucket := s.acl.Bucket()
		m, err := natsx.LeaderLast(ctx, s.nc, "KV_"+bucket, "$KV."+bucket+"."+id)
		if err != nil {
			return nil, 0, unavailable("read access record "+id, err)
		}
		if m == nil || m.Header.Get(kvOperation) != "" { // DEL or PURGE
			return nil, 0, ErrNotFound
		}
		value, rev = m.Data, m.Seq // a key's revision is its stream sequence
	} else {
		e, err := s.acl.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, 0, ErrNotFound
		}
		if err != nil {
			return nil, 0, unavailable("read access record "+id, err)
		}
		value, rev = e.Value(), e.Revision()
	}
	var rec record
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, 0, fmt.Errorf("decode access record %s: %w", id, err)
	}
	return &rec, rev, nil
}

// kvOperation is the header a KV delete or purge carries.
const kvOperation = "KV-Operation"

// readable loads the record of id and reports whether user may read its
// media. A record missing or not readable through the bucket is read again
// from the leader before the answer is no, so that an upload or grant
// acknowledged a moment ago counts. fresh reads from the leader at once.
func (s *Store) readable(ctx context.Context, id, user string, fresh bool) (*record, uint64, bool, error) {
	fresh = fresh && s.nc != nil
	for {
		rec, rev, err := s.load(ctx, id, fresh)
		ok := false
		if err == nil {
			ok, err = s.canRead(ctx, rec, user)
		}
		if ok || fresh || s.nc == nil || (err != nil && !errors.Is(err, ErrNotFound)) {
			return rec, rev, ok, err
		}
		fresh = true
	}
}

// create writes the first record of id; it fails with
// jetstream.ErrKeyExists when the key is taken.
func (s *Store) create(ctx context.Context, id string, rec *record) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	return s.acl.Create(ctx, id, b)
}

// update replaces the record of id if it is still at revision rev; a
// concurrent change fails with jetstream.ErrKeyRevisionMismatch.
func (s *Store) update(ctx context.Context, id string, rec *record, rev uint64) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	return s.acl.Update(ctx, id, b, rev)
}

// canRead reports whether user may read the media of rec: its owner, a
// 1:1 recipient, or a member of a granted group at the grant's position.
func (s *Store) canRead(ctx context.Context, rec *record, user string) (bool, error) {
	if rec.State != stateReady {
		return false, nil
	}
	if rec.Owner == user || slices.Contains(rec.Users, user) {
		return true, nil
	}
	if s.groups == nil {
		return false, nil
	}
	for _, g := range rec.Groups {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
		ok, err := s.groups.WasMember(ctx, g.Group, user, g.Seq)
		cancel()
		if err != nil {
			return false, unavailable("check membership of group "+g.Group, err)
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}
