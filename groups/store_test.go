package groups_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
)

func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	nc, js := natstest.Connect(t, natstest.RunJetStream(t))
	pool := deadPool(t) // New connects to nothing
	for _, tc := range []struct {
		name string
		cfg  groups.Config
		ok   bool
	}{
		{"zero takes defaults", groups.Config{}, true},
		{"smallest group", groups.Config{MaxMembers: 1}, true},
		{"negative size", groups.Config{MaxMembers: -1}, false},
		{"negative name length", groups.Config{MaxNameLen: -5}, false},
		{"negative query timeout", groups.Config{QueryTimeout: -1}, false},
		{"negative publish timeout", groups.Config{PublishTimeout: -1}, false},
		{"negative cache", groups.Config{CacheMembers: -1}, false},
		{"negative TTL", groups.Config{CacheTTL: -1}, false},
	} {
		s, err := groups.New(tc.cfg, pool, nc, js, nil)
		if got := err == nil && s != nil; got != tc.ok {
			t.Errorf("%s: New = %v, %v; want ok %v", tc.name, s, err, tc.ok)
		}
	}
	if _, err := groups.New(groups.Config{}, nil, nc, js, nil); err == nil {
		t.Error("New without a pool succeeded")
	}
	if d := groups.Defaults(); d.MaxMembers != 1024 || d.MaxNameLen != 100 {
		t.Errorf("Defaults() = %+v, want MaxMembers 1024, MaxNameLen 100", d)
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{})
	long := strings.Repeat("é", 100)
	for _, tc := range []struct {
		name     string
		gname    string
		members  []string
		want     string // members as show renders them, or "" for an error
		wantName string
		err      error  // the package error expected
		kind     error  // the chat error it wraps
		msg      string // part of the error's text
	}{
		{name: "alone", gname: "Solo", want: "alice:admin", wantName: "Solo"},
		{name: "members sorted after the creator", gname: "Team", members: []string{"carol", "bob"},
			want: "alice:admin bob:member carol:member", wantName: "Team"},
		{name: "creator may name itself", gname: "Team", members: []string{"bob", "alice"},
			want: "alice:admin bob:member", wantName: "Team"},
		{name: "name trimmed", gname: "  Team \t", want: "alice:admin", wantName: "Team"},
		{name: "longest name", gname: long, want: "alice:admin", wantName: long},
		{name: "full group", gname: "Full", members: users("u", 1023), want: "", wantName: "Full"},
		{name: "empty name", gname: " ", err: groups.ErrBadName, kind: chat.ErrBadRequest, msg: "name is required"},
		{name: "name too long", gname: long + "x", err: groups.ErrBadName, kind: chat.ErrBadRequest, msg: "at most 100"},
		{name: "control character", gname: "a\nb", err: groups.ErrBadName, kind: chat.ErrBadRequest, msg: "control"},
		{name: "not UTF-8", gname: "a\xffb", err: groups.ErrBadName, kind: chat.ErrBadRequest, msg: "UTF-8"},
		{name: "invalid user id", gname: "x", members: []string{"bob", "a.b"},
			err: groups.ErrBadUsers, kind: chat.ErrBadRequest, msg: `"a.b"`},
		{name: "empty user id", gname: "x", members: []string{""},
			err: groups.ErrBadUsers, kind: chat.ErrBadRequest, msg: `""`},
		{name: "duplicate", gname: "x", members: []string{"bob", "carol", "bob"},
			err: groups.ErrBadUsers, kind: chat.ErrBadRequest, msg: `"bob" is listed more than once`},
		{name: "one over the limit", gname: "x", members: users("u", 1024),
			err: groups.ErrTooMany, kind: chat.ErrTooLarge, msg: "at most 1024 members, this one would have 1025"},
		{name: "2000 members", gname: "x", members: users("u", 2000),
			err: groups.ErrTooMany, kind: chat.ErrTooLarge, msg: "at most 1024 members, 2000 users were given"},
	} {
		g, err := s.Create(ctx(t), "alice", tc.gname, tc.members)
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: Create error = %v, want %v (%v) saying %q", tc.name, err, tc.err, tc.kind, tc.msg)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Create: %v", tc.name, err)
			continue
		}
		if !groups.ValidID(g.ID) || g.Name != tc.wantName {
			t.Errorf("%s: Create = id %q name %q, want a valid id and name %q", tc.name, g.ID, g.Name, tc.wantName)
		}
		if tc.want != "" && show(g.Members) != tc.want {
			t.Errorf("%s: members = %s, want %s", tc.name, show(g.Members), tc.want)
		}
		got, err := s.Get(ctx(t), "alice", g.ID)
		if err != nil || show(got.Members) != show(g.Members) || got.Name != g.Name {
			t.Errorf("%s: Get = %+v, %v; want what Create returned", tc.name, got, err)
		}
		// The change went to the log first, with its headers and body.
		rs := f.records(t, g.ID)
		if len(rs) != 1 {
			t.Errorf("%s: %d membership records, want 1", tc.name, len(rs))
			continue
		}
		c := rs[0].change
		others := slices.DeleteFunc(slices.Clone(tc.members), func(u string) bool { return u == "alice" })
		slices.Sort(others)
		wantAdded := append([]string{"alice"}, others...)
		if rs[0].from != "alice" || c.Type != "members" || c.Group != g.ID || c.Name != tc.wantName || c.By != "alice" ||
			!slices.Equal(c.Added, wantAdded) || len(c.Removed) != 0 || c.TS == 0 {
			t.Errorf("%s: record = from %q %+v", tc.name, rs[0].from, c)
		}
	}
	if tc := "full group"; len(dbMembers(t, f.pool, mustList(t, s, "u1022", 1)[0].ID)) != 1024 {
		t.Errorf("%s: the group of 1024 does not have 1024 members", tc)
	}
	// Refused creates left nothing behind.
	var n int
	if err := f.pool.QueryRow(ctx(t), `SELECT count(*) FROM groups`).Scan(&n); err != nil || n != 6 {
		t.Errorf("groups in Postgres = %d, %v; want 6 (the successful creates)", n, err)
	}
}

