package groups_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/chat"
)

// Parallel adds, removals and leaves through two Stores (two nodes) keep
// the rules: a group with members always has an admin, and Postgres holds
// exactly what the log's membership records say, at the positions of the
// members' inbox notices.
func TestConcurrentChangesKeepRolesConsistent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	nodes := []*groups.Store{f.store(t, groups.Config{}), f.store(t, groups.Config{})}
	c := ctx(t)
	pool := users("u", 12)
	g, err := nodes[0].Create(c, pool[0], "Busy", pool[1:7])
	if err != nil {
		t.Fatal(err)
	}
	id := g.ID

	var changes, refusals atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for range 30 {
				s := nodes[rng.IntN(len(nodes))]
				actor := pool[rng.IntN(len(pool))]
				if rng.IntN(2) == 0 { // act as a current admin half of the time
					if ms, err := s.Members(c, id); err == nil {
						for _, m := range ms {
							if m.Role == chat.RoleAdmin {
								actor = m.User
							}
						}
					}
				}
				var err error
				switch op := rng.IntN(10); {
				case op < 5:
					i, j := rng.IntN(len(pool)), rng.IntN(len(pool)-1)
					if j >= i {
						j++
					}
					_, err = s.AddMembers(c, actor, id, []string{pool[i], pool[j]})
				case op < 8:
					err = s.RemoveMember(c, actor, id, pool[rng.IntN(len(pool))])
				default:
					err = s.RemoveMember(c, actor, id, actor)
				}
				switch {
				case err == nil:
					changes.Add(1)
				case errors.Is(err, groups.ErrNoGroup), errors.Is(err, groups.ErrNotAdmin), errors.Is(err, groups.ErrNotMember):
					refusals.Add(1)
				default:
					errs <- err
					return
				}
			}
		}()
	}
	// Meanwhile, every snapshot of the group with members has an admin.
	stop := make(chan struct{})
	watched := make(chan int)
	go func() {
		n := 0
		defer func() { watched <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var members, admins int
			err := f.pool.QueryRow(c, `SELECT count(*), count(*) FILTER (WHERE role = 'admin')
				FROM group_members WHERE group_id = $1`, id).Scan(&members, &admins)
			if err != nil {
				errs <- err
				return
			}
			if members > 0 && admins == 0 {
				errs <- fmt.Errorf("snapshot with %d members and no admin", members)
				return
			}
			n++
		}
	}()
	wg.Wait()
	close(stop)
	snapshots := <-watched
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d changes, %d refusals, %d snapshots", changes.Load(), refusals.Load(), snapshots)
	if changes.Load() < 20 {
		t.Errorf("only %d changes succeeded; the test exercised little", changes.Load())
	}

	// Replay the log: the group's records give the roles, the members'
	// inbox notices the positions. Each record is followed, before the
	// group's next record, by exactly the notices of its change, in its
	// order: joined for each user it adds, then left for each it removes.
	type interval struct {
		user     string
		from, to uint64
	}
	type notice struct{ user, event, from string }
	state := map[string]string{}  // role of each member, from the records
	joined := map[string]uint64{} // position of each member, from its notices
	var past []interval
	var due []notice // notices the latest record announced, not yet read
	records := 0
	for _, e := range f.memberLog(t, id) {
		if e.user != "" {
			n := notice{e.user, e.event, e.from}
			if len(due) == 0 || n != due[0] {
				t.Fatalf("notice %d (%+v) is not the next one its change announced (%+v)", e.seq, n, due)
			}
			due = due[1:]
			switch from, in := joined[e.user]; {
			case e.event == groups.EventJoined && in:
				t.Fatalf("notice %d: %s joined, already a member since %d", e.seq, e.user, from)
			case e.event == groups.EventJoined:
				joined[e.user] = e.seq
			case !in:
				t.Fatalf("notice %d: %s left, not a member", e.seq, e.user)
			default:
				past = append(past, interval{e.user, from, e.seq})
				delete(joined, e.user)
			}
			continue
		}
		if len(due) > 0 {
			t.Fatalf("record %d comes before the notices %+v of the previous change", e.seq, due)
		}
		ch := e.change
		for _, u := range ch.Added {
			role := chat.RoleMember
			if records == 0 && u == ch.By {
				role = chat.RoleAdmin
			}
			if _, dup := state[u]; dup {
				t.Fatalf("record %d adds %s, already a member", e.seq, u)
			}
			state[u] = role
			due = append(due, notice{u, groups.EventJoined, ch.By})
		}
		for _, u := range ch.Removed {
			if _, ok := state[u]; !ok {
				t.Fatalf("record %d removes %s, not a member", e.seq, u)
			}
			delete(state, u)
			due = append(due, notice{u, groups.EventLeft, ch.By})
		}
		for _, u := range ch.Promoted {
			state[u] = chat.RoleAdmin
		}
		records++
		admins := 0
		for _, role := range state {
			if role == chat.RoleAdmin {
				admins++
			}
		}
		if len(state) > 0 && admins == 0 {
			t.Errorf("after record %d the group has %d members and no admin", e.seq, len(state))
		}
	}
	if len(due) > 0 {
		t.Errorf("notices %+v of the last change are missing", due)
	}
	if len(joined) != len(state) {
		t.Errorf("members by the notices %v, by the records %v", joined, state)
	}
	// Every successful change appended one record (idempotent adds none).
	if int64(records-1) > changes.Load() {
		t.Errorf("%d records for %d successful changes", records-1, changes.Load())
	}
	// Postgres agrees with the log: roles, joined_seq and past intervals.
	rows, err := f.pool.Query(c, `SELECT user_id, role, joined_seq FROM group_members WHERE group_id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var u, role string
		var seq uint64
		if err := rows.Scan(&u, &role, &seq); err != nil {
			t.Fatal(err)
		}
		got[u] = role
		if seq != joined[u] {
			t.Errorf("%s joined at %d in Postgres, at %d in the log", u, seq, joined[u])
		}
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if fmt.Sprint(got) != fmt.Sprint(state) {
		t.Errorf("Postgres members %v, log replay %v", got, state)
	}
	rows, err = f.pool.Query(c, `SELECT user_id, joined_seq, left_seq FROM group_member_history
		WHERE group_id = $1 ORDER BY left_seq`, id)
	if err != nil {
		t.Fatal(err)
	}
	var hist []interval
	for rows.Next() {
		var iv interval
		if err := rows.Scan(&iv.user, &iv.from, &iv.to); err != nil {
			t.Fatal(err)
		}
		hist = append(hist, iv)
	}
	if !slices.Equal(hist, past) {
		t.Errorf("Postgres history %v, log replay %v", hist, past)
	}
	// And the caches of both nodes converge on the truth.
	for i, s := range nodes {
		eventually(t, fmt.Sprintf("node %d's cache agrees with Postgres", i), func() bool {
			ms, err := s.Members(c, id)
			if len(state) == 0 {
				return errors.Is(err, groups.ErrNoGroup)
			}
			m := map[string]string{}
			for _, x := range ms {
				m[x.User] = x.Role
			}
			return err == nil && fmt.Sprint(m) == fmt.Sprint(state)
		})
	}
}
