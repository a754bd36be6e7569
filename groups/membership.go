package groups

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/ident"
)

// member is a row of group_members.
type member struct {
	user string
	role string
	seq  uint64 // joined_seq
}

// Members of a group are listed in join order: by joined_seq, admins first
// among those who joined together (the creator first), then by user id.
const memberOrder = `joined_seq, role, user_id`

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// readMembers returns group's current members in member order.
func readMembers(ctx context.Context, q querier, group string) ([]member, error) {
	rows, err := q.Query(ctx, `SELECT user_id, role, joined_seq FROM group_members WHERE group_id = $1 ORDER BY `+memberOrder, group)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (member, error) {
		var m member
		err := r.Scan(&m.user, &m.role, &m.seq)
		return m, err
	})
}

// readGroup returns the name and members of group, or ErrNoGroup.
func readGroup(ctx context.Context, tx pgx.Tx, group string) (string, []member, error) {
	var name string
	err := tx.QueryRow(ctx, `SELECT name FROM groups WHERE id = $1`, group).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil, ErrNoGroup
	}
	if err != nil {
		return "", nil, err
	}
	ms, err := readMembers(ctx, tx, group)
	return name, ms, err
}

// find returns the index of user in ms, or -1.
func find(ms []member, user string) int {
	return slices.IndexFunc(ms, func(m member) bool { return m.user == user })
}

func chatMembers(ms []member) []chat.Member {
	out := make([]chat.Member, len(ms))
	for i, m := range ms {
		out[i] = chat.Member{User: m.user, Role: m.role}
	}
	return out
}

// Create makes a group named name whose admin is creator and whose other
// members are members (creator may name itself). It returns the group: the
// creator first, then the others by user id. Errors wrap ErrBadName,
// ErrBadUsers (an invalid id or a duplicate, named in the message),
// ErrTooMany or ErrUnavailable.
func (s *Store) Create(ctx context.Context, creator, name string, members []string) (*chat.Group, error) {
	if err := ident.User(creator); err != nil {
		return nil, fmt.Errorf("%w: creator: %s", ErrBadUsers, err)
	}
	name, err := s.checkName(name)
	if err != nil {
		return nil, err
	}
	others, err := s.checkUsers(members, creator)
	if err != nil {
		return nil, err
	}
	if err := s.checkSize(1 + len(others)); err != nil {
		return nil, err
	}
	slices.Sort(others)
	id := newID()
	at := now()
	c := &Change{Type: ChangeType, Group: id, Name: name, Added: append([]string{creator}, others...), By: creator, TS: at.UnixMilli()}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	tx, err := s.beginChange(ctx, id)
	if err != nil {
		return nil, storeErr("create group", err)
	}
	defer tx.Rollback(ctx)
	rec, err := s.record(ctx, c)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO groups (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)`,
		id, name, creator, at); err != nil {
		s.abandon(c, rec)
		return nil, storeErr("create group", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO group_members (group_id, user_id, role, joined_at, joined_seq)
		SELECT $1, u.id, CASE WHEN u.id = $2 THEN 'admin' ELSE 'member' END, $3, u.seq
		FROM unnest($4::text[], $5::bigint[]) AS u (id, seq)`,
		id, creator, at, c.Added, rec.seqs(c.Added)); err != nil {
		s.abandon(c, rec)
		return nil, storeErr("create group", err)
	}
	if err := s.finish(ctx, tx, c, rec); err != nil {
		return nil, storeErr("create group", err)
	}
	s.log.Debug("group created", "group_id", id, "user_id", creator, "members", len(c.Added), "seq", rec.seq)

	ms := make([]member, 0, len(c.Added))
	ms = append(ms, member{creator, chat.RoleAdmin, rec.pos[creator]})
	for _, u := range others {
		ms = append(ms, member{u, chat.RoleMember, rec.pos[u]})
	}
	return &chat.Group{ID: id, Name: name, Members: chatMembers(ms)}, nil
}

