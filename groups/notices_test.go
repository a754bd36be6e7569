package groups_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/natsx"
)

// inboxNotice is a membership notice read back from a user's inbox.
type inboxNotice struct {
	seq                uint64
	group, event, from string
}

// notices returns the membership notices in user's inbox, in log order.
func (f *fixture) notices(t *testing.T, user string) []inboxNotice {
	t.Helper()
	info, err := f.stream.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []inboxNotice
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := f.stream.GetMsg(ctx(t), seq)
		if err != nil {
			t.Fatalf("get record %d: %v", seq, err)
		}
		if m.Subject != natsx.Inbox(user) || m.Header.Get(groups.HdrKind) != groups.KindMember {
			continue
		}
		n := inboxNotice{seq: seq, group: m.Header.Get(groups.HdrGroup), event: m.Header.Get(groups.HdrEvent), from: m.Header.Get(groups.HdrFrom)}
		var body struct{ Type, Group, Event, By string }
		if err := json.Unmarshal(m.Data, &body); err != nil || body.Group != n.group || body.Event != n.event || body.By != n.from {
			t.Errorf("notice %d: body %s does not match its headers %+v (%v)", seq, m.Data, n, err)
		}
		out = append(out, n)
	}
	return out
}

// events renders notices as "joined:alice left:alice" (event:from).
func events(ns []inboxNotice) string {
	var parts []string
	for _, n := range ns {
		parts = append(parts, n.event+":"+n.from)
	}
	return strings.Join(parts, " ")
}

func TestInboxNotices(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{})
	c := ctx(t)
	g, err := s.Create(c, "alice", "Team", []string{"carol", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	id := g.ID
	// The group record first, then one notice per member, in member order.
	rs := f.records(t, id)
	if len(rs) != 1 || rs[0].change.Name != "Team" {
		t.Fatalf("group records = %+v, want the creation", rs)
	}
	joined := map[string]uint64{}
	prev := rs[0].seq
	for _, u := range []string{"alice", "bob", "carol"} {
		ns := f.notices(t, u)
		if len(ns) != 1 || ns[0].group != id || ns[0].event != groups.EventJoined || ns[0].from != "alice" {
			t.Fatalf("%s's notices = %+v, want one joined from alice", u, ns)
		}
		if ns[0].seq <= prev {
			t.Errorf("%s's notice at %d, not after %d", u, ns[0].seq, prev)
		}
		prev, joined[u] = ns[0].seq, ns[0].seq
		// The notice is the member's position.
		ivs, err := s.Memberships(c, u, 0)
		if err != nil || !slices.Equal(ivs, []groups.Interval{{Group: id, From: ns[0].seq}}) {
			t.Errorf("Memberships(%s) = %v, %v; want from its notice %d", u, ivs, err, ns[0].seq)
		}
	}
	if got, err := s.Get(c, "bob", id); err != nil || show(got.Members) != "alice:admin bob:member carol:member" {
		t.Errorf("Get = %v, %v", got, err)
	}
	// Adding: a notice for the added user only; an existing member: none.
	if _, err := s.AddMembers(c, "alice", id, []string{"dave", "bob"}); err != nil {
		t.Fatal(err)
	}
	if ns := f.notices(t, "dave"); events(ns) != "joined:alice" {
		t.Errorf("dave's notices = %s, want joined:alice", events(ns))
	}
	if ns := f.notices(t, "bob"); len(ns) != 1 {
		t.Errorf("bob, already a member, got %d notices", len(ns))
	}
	// Refusals write nothing.
	if err := s.RemoveMember(c, "bob", id, "carol"); !errors.Is(err, groups.ErrNotAdmin) {
		t.Fatalf("bob removes carol: %v", err)
	}
	if ns := f.notices(t, "carol"); len(ns) != 1 {
		t.Errorf("a refused removal wrote a notice to carol: %s", events(ns))
	}
	// Removing and leaving: a left notice, whose position ends the interval.
	if err := s.RemoveMember(c, "alice", id, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveMember(c, "carol", id, "carol"); err != nil {
		t.Fatal(err)
	}
	bob := f.notices(t, "bob")
	carol := f.notices(t, "carol")
	if events(bob) != "joined:alice left:alice" || events(carol) != "joined:alice left:carol" {
		t.Fatalf("notices: bob %s, carol %s", events(bob), events(carol))
	}
	bobOut := bob[1].seq
	if ivs, err := s.Memberships(c, "bob", 0); err != nil || !slices.Equal(ivs, []groups.Interval{{Group: id, From: joined["bob"], To: bobOut}}) {
		t.Errorf("Memberships(bob) = %v, %v; want [%d, %d)", ivs, err, joined["bob"], bobOut)
	}
	for _, tc := range []struct {
		seq  uint64
		want string
	}{
		{joined["alice"], "alice"},
		{joined["bob"], "alice bob"},
		{bobOut - 1, "alice bob carol dave"},
		{bobOut, "alice carol dave"},
		{carol[1].seq, "alice dave"},
	} {
		if got, err := s.MembersAt(c, id, tc.seq); err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("MembersAt(%d) = %v, %v; want %s", tc.seq, got, err, tc.want)
		}
	}
	if was, err := s.WasMember(c, id, "bob", bobOut-1); !was || err != nil {
		t.Errorf("WasMember(bob, just before his notice) = %v, %v", was, err)
	}
	if was, err := s.WasMember(c, id, "bob", bobOut); was || err != nil {
		t.Errorf("WasMember(bob, at his left notice) = %v, %v", was, err)
	}
	// Every change still has its record on the group's subject.
	if rs := f.records(t, id); len(rs) != 4 {
		t.Errorf("%d group records, want 4 (create, add, remove, leave)", len(rs))
	}
}

func TestInboxNoticesRetractedWhenPostgresFails(t *testing.T) {
	t.Parallel()
	pool, proxy := proxiedPool(t)
	f := newFixtureOn(t, pool)
	s := f.store(t, groups.Config{QueryTimeout: 3 * time.Second})
	c := ctx(t)
	g, err := s.Create(c, "alice", "Team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	// Postgres goes away between the log append and the row changes.
	var armed atomic.Bool
	groups.SetAfterAppend(s, func(string, uint64) {
		if armed.Load() {
			proxy.cut()
		}
	})
	armed.Store(true)
	_, err = s.AddMembers(c, "alice", g.ID, []string{"carol"})
	unavailable(t, "AddMembers while Postgres fails", err)
	// carol was told she joined, then that she left.
	if ns := f.notices(t, "carol"); events(ns) != "joined:alice left:alice" {
		t.Errorf("carol's notices = %s, want joined:alice left:alice", events(ns))
	}
	// Later changes fail before writing anything.
	unavailable(t, "RemoveMember", s.RemoveMember(c, "alice", g.ID, "bob"))
	if ns := f.notices(t, "bob"); events(ns) != "joined:alice" {
		t.Errorf("bob's notices = %s, want only joined:alice", events(ns))
	}
}
