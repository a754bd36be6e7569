package groups_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/groups"
)

func TestMembersAtAndMemberships(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{})
	c := ctx(t)
	g, err := s.Create(c, "alice", "Team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	id := g.ID
	// Positions are the sequences of the members' inbox notices, which
	// follow the change's record on the group's subject.
	created := f.lastSeq(t, id)
	aliceIn := f.position(t, id, "alice", groups.EventJoined)
	bobIn := f.position(t, id, "bob", groups.EventJoined)
	step := func(what string, fn func() error, user, event string) uint64 {
		t.Helper()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return f.position(t, id, user, event)
	}
	add := func(admin string, users ...string) func() error {
		return func() error { _, err := s.AddMembers(c, admin, id, users); return err }
	}
	rm := func(actor, user string) func() error {
		return func() error { return s.RemoveMember(c, actor, id, user) }
	}
	carolIn := step("add carol", add("alice", "carol"), "carol", groups.EventJoined)
	msg := f.publish(t, id) // a group message between changes
	bobOut := step("remove bob", rm("alice", "bob"), "bob", groups.EventLeft)
	bobBack := step("add bob again", add("alice", "bob"), "bob", groups.EventJoined)
	carolOut := step("carol leaves", rm("carol", "carol"), "carol", groups.EventLeft)
	// A second group, to check that positions stay per group.
	other, err := s.Create(c, "bob", "Other", nil)
	if err != nil {
		t.Fatal(err)
	}
	otherIn := f.position(t, other.ID, "bob", groups.EventJoined)
	// Each change's notices follow its record, and changes follow each other.
	order := []uint64{created, aliceIn, bobIn, carolIn, msg, bobOut, bobBack, carolOut, otherIn}
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Fatalf("positions not in log order: %v", order)
		}
	}

	for _, tc := range []struct {
		name string
		seq  uint64
		want string
	}{
		{"before the group", created - 1, ""},
		// The creation's record is not a position: its notices are.
		{"the creation's record", created, ""},
		{"alice's joined notice", aliceIn, "alice"},
		{"creation (bob's joined notice)", bobIn, "alice bob"},
		{"just before carol's notice", carolIn - 1, "alice bob"},
		{"carol added", carolIn, "alice bob carol"},
		{"a message after that", msg, "alice bob carol"},
		{"just before bob's removal", bobOut - 1, "alice bob carol"},
		{"bob removed", bobOut, "alice carol"},
		{"just before bob is back", bobBack - 1, "alice carol"},
		{"bob back", bobBack, "alice bob carol"},
		{"just before carol left", carolOut - 1, "alice bob carol"},
		{"carol left", carolOut, "alice bob"},
		{"long after", carolOut + 1000, "alice bob"},
	} {
		got, err := s.MembersAt(c, id, tc.seq)
		if err != nil || got == nil || strings.Join(got, " ") != tc.want {
			t.Errorf("MembersAt(%s = %d) = %q, %v; want %q", tc.name, tc.seq, got, err, tc.want)
		}
		for _, u := range []string{"alice", "bob", "carol", "dave"} {
			want := slices.Contains(strings.Fields(tc.want), u)
			if was, err := s.WasMember(c, id, u, tc.seq); err != nil || was != want {
				t.Errorf("WasMember(%s, %s = %d) = %v, %v; want %v", u, tc.name, tc.seq, was, err, want)
			}
		}
	}
	if _, err := s.MembersAt(c, "gNOSUCH", carolOut); !errors.Is(err, groups.ErrNoGroup) {
		t.Errorf("MembersAt of an unknown group: %v, want ErrNoGroup", err)
	}
	if _, err := s.MembersAt(c, "x.y", carolOut); !errors.Is(err, groups.ErrNoGroup) {
		t.Errorf("MembersAt of a malformed id: %v, want ErrNoGroup", err)
	}
	if was, err := s.WasMember(c, "gNOSUCH", "bob", carolOut); was || err != nil {
		t.Errorf("WasMember of an unknown group = %v, %v; want false, nil", was, err)
	}

	iv := func(group string, from, to uint64) groups.Interval {
		return groups.Interval{Group: group, From: from, To: to}
	}
	sorted := func(ivs ...groups.Interval) []groups.Interval {
		slices.SortFunc(ivs, func(a, b groups.Interval) int {
			if c := strings.Compare(a.Group, b.Group); c != 0 {
				return c
			}
			return int(a.From) - int(b.From)
		})
		return ivs
	}
	for _, tc := range []struct {
		user  string
		after uint64
		want  []groups.Interval
	}{
		{"bob", 0, sorted(iv(id, bobIn, bobOut), iv(id, bobBack, 0), iv(other.ID, otherIn, 0))},
		{"bob", bobOut - 1, sorted(iv(id, bobIn, bobOut), iv(id, bobBack, 0), iv(other.ID, otherIn, 0))},
		// An interval ending at after holds nothing after it.
		{"bob", bobOut, sorted(iv(id, bobBack, 0), iv(other.ID, otherIn, 0))},
		{"carol", 0, []groups.Interval{iv(id, carolIn, carolOut)}},
		{"carol", carolOut, []groups.Interval{}},
		{"alice", 0, []groups.Interval{iv(id, aliceIn, 0)}},
		{"dave", 0, []groups.Interval{}},
	} {
		got, err := s.Memberships(c, tc.user, tc.after)
		if err != nil || got == nil || !slices.Equal(got, tc.want) {
			t.Errorf("Memberships(%s, %d) = %v, %v; want %v", tc.user, tc.after, got, err, tc.want)
		}
	}
	if _, err := s.Memberships(c, "a.b", 0); !errors.Is(err, groups.ErrBadUsers) {
		t.Errorf("Memberships of a malformed user: %v, want ErrBadUsers", err)
	}
}

