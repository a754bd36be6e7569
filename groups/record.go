package groups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natsx"
)

// Headers of a membership record on a group's subject, and of a membership
// notice in a member's inbox. They are the message log's own header names
// (package delivery uses the same), so a reader tells the kinds of record
// apart without parsing bodies.
const (
	// HdrKind is the record kind; KindMember for membership records and
	// notices.
	HdrKind = "Jc-Kind"
	// HdrFrom is the user who made the change.
	HdrFrom = "Jc-From"
	// HdrGroup is the group of a membership notice.
	HdrGroup = "Jc-Group"
	// HdrEvent is what a membership notice says: EventJoined or EventLeft.
	// Records on a group's subject have none.
	HdrEvent = "Jc-Event"
	// KindMember marks a membership record or notice.
	KindMember = "member"
	// ChangeType is the "type" of a Change.
	ChangeType = "members"
)

// Membership notice events.
const (
	EventJoined = "joined"
	EventLeft   = "left"
)

// Change is a membership change: the JSON body of its record on the group's
// subject in the message log, and of its announcement on
// natsx.GroupsChanged once committed.
type Change struct {
	// Type is always ChangeType.
	Type string `json:"type"`
	// Group is the group's id.
	Group string `json:"group"`
	// Name is the group's name, set only in the record that created it.
	Name string `json:"name,omitempty"`
	// Added and Removed are the users who joined and left.
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	// Promoted are members who became admin (the last admin left).
	Promoted []string `json:"promoted,omitempty"`
	// By is the user who made the change.
	By string `json:"by"`
	// TS is the server time of the change, in ms since the Unix epoch.
	TS int64 `json:"ts"`
	// Seq is the stream sequence of the change's record, set in the
	// announcement only (a record knows its own sequence).
	Seq uint64 `json:"seq,omitempty"`
}

// appendChange stores c on its group's subject in the message log and
// returns the record's stream sequence, or an error wrapping ErrUnavailable.
func (s *Store) appendChange(ctx context.Context, c *Change) (uint64, error) {
	if c.Added == nil {
		c.Added = []string{}
	}
	if c.Removed == nil {
		c.Removed = []string{}
	}
	body, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("groups: encode change of %s: %w", c.Group, err)
	}
	msg := &nats.Msg{Subject: natsx.Group(c.Group), Header: nats.Header{}, Data: body}
	msg.Header.Set(HdrKind, KindMember)
	msg.Header.Set(HdrFrom, c.By)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(natsx.StreamMsgs))
	if err != nil {
		return 0, fmt.Errorf("groups: append change of %s to the message log: %w: %w", c.Group, ErrUnavailable, err)
	}
	return ack.Sequence, nil
}

// recorded is a change appended to the message log.
type recorded struct {
	// seq is the sequence of the change's record on the group's subject.
	seq uint64
	// pos is the position of each added user (its joined_seq) and of each
	// removed user (its left_seq).
	pos map[string]uint64
	// notices is set once inbox notices were written: they must be
	// retracted if the change does not commit.
	notices bool
}

// seqs returns the positions of users, in order, as Postgres bigints.
func (r *recorded) seqs(users []string) []int64 {
	out := make([]int64, len(users))
	for i, u := range users {
		out[i] = pgSeq(r.pos[u])
	}
	return out
}

// record appends c to the message log, inside the change's transaction and
// before any row changes: the record on the group's subject, then a notice
// to each added or removed user, whose sequence is that user's position. On error nothing is
// left that a reader would act on, and the error wraps ErrUnavailable.
func (s *Store) record(ctx context.Context, c *Change) (*recorded, error) {
	seq, err := s.appendChange(ctx, c)
	if err != nil {
		return nil, err
	}
	if s.afterAppend != nil {
		s.afterAppend(c.Group, seq)
	}
	r := &recorded{seq: seq, pos: make(map[string]uint64, len(c.Added)+len(c.Removed))}
	r.notices = true
	if err := s.notify(ctx, c, r.pos); err != nil {
		s.abandon(c, r)
		return nil, err
	}
	return r, nil
}

