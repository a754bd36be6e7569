package groups_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/await"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/pg"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// fixture is one throwaway database and one NATS server with the message
// log: what the Stores of several nodes share.
type fixture struct {
	pool   *pgxpool.Pool
	ns     *server.Server
	js     jetstream.JetStream
	stream jetstream.Stream
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pool := pgtest.New(t)
	return newFixtureOn(t, pool)
}

func newFixtureOn(t *testing.T, pool *pgxpool.Pool) *fixture {
	t.Helper()
	ns := natstest.RunJetStream(t)
	_, js := natstest.Connect(t, ns)
	stream, err := js.CreateStream(ctx(t), natsx.MsgsStream(natsx.DefaultSettings()))
	if err != nil {
		t.Fatalf("create the message log: %v", err)
	}
	return &fixture{pool: pool, ns: ns, js: js, stream: stream}
}

var quiet = slog.New(slog.DiscardHandler)

// store returns a running Store of a node of its own (its own NATS
// connection) on f; it stops when the test ends.
func (f *fixture) store(t *testing.T, cfg groups.Config) *groups.Store {
	t.Helper()
	s := f.idle(t, cfg)
	run(t, s)
	return s
}

// idle returns a Store on f that is not running.
func (f *fixture) idle(t *testing.T, cfg groups.Config) *groups.Store {
	t.Helper()
	nc, js := natstest.Connect(t, f.ns)
	s, err := groups.New(cfg, f.pool, nc, js, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs s until the test ends, and waits until its cache is on.
func run(t *testing.T, s *groups.Store) {
	t.Helper()
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "the cache is on", func() bool { return groups.CacheOn(s) })
}

func ctx(t *testing.T) context.Context { return await.Context(t, 30*time.Second) }

// eventually polls cond until it holds, or fails the test after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	await.True(t, 5*time.Second, what, cond)
}

// scan calls fn for every message stored in the message log, in log order.
func (f *fixture) scan(t *testing.T, fn func(m *jetstream.RawStreamMsg)) {
	t.Helper()
	c := ctx(t)
	info, err := f.stream.Info(c)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := f.stream.GetMsg(c, seq)
		if err != nil {
			t.Fatalf("get record %d: %v", seq, err)
		}
		fn(m)
	}
}

// record is a membership record read back from the message log.
type record struct {
	seq    uint64
	kind   string
	from   string
	change groups.Change
}

// records returns the membership records on group's subject, in log order.
func (f *fixture) records(t *testing.T, group string) []record {
	t.Helper()
	var out []record
	f.scan(t, func(m *jetstream.RawStreamMsg) {
		if m.Subject != natsx.Group(group) || m.Header.Get(groups.HdrKind) != groups.KindMember {
			return
		}
		r := record{seq: m.Sequence, kind: m.Header.Get(groups.HdrKind), from: m.Header.Get(groups.HdrFrom)}
		if err := json.Unmarshal(m.Data, &r.change); err != nil {
			t.Fatalf("record %d: %v: %s", m.Sequence, err, m.Data)
		}
		out = append(out, r)
	})
	return out
}

// entry is a membership entry about one group in the message log: a record
// on the group's subject (user and event empty, change its body), or a
// membership notice in the inbox of user.
type entry struct {
	seq         uint64
	user, event string // a notice's user and event (joined or left)
	from        string
	change      groups.Change // a record's body
}