// mustList lists user's groups and checks there are n.
func mustList(t *testing.T, s *groups.Store, user string, n int) []chat.Group {
	t.Helper()
	gs, err := s.List(ctx(t), user)
	if err != nil || len(gs) != n {
		t.Fatalf("List(%s) = %d groups, %v; want %d", user, len(gs), err, n)
	}
	return gs
}

func TestOnlyMembersSeeAGroup(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{})
	g1, err := s.Create(ctx(t), "alice", "One", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	g2, err := s.Create(ctx(t), "bob", "Two", []string{"carol"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, id string
		ok       bool
	}{
		{"alice", g1.ID, true},
		{"bob", g1.ID, true},
		{"carol", g1.ID, false}, // exists, not a member
		{"alice", g2.ID, false},
		{"alice", "gNOSUCHGROUP", false},
		{"alice", "not-a-group", false},
		{"alice", "g.>", false},
		{"a.b", g1.ID, false},
	} {
		g, err := s.Get(ctx(t), tc.user, tc.id)
		switch {
		case tc.ok && (err != nil || g.ID != tc.id):
			t.Errorf("Get(%s, %s) = %+v, %v; want the group", tc.user, tc.id, g, err)
		case !tc.ok && (!errors.Is(err, groups.ErrNoGroup) || !errors.Is(err, chat.ErrNotFound)):
			t.Errorf("Get(%s, %s) error = %v, want ErrNoGroup (not found)", tc.user, tc.id, err)
		}
	}
	for _, tc := range []struct {
		user string
		want []string
	}{
		{"alice", []string{g1.ID}},
		{"bob", []string{g1.ID, g2.ID}}, // in the order bob joined them
		{"carol", []string{g2.ID}},
		{"dave", []string{}},
	} {
		gs, err := s.List(ctx(t), tc.user)
		if err != nil {
			t.Fatal(err)
		}
		got := []string{}
		for _, g := range gs {
			got = append(got, g.ID)
			if len(g.Members) != 2 || g.Name == "" {
				t.Errorf("List(%s) holds %+v, want the group with its 2 members", tc.user, g)
			}
		}
		if gs == nil || !slices.Equal(got, tc.want) {
			t.Errorf("List(%s) = %v, want %v", tc.user, got, tc.want)
		}
	}
}

func TestAddMembers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{MaxMembers: 6})
	g, err := s.Create(ctx(t), "alice", "Team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		actor string
		id    string
		users []string
		want  string // members after, or ""
		err   error
		kind  error
		msg   string
		log   bool // a record is appended
	}{
		{name: "admin adds", actor: "alice", users: []string{"dave", "carol"},
			want: "alice:admin bob:member carol:member dave:member", log: true},
		{name: "existing member: unchanged", actor: "alice", users: []string{"bob"},
			want: "alice:admin bob:member carol:member dave:member"},
		{name: "existing and new", actor: "alice", users: []string{"carol", "erin"},
			want: "alice:admin bob:member carol:member dave:member erin:member", log: true},
		{name: "member is not admin", actor: "bob", users: []string{"frank"},
			err: groups.ErrNotAdmin, kind: chat.ErrForbidden, msg: "only an admin"},
		{name: "stranger", actor: "mallory", users: []string{"mallory"}, err: groups.ErrNoGroup, kind: chat.ErrNotFound},
		{name: "unknown group", actor: "alice", id: "gNOPE", users: []string{"x"}, err: groups.ErrNoGroup, kind: chat.ErrNotFound},
		{name: "malformed group", actor: "alice", id: "g.*", users: []string{"x"}, err: groups.ErrNoGroup, kind: chat.ErrNotFound},
		{name: "no users", actor: "alice", users: nil, err: groups.ErrBadUsers, kind: chat.ErrBadRequest, msg: "at least one"},
		{name: "invalid id", actor: "alice", users: []string{"frank", "fr ank"}, err: groups.ErrBadUsers, kind: chat.ErrBadRequest, msg: `"fr ank"`},
		{name: "duplicate", actor: "alice", users: []string{"frank", "frank"}, err: groups.ErrBadUsers, kind: chat.ErrBadRequest, msg: `"frank"`},
		{name: "past the limit", actor: "alice", users: []string{"frank", "grace"},
			err: groups.ErrTooMany, kind: chat.ErrTooLarge, msg: "at most 6 members, this one would have 7"},
		{name: "up to the limit", actor: "alice", users: []string{"alice", "frank"},
			want: "alice:admin bob:member carol:member dave:member erin:member frank:member", log: true},
	} {
		id := g.ID
		if tc.id != "" {
			id = tc.id
		}
		before := len(f.records(t, g.ID))
		got, err := s.AddMembers(ctx(t), tc.actor, id, tc.users)
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: AddMembers error = %v, want %v (%v) saying %q", tc.name, err, tc.err, tc.kind, tc.msg)
			}
		} else if err != nil || show(got.Members) != tc.want {
			t.Errorf("%s: AddMembers = %v, %v; want %s", tc.name, got, err, tc.want)
		}
		after := f.records(t, g.ID)
		if grew := len(after) > before; grew != tc.log {
			t.Errorf("%s: appended a record: %v, want %v", tc.name, grew, tc.log)
		} else if grew {
			c := after[len(after)-1]
			if c.from != tc.actor || c.change.By != tc.actor || len(c.change.Added) == 0 || len(c.change.Removed) != 0 {
				t.Errorf("%s: record from %q = %+v", tc.name, c.from, c.change)
			}
		}
		if tc.want != "" {
			if g, err := s.Get(ctx(t), "bob", g.ID); err != nil || show(g.Members) != tc.want {
				t.Errorf("%s: Get after = %v, %v; want %s", tc.name, g, err, tc.want)
			}
		}
	}
}