// notify appends a membership notice for each user c adds (joined) or
// removes (left) to the user's inbox, and sets its sequence in pos. The
// appends run concurrently; notices are published in the order of c's lists.
func (s *Store) notify(ctx context.Context, c *Change, pos map[string]uint64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	type sent struct {
		user string
		f    jetstream.PubAckFuture
	}
	futures := make([]sent, 0, len(c.Added)+len(c.Removed))
	var err error
	publish := func(users []string, event string) {
		for _, u := range users {
			if err != nil {
				return
			}
			m := nats.NewMsg(natsx.Inbox(u))
			m.Header.Set(HdrKind, KindMember)
			m.Header.Set(HdrGroup, c.Group)
			m.Header.Set(HdrEvent, event)
			m.Header.Set(HdrFrom, c.By)
			m.Data, _ = json.Marshal(notice{Type: KindMember, Group: c.Group, Event: event, By: c.By, TS: c.TS})
			var f jetstream.PubAckFuture
			if f, err = s.js.PublishMsgAsync(m, jetstream.WithExpectStream(natsx.StreamMsgs)); err == nil {
				futures = append(futures, sent{u, f})
			}
		}
	}
	publish(c.Added, EventJoined)
	publish(c.Removed, EventLeft)
	for _, sf := range futures {
		if err != nil {
			break
		}
		select {
		case ack := <-sf.f.Ok():
			pos[sf.user] = ack.Sequence
		case err = <-sf.f.Err():
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("groups: append membership notices of %s: %w: %w", c.Group, ErrUnavailable, err)
	}
	return nil
}

// notice is the body of a membership notice (readers use its headers).
type notice struct {
	Type  string `json:"type"`
	Group string `json:"group"`
	Event string `json:"event"`
	By    string `json:"by"`
	TS    int64  `json:"ts"`
}

// abandon retracts the inbox notices of a change that did not commit: every
// user it added is told it left, every user it removed that it joined
// (notices that never landed make their retraction a no-op for readers).
// A member whose removal is retracted misses the group's records between
// the two notices; one whose addition is retracted may receive the records
// between them. Best effort: a failure is logged.
func (s *Store) abandon(c *Change, r *recorded) {
	if r == nil || !r.notices {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	undo := &Change{Type: ChangeType, Group: c.Group, Added: c.Removed, Removed: c.Added, By: c.By, TS: now().UnixMilli()}
	if err := s.notify(ctx, undo, map[string]uint64{}); err != nil {
		s.log.Error("retract the membership notices of a failed change; members' devices may disagree with Postgres until they reconnect",
			"group_id", c.Group, "seq", r.seq, "err", err)
	}
}

// finish commits a recorded change. When the commit fails for sure (Postgres
// answered it), the change's notices are retracted; when its outcome is
// unknown (the connection failed), they are left, since retracting could
// undo a committed change, and the doubt is logged.
func (s *Store) finish(ctx context.Context, tx pgx.Tx, c *Change, r *recorded) error {
	err := tx.Commit(ctx)
	if err == nil {
		s.committed(c, r.seq)
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		s.abandon(c, r)
	} else if r.notices {
		s.log.Error("commit of a membership change failed with an unknown outcome; inbox notices may not match Postgres",
			"group_id", c.Group, "seq", r.seq, "err", err)
	}
	return err
}

// committed runs once a change is in Postgres: it drops the group's cache
// entry here, before the caller learns of the change, then announces the
// change so that every other Store drops its own.
func (s *Store) committed(c *Change, seq uint64) {
	s.cache.drop(c.Group)
	c.Seq = seq
	body, err := json.Marshal(c)
	if err == nil {
		err = s.nc.Publish(natsx.GroupsChanged(c.Group), body)
	}
	if err != nil {
		// Other nodes keep their entry until CacheTTL or a reconnect.
		s.log.Warn("announce membership change", "group_id", c.Group, "seq", seq, "err", err)
	}
}

// onChanged handles an announcement: the group's entry is stale.
func (s *Store) onChanged(m *nats.Msg) {
	group := m.Subject[len(natsx.GroupsChangedPrefix):]
	s.cache.drop(group)
	s.log.Debug("membership changed", "group_id", group)
}