// memberLog returns group's membership records and every membership notice
// about group in users' inboxes, in log order: what a replay of the group's
// memberships reads. A user's positions (joined_seq, left_seq) are the
// sequences of its notices.
func (f *fixture) memberLog(t *testing.T, group string) []entry {
	t.Helper()
	var out []entry
	f.scan(t, func(m *jetstream.RawStreamMsg) {
		if m.Header.Get(groups.HdrKind) != groups.KindMember {
			return
		}
		e := entry{seq: m.Sequence, from: m.Header.Get(groups.HdrFrom)}
		switch {
		case m.Subject == natsx.Group(group):
			if ev := m.Header.Get(groups.HdrEvent); ev != "" {
				t.Fatalf("record %d on the group's subject has event %q", m.Sequence, ev)
			}
			if err := json.Unmarshal(m.Data, &e.change); err != nil {
				t.Fatalf("record %d: %v: %s", m.Sequence, err, m.Data)
			}
		case strings.HasPrefix(m.Subject, natsx.InboxPrefix) && m.Header.Get(groups.HdrGroup) == group:
			e.user = strings.TrimPrefix(m.Subject, natsx.InboxPrefix)
			e.event = m.Header.Get(groups.HdrEvent)
			if e.event != groups.EventJoined && e.event != groups.EventLeft {
				t.Fatalf("notice %d to %s has event %q", m.Sequence, e.user, e.event)
			}
		default:
			return
		}
		out = append(out, e)
	})
	return out
}

// position returns the position of user in group: the sequence of the
// latest notice about group in user's inbox, which must say event.
func (f *fixture) position(t *testing.T, group, user, event string) uint64 {
	t.Helper()
	log := f.memberLog(t, group)
	for i := len(log) - 1; i >= 0; i-- {
		if e := log[i]; e.user == user {
			if e.event != event {
				t.Fatalf("%s's latest notice about %s (at %d) says %s, want %s", user, group, e.seq, e.event, event)
			}
			return e.seq
		}
	}
	t.Fatalf("no notice about %s in %s's inbox", group, user)
	return 0
}

// lastSeq is the sequence of the latest membership record of group.
func (f *fixture) lastSeq(t *testing.T, group string) uint64 {
	t.Helper()
	rs := f.records(t, group)
	if len(rs) == 0 {
		t.Fatalf("no membership record for %s", group)
	}
	return rs[len(rs)-1].seq
}

// publish stores a stand-in group message on group's subject and returns
// its position.
func (f *fixture) publish(t *testing.T, group string) uint64 {
	t.Helper()
	ack, err := f.js.Publish(ctx(t), natsx.Group(group), []byte(`{"type":"message"}`))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// dbMembers reads group's members and roles straight from Postgres.
func dbMembers(t *testing.T, pool *pgxpool.Pool, group string) map[string]string {
	t.Helper()
	rows, err := pool.Query(ctx(t), `SELECT user_id, role FROM group_members WHERE group_id = $1`, group)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var u, r string
	if _, err := pgx.ForEachRow(rows, []any{&u, &r}, func() error { out[u] = r; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// show renders members as "alice:admin bob:member", in their order.
func show(ms []chat.Member) string {
	var b strings.Builder
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%s", m.User, m.Role)
	}
	return b.String()
}

// users returns n user ids with prefix.
func users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}

// proxy is a TCP proxy to Postgres that a test can cut, making Postgres
// unreachable for a pool that used to reach it.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(up, c); up.Close() }()
		go func() { defer p.wg.Done(); io.Copy(c, up); c.Close() }()
	}
}

// cut closes the listener and every connection, and waits for the copiers.
func (p *proxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// proxiedPool returns a pool on a fresh migrated database reached through a
// proxy, and the proxy.
func proxiedPool(t *testing.T) (*pgxpool.Pool, *proxy) {
	t.Helper()
	url := pgtest.NewURL(t)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
	url = strings.Replace(url, fmt.Sprintf("@%s:%d/", cfg.Host, cfg.Port), "@"+p.ln.Addr().String()+"/", 1)
	pool, err := pg.NewPool(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pg.Migrate(ctx(t), pool, pg.Migrations()); err != nil {
		t.Fatal(err)
	}
	return pool, p
}

// deadPool returns a pool pointed at a closed port.
func deadPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pg.NewPool(ctx(t), "postgres://postgres@127.0.0.1:1/jetchat?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