// A change whose record and notices are in the log but whose transaction
// has not committed yet must not be missed by a reader of a later position.
// The removal is held twice: after its record on the group's subject (before
// bob's left notice), by the test hook; then after bob's notice, on bob's
// row in Postgres, which a transaction of the test locks.
func TestMembersAtWaitsForAChangeInFlight(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{})
	reader := f.store(t, groups.Config{}) // another node
	c := ctx(t)
	g, err := s.Create(c, "alice", "Team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	bobIn := f.position(t, g.ID, "bob", groups.EventJoined)
	hold, err := f.pool.Begin(c)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	releaseRow := func() {
		if !released {
			released = true
			hold.Rollback(context.Background())
		}
	}
	t.Cleanup(releaseRow) // a failing test must not leave the change hanging
	var one int
	if err := hold.QueryRow(c, `SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = 'bob' FOR UPDATE`, g.ID).Scan(&one); err != nil {
		t.Fatalf("lock bob's row: %v", err)
	}
	appended := make(chan uint64, 1)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	groups.SetAfterAppend(s, func(group string, seq uint64) {
		appended <- seq
		<-release
	})
	removed := make(chan error, 1)
	go func() { removed <- s.RemoveMember(c, "alice", g.ID, "bob") }()
	record := <-appended

	type answer struct {
		users []string
		err   error
	}
	membersAt := func(seq uint64) chan answer {
		answers := make(chan answer, 1)
		go func() {
			users, err := reader.MembersAt(c, g.ID, seq)
			answers <- answer{users, err}
		}()
		return answers
	}
	type was struct {
		was bool
		err error
	}
	wasMember := func(seq uint64) chan was {
		answers := make(chan was, 1)
		go func() {
			w, err := reader.WasMember(c, g.ID, "bob", seq)
			answers <- was{w, err}
		}()
		return answers
	}
	// Held after its record: a message sent now comes before bob's notice.
	mid := f.publish(t, g.ID)
	midAnswer := membersAt(mid)
	time.Sleep(300 * time.Millisecond)
	stillWaiting(t, "MembersAt(message before bob's notice), record appended", midAnswer)
	unblock()

	// Held on bob's row, after his left notice.
	var bobOut uint64
	eventually(t, "bob's left notice is in the log", func() bool {
		log := f.memberLog(t, g.ID)
		for _, e := range log {
			if e.user == "bob" && e.event == groups.EventLeft {
				bobOut = e.seq
				return true
			}
		}
		return false
	})
	if !(record < mid && mid < bobOut) {
		t.Fatalf("record %d, message %d, bob's left notice %d: not in this order", record, mid, bobOut)
	}
	after := f.publish(t, g.ID) // a message sent after the removal's notice
	afterAnswer, afterWas, atWas := membersAt(after), wasMember(after), wasMember(bobOut)
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-removed:
		t.Fatalf("the removal returned %v while bob's row was locked", err)
	default:
	}
	stillWaiting(t, "MembersAt(message before bob's notice), notices appended", midAnswer)
	stillWaiting(t, "MembersAt(message after bob's notice)", afterAnswer)
	stillWaiting(t, "WasMember(bob, message after his notice)", afterWas)
	stillWaiting(t, "WasMember(bob, his left notice)", atWas)
	releaseRow()
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	// bob left at his notice: a member for the message before it, not after.
	if a := <-midAnswer; a.err != nil || !slices.Equal(a.users, []string{"alice", "bob"}) {
		t.Errorf("MembersAt(between the record and bob's notice) = %v, %v; want [alice bob]", a.users, a.err)
	}
	if a := <-afterAnswer; a.err != nil || !slices.Equal(a.users, []string{"alice"}) {
		t.Errorf("MembersAt(after the removal) = %v, %v; want [alice]", a.users, a.err)
	}
	if a := <-afterWas; a.was || a.err != nil {
		t.Errorf("WasMember(bob, after) = %v, %v; want false", a.was, a.err)
	}
	if a := <-atWas; a.was || a.err != nil {
		t.Errorf("WasMember(bob, at his left notice) = %v, %v; want false", a.was, a.err)
	}
	if was, err := reader.WasMember(c, g.ID, "bob", bobOut-1); !was || err != nil {
		t.Errorf("WasMember(bob, just before his left notice) = %v, %v; want true", was, err)
	}
	if ivs, err := reader.Memberships(c, "bob", 0); err != nil || !slices.Equal(ivs, []groups.Interval{{Group: g.ID, From: bobIn, To: bobOut}}) {
		t.Errorf("Memberships(bob) = %v, %v; want [%d, %d)", ivs, err, bobIn, bobOut)
	}
}

// stillWaiting fails the test if a reader already answered on ch while a
// change is in flight.
func stillWaiting[T any](t *testing.T, what string, ch chan T) {
	t.Helper()
	select {
	case a := <-ch:
		t.Fatalf("%s answered %+v while the removal was in flight", what, a)
	default:
	}
}