func TestRemoveMember(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{})
	g, err := s.Create(ctx(t), "alice", "Team", []string{"bob", "carol", "dave"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddMembers(ctx(t), "alice", g.ID, []string{"erin"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		actor, user string
		id          string
		want        string // members after, or "" for an error
		err, kind   error
	}{
		{name: "member removes another", actor: "bob", user: "carol", err: groups.ErrNotAdmin, kind: chat.ErrForbidden},
		{name: "member removes the admin", actor: "bob", user: "alice", err: groups.ErrNotAdmin, kind: chat.ErrForbidden},
		{name: "stranger", actor: "mallory", user: "bob", err: groups.ErrNoGroup, kind: chat.ErrNotFound},
		{name: "stranger leaves", actor: "mallory", user: "mallory", err: groups.ErrNoGroup, kind: chat.ErrNotFound},
		{name: "unknown group", actor: "alice", user: "bob", id: "gNOPE", err: groups.ErrNoGroup, kind: chat.ErrNotFound},
		{name: "not a member", actor: "alice", user: "mallory", err: groups.ErrNotMember, kind: chat.ErrNotFound},
		{name: "invalid user", actor: "alice", user: "a/b", err: groups.ErrBadUsers, kind: chat.ErrBadRequest},
		{name: "admin removes a member", actor: "alice", user: "carol", want: "alice:admin bob:member dave:member erin:member"},
		{name: "member leaves", actor: "dave", user: "dave", want: "alice:admin bob:member erin:member"},
		{name: "removed again", actor: "alice", user: "carol", err: groups.ErrNotMember, kind: chat.ErrNotFound},
		{name: "removed member removes", actor: "carol", user: "bob", err: groups.ErrNoGroup, kind: chat.ErrNotFound},
	} {
		id := g.ID
		if tc.id != "" {
			id = tc.id
		}
		before := len(f.records(t, g.ID))
		err := s.RemoveMember(ctx(t), tc.actor, id, tc.user)
		after := f.records(t, g.ID)
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !errors.Is(err, tc.kind) {
				t.Errorf("%s: RemoveMember error = %v, want %v (%v)", tc.name, err, tc.err, tc.kind)
			}
			if len(after) != before {
				t.Errorf("%s: a refused removal appended a record", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: RemoveMember: %v", tc.name, err)
			continue
		}
		if got, err := s.Get(ctx(t), "alice", g.ID); err != nil || show(got.Members) != tc.want {
			t.Errorf("%s: Get after = %v, %v; want %s", tc.name, got, err, tc.want)
		}
		if _, err := s.Get(ctx(t), tc.user, g.ID); !errors.Is(err, groups.ErrNoGroup) {
			t.Errorf("%s: the removed user still sees the group: %v", tc.name, err)
		}
		if len(after) != before+1 {
			t.Errorf("%s: %d records appended, want 1", tc.name, len(after)-before)
		} else if c := after[len(after)-1]; c.from != tc.actor || !slices.Equal(c.change.Removed, []string{tc.user}) || len(c.change.Added) != 0 {
			t.Errorf("%s: record from %q = %+v", tc.name, c.from, c.change)
		}
	}
}

func TestLastAdminLeaving(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{})
	// carol joined first; aaron later, though his id sorts first.
	g, err := s.Create(ctx(t), "alice", "Team", []string{"carol", "dora"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddMembers(ctx(t), "alice", g.ID, []string{"aaron"}); err != nil {
		t.Fatal(err)
	}
	// Positions are the members' notices: the creation's in member order
	// (the creator, then by id), then aaron's.
	in := map[string]uint64{}
	for _, u := range []string{"alice", "carol", "dora", "aaron"} {
		in[u] = f.position(t, g.ID, u, groups.EventJoined)
	}
	if !(in["alice"] < in["carol"] && in["carol"] < in["dora"] && in["dora"] < in["aaron"]) {
		t.Fatalf("joined positions %v, want alice < carol < dora < aaron", in)
	}
	steps := []struct {
		actor, user string
		want        string
		promoted    []string
	}{
		// The longest-standing member takes over: carol, created with the
		// group, whose notice came before dora's, and not aaron, who joined
		// later though his id sorts first.
		{"alice", "alice", "carol:admin dora:member aaron:member", []string{"carol"}},
		// An admin removing a member promotes nobody.
		{"carol", "dora", "carol:admin aaron:member", nil},
		{"carol", "carol", "aaron:admin", []string{"aaron"}},
		// The last member leaves: the group stays, with no members.
		{"aaron", "aaron", "", nil},
	}
	for _, st := range steps {
		if err := s.RemoveMember(ctx(t), st.actor, g.ID, st.user); err != nil {
			t.Fatalf("%s removes %s: %v", st.actor, st.user, err)
		}
		rs := f.records(t, g.ID)
		if c := rs[len(rs)-1].change; !slices.Equal(c.Promoted, st.promoted) {
			t.Errorf("%s removes %s: record promotes %v, want %v", st.actor, st.user, c.Promoted, st.promoted)
		}
		if st.want == "" {
			continue
		}
		got, err := s.Get(ctx(t), strings.Split(st.want, ":")[0], g.ID)
		if err != nil || show(got.Members) != st.want {
			t.Errorf("%s removes %s: members = %v, %v; want %s", st.actor, st.user, got, err, st.want)
		}
	}
	// Visible to nobody, even its former members and creator.
	for _, u := range []string{"alice", "carol", "dora", "aaron"} {
		if _, err := s.Get(ctx(t), u, g.ID); !errors.Is(err, groups.ErrNoGroup) {
			t.Errorf("Get(%s) of the empty group: %v, want ErrNoGroup", u, err)
		}
		if _, err := s.AddMembers(ctx(t), u, g.ID, []string{"x"}); !errors.Is(err, groups.ErrNoGroup) {
			t.Errorf("AddMembers(%s) to the empty group: %v, want ErrNoGroup", u, err)
		}
		mustList(t, s, u, 0)
	}
	if _, err := s.Members(ctx(t), g.ID); !errors.Is(err, groups.ErrNoGroup) {
		t.Errorf("Members of the empty group: %v, want ErrNoGroup", err)
	}
	// It stays in Postgres, and its history still answers.
	var n int
	if err := f.pool.QueryRow(ctx(t), `SELECT count(*) FROM groups WHERE id = $1`, g.ID).Scan(&n); err != nil || n != 1 {
		t.Errorf("the empty group is in Postgres %d times, %v; want once", n, err)
	}
	for _, tc := range []struct {
		name string
		seq  uint64
		want string
	}{
		{"the creation's record", f.records(t, g.ID)[0].seq, ""},
		{"alice's joined notice", in["alice"], "alice"},
		{"carol's joined notice", in["carol"], "alice carol"},
		{"creation (dora's joined notice)", in["dora"], "alice carol dora"},
		{"aaron's joined notice", in["aaron"], "aaron alice carol dora"},
		{"aaron's left notice", f.position(t, g.ID, "aaron", groups.EventLeft), ""},
	} {
		if at, err := s.MembersAt(ctx(t), g.ID, tc.seq); err != nil || strings.Join(at, " ") != tc.want {
			t.Errorf("MembersAt(%s = %d) of the empty group = %v, %v; want %q", tc.name, tc.seq, at, err, tc.want)
		}
	}
}
