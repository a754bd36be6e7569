package groups

import (
	"context"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/ident"
)

// Interval is one membership of a user in a group, in positions (stream
// sequences) of the message log: Group, From (the user's joined_seq) and To
// (its left_seq; 0 while a member). The user was a member at every position
// p with From <= p and, unless To is 0, p < To; From itself is the position
// of the user's own membership notice, never of a group message. It is chat.Interval, so
// that a Store serves package delivery as it is.
type Interval = chat.Interval

// pgSeq is seq as a Postgres bigint.
func pgSeq(seq uint64) int64 { return int64(min(seq, math.MaxInt64)) }

// MembersAt returns who was a member of group at log position seq, sorted
// by user id: those who joined at or before seq and had not left by then.
// It waits for a change of the group whose record is already in the log but
// not yet committed, so its answer for seq is final. It reads Postgres (one
// round trip), not the cache. An empty answer means nobody. Errors wrap
// ErrNoGroup (no such group) or ErrUnavailable.
func (s *Store) MembersAt(ctx context.Context, group string, seq uint64) ([]string, error) {
	if !ValidID(group) {
		return nil, ErrNoGroup
	}
	var exists bool
	var users []string
	err := s.readAt(ctx, group, func(b *pgx.Batch) {
		b.Queue(`SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)`, group).QueryRow(func(r pgx.Row) error {
			return r.Scan(&exists)
		})
		b.Queue(`SELECT user_id FROM group_members WHERE group_id = $1 AND joined_seq <= $2
			UNION
			SELECT user_id FROM group_member_history WHERE group_id = $1 AND joined_seq <= $2 AND left_seq > $2
			ORDER BY user_id`, group, pgSeq(seq)).Query(func(rows pgx.Rows) error {
			var err error
			users, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
	})
	if err != nil {
		return nil, storeErr("members of "+group+" at a log position", err)
	}
	if !exists {
		return nil, ErrNoGroup
	}
	if users == nil {
		users = []string{}
	}
	return users, nil
}

// WasMember reports whether user was a member of group at log position seq,
// with the guarantees of MembersAt. An unknown group or user is not an
// error: the answer is false. Errors wrap ErrUnavailable.
func (s *Store) WasMember(ctx context.Context, group, user string, seq uint64) (bool, error) {
	if !ValidID(group) || !ident.ValidToken(user) {
		return false, nil
	}
	var was bool
	err := s.readAt(ctx, group, func(b *pgx.Batch) {
		b.Queue(`SELECT EXISTS (SELECT 1 FROM group_members
				WHERE group_id = $1 AND user_id = $2 AND joined_seq <= $3)
			OR EXISTS (SELECT 1 FROM group_member_history
				WHERE group_id = $1 AND user_id = $2 AND joined_seq <= $3 AND left_seq > $3)`,
			group, user, pgSeq(seq)).QueryRow(func(r pgx.Row) error {
			return r.Scan(&was)
		})
	})
	if err != nil {
		return false, storeErr("membership in "+group+" at a log position", err)
	}
	return was, nil
}

// readAt runs the queries that queue adds, in one round trip, after taking
// group's change lock in shared mode: a change in flight (its record in the
// log, its transaction not committed) commits or fails first, and the
// queries, each with a snapshot of its own, see its outcome.
func (s *Store) readAt(ctx context.Context, group string, queue func(b *pgx.Batch)) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue(sqlLockRead, group)
	queue(b)
	// The batch runs in one implicit transaction, which holds the lock.
	return s.pool.SendBatch(ctx, b).Close()
}

// Memberships returns every interval of user in a group that ends after log
// position after: its current groups (To 0) and the groups it left at a
// position greater than after, ordered by group, then From. A device
// connecting with a cursor at after reads the groups' subjects for these
// intervals. It does not wait for changes in flight. Errors wrap
// ErrBadUsers (user is not a valid id) or ErrUnavailable.
func (s *Store) Memberships(ctx context.Context, user string, after uint64) ([]Interval, error) {
	if err := ident.User(user); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadUsers, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT group_id, joined_seq, 0::bigint FROM group_members WHERE user_id = $1
		UNION ALL
		SELECT group_id, joined_seq, left_seq FROM group_member_history WHERE user_id = $1 AND left_seq > $2
		ORDER BY 1, 2`, user, pgSeq(after))
	if err != nil {
		return nil, storeErr("memberships of "+user, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Interval, error) {
		var iv Interval
		err := r.Scan(&iv.Group, &iv.From, &iv.To)
		return iv, err
	})
	if err != nil {
		return nil, storeErr("memberships of "+user, err)
	}
	if out == nil {
		out = []Interval{}
	}
	return out, nil
}