// Get returns group id for user, one of its members, or an error wrapping
// ErrNoGroup (no such group, or user is not a member) or ErrUnavailable.
func (s *Store) Get(ctx context.Context, user, id string) (*chat.Group, error) {
	if !ValidID(id) || !ident.ValidToken(user) {
		return nil, ErrNoGroup
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT g.name, m.user_id, m.role
		FROM groups g JOIN group_members m ON m.group_id = g.id
		WHERE g.id = $1 AND EXISTS (SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2)
		ORDER BY m.joined_seq, m.role, m.user_id`, id, user)
	if err != nil {
		return nil, storeErr("get group", err)
	}
	g := &chat.Group{ID: id, Members: []chat.Member{}}
	var m chat.Member
	_, err = pgx.ForEachRow(rows, []any{&g.Name, &m.User, &m.Role}, func() error {
		g.Members = append(g.Members, m)
		return nil
	})
	if err != nil {
		return nil, storeErr("get group", err)
	}
	if len(g.Members) == 0 {
		return nil, ErrNoGroup
	}
	return g, nil
}

// List returns the groups user belongs to, with their members, in the order
// user joined them; none is an empty slice. Errors wrap ErrUnavailable.
func (s *Store) List(ctx context.Context, user string) ([]chat.Group, error) {
	out := []chat.Group{}
	if !ident.ValidToken(user) {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT g.id, g.name, m.user_id, m.role
		FROM group_members mine
		JOIN groups g ON g.id = mine.group_id
		JOIN group_members m ON m.group_id = mine.group_id
		WHERE mine.user_id = $1
		ORDER BY mine.joined_seq, g.id, m.joined_seq, m.role, m.user_id`, user)
	if err != nil {
		return nil, storeErr("list groups", err)
	}
	var id, name string
	var m chat.Member
	_, err = pgx.ForEachRow(rows, []any{&id, &name, &m.User, &m.Role}, func() error {
		if len(out) == 0 || out[len(out)-1].ID != id {
			out = append(out, chat.Group{ID: id, Name: name})
		}
		g := &out[len(out)-1]
		g.Members = append(g.Members, m)
		return nil
	})
	if err != nil {
		return nil, storeErr("list groups", err)
	}
	return out, nil
}

// AddMembers adds users to group id as members; admin must be an admin of
// it. Users who are members already are left as they are, and when all are,
// nothing is recorded. It returns the group. Errors wrap ErrNoGroup (no such
// group, or admin is not a member), ErrNotAdmin, ErrBadUsers (an empty list,
// an invalid id, a duplicate), ErrTooMany or ErrUnavailable.
func (s *Store) AddMembers(ctx context.Context, admin, id string, users []string) (*chat.Group, error) {
	if !ValidID(id) || !ident.ValidToken(admin) {
		return nil, ErrNoGroup
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%w: name at least one user to add", ErrBadUsers)
	}
	users, err := s.checkUsers(users, "")
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	tx, err := s.beginChange(ctx, id)
	if err != nil {
		return nil, storeErr("add members", err)
	}
	defer tx.Rollback(ctx)
	name, ms, err := readGroup(ctx, tx, id)
	if err != nil {
		return nil, storeErr("add members", err)
	}
	switch i := find(ms, admin); {
	case i < 0:
		return nil, ErrNoGroup
	case ms[i].role != chat.RoleAdmin:
		return nil, ErrNotAdmin
	}
	current := make(map[string]struct{}, len(ms))
	for _, m := range ms {
		current[m.user] = struct{}{}
	}
	var added []string
	for _, u := range users {
		if _, ok := current[u]; !ok {
			added = append(added, u)
		}
	}
	if len(added) == 0 {
		return &chat.Group{ID: id, Name: name, Members: chatMembers(ms)}, nil
	}
	if err := s.checkSize(len(ms) + len(added)); err != nil {
		return nil, err
	}
	slices.Sort(added)
	at := now()
	c := &Change{Type: ChangeType, Group: id, Added: added, By: admin, TS: at.UnixMilli()}
	rec, err := s.record(ctx, c)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO group_members (group_id, user_id, role, joined_at, joined_seq)
		SELECT $1, u.id, 'member', $2, u.seq FROM unnest($3::text[], $4::bigint[]) AS u (id, seq)`,
		id, at, added, rec.seqs(added)); err != nil {
		s.abandon(c, rec)
		return nil, storeErr("add members", err)
	}
	if err := s.finish(ctx, tx, c, rec); err != nil {
		return nil, storeErr("add members", err)
	}
	s.log.Debug("members added", "group_id", id, "user_id", admin, "added", len(added), "seq", rec.seq)

	for _, u := range added {
		ms = append(ms, member{u, chat.RoleMember, rec.pos[u]})
	}
	return &chat.Group{ID: id, Name: name, Members: chatMembers(ms)}, nil
}

// RemoveMember removes user from group id: an admin removes anyone, and any
// member removes itself (leaves). When the last admin leaves, the
// longest-standing remaining member becomes admin. When the last member
// leaves, the group stays, with no members, visible to nobody. Errors wrap
// ErrNoGroup (no such group, or actor is not a member), ErrNotAdmin (a
// member removing another), ErrNotMember (user is not a member),
// ErrBadUsers (user is not a valid id) or ErrUnavailable.
func (s *Store) RemoveMember(ctx context.Context, actor, id, user string) error {
	if !ValidID(id) || !ident.ValidToken(actor) {
		return ErrNoGroup
	}
	if err := ident.User(user); err != nil {
		return fmt.Errorf("%w: %s", ErrBadUsers, err)
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	tx, err := s.beginChange(ctx, id)
	if err != nil {
		return storeErr("remove member", err)
	}
	defer tx.Rollback(ctx)
	_, ms, err := readGroup(ctx, tx, id)
	if err != nil {
		return storeErr("remove member", err)
	}
	a := find(ms, actor)
	if a < 0 {
		return ErrNoGroup
	}
	if actor != user && ms[a].role != chat.RoleAdmin {
		return ErrNotAdmin
	}
	t := find(ms, user)
	if t < 0 {
		return ErrNotMember
	}
	gone := ms[t]
	rest := slices.Delete(slices.Clone(ms), t, t+1)
	var promoted []string
	if gone.role == chat.RoleAdmin && len(rest) > 0 &&
		!slices.ContainsFunc(rest, func(m member) bool { return m.role == chat.RoleAdmin }) {
		// rest is in member order: the first joined earliest.
		promoted = []string{rest[0].user}
	}
	at := now()
	c := &Change{Type: ChangeType, Group: id, Removed: []string{user}, Promoted: promoted, By: actor, TS: at.UnixMilli()}
	rec, err := s.record(ctx, c)
	if err != nil {
		return err
	}
	err = func() error {
		if _, err := tx.Exec(ctx, `DELETE FROM group_members WHERE group_id = $1 AND user_id = $2`, id, user); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO group_member_history (group_id, user_id, joined_seq, left_seq, left_at)
			VALUES ($1, $2, $3, $4, $5)`, id, user, gone.seq, rec.pos[user], at); err != nil {
			return err
		}
		if len(promoted) > 0 {
			_, err := tx.Exec(ctx, `UPDATE group_members SET role = 'admin' WHERE group_id = $1 AND user_id = ANY($2)`, id, promoted)
			return err
		}
		return nil
	}()
	if err != nil {
		s.abandon(c, rec)
		return storeErr("remove member", err)
	}
	if err := s.finish(ctx, tx, c, rec); err != nil {
		return storeErr("remove member", err)
	}
	s.log.Debug("member removed", "group_id", id, "user_id", actor, "removed", user, "promoted", promoted, "seq", rec.seq)
	return nil
}
