package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// chaosConfig sizes TestClusterChaos.
type chaosConfig struct {
	users      int           // users, each with one device
	twoDevices int           // of which this many have a second device
	groups     int           // groups of groupSize members
	groupSize  int           //
	sendEvery  time.Duration // each user sends about this often
	warm       time.Duration // traffic before the first failure
	phase      time.Duration // traffic after each failure
	churn      int           // devices that reconnect just after the NATS kill
}

// TestClusterChaos runs steady 1:1 and group traffic between users spread
// over 3 gateways (ownership enforced) on a 3-node NATS cluster, then kills
// with SIGKILL the NATS server that leads the message log, then a gateway,
// then restarts both. Clients behave as the protocol asks: they reconnect
// through GET /v1/route, follow 421 and 4002, resend with the same cid
// until answered `sent`, and ack what they receive; some of them reconnect
// right after the NATS kill, so that sessions attach, cursors load and
// presence is written while the cluster elects leaders, and a group admin
// adds a member then (retrying on 503 as a client would). At the end every
// `sent` message has reached every device of every recipient (and the
// sender's other devices), every cid got one id and no two cids the same,
// no message that was not `sent` was delivered, every recipient's
// `delivered` receipt reached every device of the sender, and every user
// shows online. The longest pause in `sent` answers during each failure is
// logged.
//
// It takes about a minute; JETCHAT_LONG=1 doubles every phase.
func TestClusterChaos(t *testing.T) {
	t.Parallel()
	cfg := chaosConfig{users: 200, twoDevices: 40, groups: 20, groupSize: 8, sendEvery: 2 * time.Second, warm: 5 * time.Second, phase: 15 * time.Second, churn: 30}
	if os.Getenv("JETCHAT_LONG") != "" {
		cfg.warm, cfg.phase = 2*cfg.warm, 2*cfg.phase
	}
	nc := startNATSCluster(t)
	dbURL := pgtest.NewURL(t)
	logs := &gatewayLogs{}
	var gws []*gatewayProc
	for i := 1; i <= 3; i++ {
		id := fmt.Sprint("gw-", i)
		gws = append(gws, startGatewayTo(t, logs.writer(id), nc, dbURL, id, "", "", "--enforce-ownership", "--log-level", "warn"))
	}
	waitRoutes(t, ringOf(gws...), "probe", gws...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	sim := newChaosSim(t, cfg, gws)
	sim.connectAll(ctx)
	sim.makeGroups(ctx, gws[0])
	t.Logf("%d users (%d devices) connected, %d groups of %d", cfg.users, len(sim.devices), cfg.groups, cfg.groupSize)

	sim.startTraffic(ctx)
	time.Sleep(cfg.warm)

	leaders, err := nc.leaders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := leaders[natsx.StreamMsgs]
	var led []string
	for st, l := range leaders {
		if l == leader {
			led = append(led, st)
		}
	}
	slices.Sort(led)
	victim := nc.node(leader)
	natsKill := time.Now()
	victim.kill()
	t.Logf("SIGKILL nats-server %s, leader of %s", leader, strings.Join(led, ", "))
	sim.churn(cfg.churn)
	added := make(chan struct{})
	go func() { defer close(added); sim.addMember(ctx) }()
	time.Sleep(cfg.phase)
	if l, err := nc.streamLeader(ctx, natsx.StreamMsgs); err == nil {
		t.Logf("%s's new leader: %s", natsx.StreamMsgs, l)
	}

	gwKill := time.Now()
	dead := gws[1]
	stranded := sim.on(dead.id)
	dead.kill()
	t.Logf("SIGKILL gateway %s with %d devices", dead.id, len(stranded))
	time.Sleep(cfg.phase)
	sim.rerouted(stranded, gwKill)

	<-added
	restart := time.Now()
	nc.restart(victim)
	sim.setGateway(1, startGatewayTo(t, logs.writer(dead.id+"'"), nc, dbURL, dead.id, dead.addr, dead.data, "--enforce-ownership", "--log-level", "warn"))
	t.Logf("restarted nats-server %s and gateway %s", leader, dead.id)
	time.Sleep(cfg.phase)

	stop := time.Now()
	sim.stopTraffic()
	sent := sim.sentCount()
	missing := sim.waitDelivered(ctx, 90*time.Second)
	t.Logf("%d messages sent, drained %s after traffic stopped", sent, time.Since(stop).Truncate(time.Millisecond))

	for _, p := range []struct {
		name     string
		from, to time.Time
	}{
		{"steady traffic", sim.start, natsKill},
		{"NATS stream leader killed", natsKill, gwKill},
		{"gateway " + dead.id + " killed", gwKill, restart},
		{"both restarted", restart, stop},
	} {
		gap, slowest, moved := sim.pause(p.from, p.to)
		t.Logf("%-28s longest pause between sent answers %6s; slowest send (first try to sent) %6s; sends answered %d",
			p.name+":", gap.Truncate(time.Millisecond), slowest.Truncate(time.Millisecond), moved)
	}
	t.Logf("reconnects %d (closed with 4002: %d), dials that still ended in 421 %d, sends retried %d, unavailable errors %d, repeated deliveries %d",
		sim.reconnects.Load(), sim.moved.Load(), sim.misdirected.Load(), sim.retries.Load(), sim.unavailable.Load(), sim.repeats.Load())

	if len(missing) > 0 {
		t.Errorf("%d (message, device) deliveries missing, e.g. %v", len(missing), missing[:min(len(missing), 10)])
	}
	sim.checkIDs()
	t.Logf("records found missed by the catch-up checks: %v", sim.metricSum(ctx, "jetchat_missed_records_total"))
	if m := sim.waitReceipts(ctx, 30*time.Second); len(m) > 0 {
		t.Errorf("%d delivered receipts missing at the senders' devices, e.g. %v", len(m), m[:min(len(m), 10)])
		sim.explainReceipts(ctx, 10, logs)
	}
	sim.checkPresence(ctx)
	if v := logs.grep("ermissions violation"); len(v) > 0 {
		t.Errorf("nats.conf does not let the gateways do what they do:\n%s", strings.Join(v[:min(len(v), 10)], "\n"))
	}
}

// chaosSim is the simulated clients of TestClusterChaos.
type chaosSim struct {
	t       *testing.T
	cfg     chaosConfig
	gws     []*gatewayProc
	gwMu    sync.Mutex // guards gws entries (a gateway is restarted)
	users   []*simUser
	byID    map[string]*simUser
	devices []*simDevice
	groups  map[string][]*simUser  // group id → members
	joined  map[*simUser]time.Time // members added during the test: when the add was answered

	mu      sync.Mutex
	sent    map[string]*sentRec // cid → record
	answers []time.Time         // when each sent answer came, in order
	start   time.Time

	sendCtx  context.Context
	stopSend context.CancelFunc
	senders  sync.WaitGroup

	reconnects, moved, misdirected, retries, unavailable, repeats atomic.Int64
}

type simUser struct {
	id      string
	devices []*simDevice
	groups  []string
}

type simDevice struct {
	user *simUser
	id   string
	tok  string

	mu        sync.Mutex
	conn      *client.Conn
	connected chan struct{}              // closed while conn is set
	got       map[string]time.Time       // message id → when it first came
	sessions  []session                  // every session, in order
	receipts  map[string]map[string]bool // message id → users whose delivered receipt came
	gateway   string                     // of the current or last session
	since     time.Time                  // when that session started
}

type sentRec struct {
	cid, id  string
	from     *simUser
	device   *simDevice
	to       string // user, for 1:1
	group    string
	first    time.Time // first attempt
	answered time.Time
}

func newChaosSim(t *testing.T, cfg chaosConfig, gws []*gatewayProc) *chaosSim {
	s := &chaosSim{t: t, cfg: cfg, gws: slices.Clone(gws), byID: map[string]*simUser{}, groups: map[string][]*simUser{}, joined: map[*simUser]time.Time{}, sent: map[string]*sentRec{}}
	for i := 0; i < cfg.users; i++ {
		u := &simUser{id: fmt.Sprintf("chaos%03d", i)}
		n := 1
		if i < cfg.twoDevices {
			n = 2
		}
		for d := 0; d < n; d++ {
			dev := &simDevice{user: u, id: fmt.Sprint("dev", d), got: map[string]time.Time{}, receipts: map[string]map[string]bool{}, connected: make(chan struct{})}
			dev.tok = clusterToken(t, u.id, dev.id)
			u.devices = append(u.devices, dev)
			s.devices = append(s.devices, dev)
		}
		s.users = append(s.users, u)
		s.byID[u.id] = u
	}
	return s
}

// base returns a random gateway's HTTP address.
func (s *chaosSim) base() string {
	s.gwMu.Lock()
	defer s.gwMu.Unlock()
	return s.gws[rand.IntN(len(s.gws))].base()
}

// setGateway replaces gateway i (restarted).
func (s *chaosSim) setGateway(i int, g *gatewayProc) {
	s.gwMu.Lock()
	defer s.gwMu.Unlock()
	s.gws[i] = g
}

// connectAll starts every device's session loop and waits until all are
// connected.
func (s *chaosSim) connectAll(ctx context.Context) {
	for _, d := range s.devices {
		go s.sessionLoop(ctx, d)
	}
	for _, d := range s.devices {
		select {
		case <-d.waitConn():
		case <-ctx.Done():
			s.t.Fatal("devices did not connect")
		}
	}
}

// sessionLoop keeps d connected to its owner, acking everything it gets,
// until ctx ends.
func (s *chaosSim) sessionLoop(ctx context.Context, d *simDevice) {
	first := true
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := client.DialRoute(dctx, s.base(), d.tok)
		cancel()
		if err != nil {
			var ce *client.Error
			if errors.As(err, &ce) && ce.Status == http.StatusMisdirectedRequest {
				s.misdirected.Add(1)
			}
			time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)
			continue
		}
		if !first {
			s.reconnects.Add(1)
		}
		first = false
		d.mu.Lock()
		d.conn = c
		d.gateway, d.since = c.Hello().Gateway, time.Now()
		d.sessions = append(d.sessions, session{gateway: d.gateway, from: d.since})
		close(d.connected)
		d.mu.Unlock()
		for {
			f, err := c.Next(ctx)
			if err != nil {
				break
			}
			id := f.ID()
			if id == "" {
				continue
			}
			d.mu.Lock()
			switch {
			case f.Message != nil:
				if _, ok := d.got[id]; ok {
					s.repeats.Add(1)
				} else {
					d.got[id] = time.Now()
				}
			case f.Receipt.Status == "delivered":
				by := d.receipts[f.Receipt.Msg]
				if by == nil {
					by = map[string]bool{}
					d.receipts[f.Receipt.Msg] = by
				}
				by[f.Receipt.By] = true
			}
			d.mu.Unlock()
			c.Ack(id)
		}
		if c.CloseCode() == client.CloseMoved {
			s.moved.Add(1)
		}
		c.Abort()
		d.mu.Lock()
		last := &d.sessions[len(d.sessions)-1]
		last.to, last.code = time.Now(), c.CloseCode()
		d.conn = nil
		d.connected = make(chan struct{})
		d.mu.Unlock()
	}
}

// waitConn returns a channel closed while d is connected.
func (d *simDevice) waitConn() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.connected
}

// current is d's connection, waiting for one.
func (d *simDevice) current(ctx context.Context) *client.Conn {
	for {
		select {
		case <-d.waitConn():
		case <-ctx.Done():
			return nil
		}
		d.mu.Lock()
		c := d.conn
		d.mu.Unlock()
		if c != nil {
			return c
		}
	}
}

// on lists the devices connected to gateway id.
func (s *chaosSim) on(id string) []*simDevice {
	var out []*simDevice
	for _, d := range s.devices {
		d.mu.Lock()
		if d.conn != nil && d.gateway == id {
			out = append(out, d)
		}
		d.mu.Unlock()
	}
	return out
}

// rerouted logs how long the devices stranded on a gateway killed at kill
// took to have a session on another gateway.
func (s *chaosSim) rerouted(stranded []*simDevice, kill time.Time) {
	var took []time.Duration
	waiting := 0
	for _, d := range stranded {
		d.mu.Lock()
		if d.conn != nil && d.since.After(kill) {
			took = append(took, d.since.Sub(kill))
		} else {
			waiting++
		}
		d.mu.Unlock()
	}
	slices.Sort(took)
	if len(took) == 0 {
		s.t.Errorf("none of the %d devices of the killed gateway reconnected", len(stranded))
		return
	}
	s.t.Logf("re-routed %d devices of the killed gateway: median %s, slowest %s after the kill (%d still waiting)",
		len(took), took[len(took)/2].Truncate(time.Millisecond), took[len(took)-1].Truncate(time.Millisecond), waiting)
	if waiting > 0 {
		s.t.Errorf("%d devices of the killed gateway had not reconnected %s after the kill", waiting, time.Since(kill).Truncate(time.Second))
	}
}

// churn drops the connections of n random devices, as phones losing their
// network do: they reconnect at once.
func (s *chaosSim) churn(n int) {
	for _, i := range rand.Perm(len(s.devices))[:min(n, len(s.devices))] {
		d := s.devices[i]
		d.mu.Lock()
		c := d.conn
		d.mu.Unlock()
		if c != nil {
			go c.Abort()
		}
	}
}

// addMember adds a user to a group through its admin, at a random gateway,
// retrying while the answer is 503 (or the gateway does not answer); group
// messages sent after the answer must reach the new member.
func (s *chaosSim) addMember(ctx context.Context) {
	var gid string
	var members []*simUser
	s.mu.Lock()
	for id, ms := range s.groups {
		gid, members = id, ms
		break
	}
	s.mu.Unlock()
	var newbie *simUser
	for _, u := range s.users {
		if !slices.Contains(members, u) {
			newbie = u
			break
		}
	}
	start := time.Now()
	for tries := 1; ; tries++ {
		api := &client.API{BaseURL: s.base(), Token: clusterToken(s.t, members[0].id, "")}
		err := api.Do(ctx, "POST", "/v1/groups/"+gid+"/members", map[string]any{"users": []string{newbie.id}}, nil)
		if err == nil {
			s.t.Logf("added %s to a group %s after the NATS kill, in %d tries", newbie.id, time.Since(start).Truncate(time.Millisecond), tries)
			break
		}
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status != http.StatusServiceUnavailable || ctx.Err() != nil {
			s.t.Errorf("add a member: %v", err)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.mu.Lock()
	s.groups[gid] = append(slices.Clone(members), newbie)
	s.joined[newbie] = time.Now()
	s.mu.Unlock()
}

// makeGroups creates the groups at gw (retrying while Postgres is being
// migrated).
func (s *chaosSim) makeGroups(ctx context.Context, gw *gatewayProc) {
	for g := 0; g < s.cfg.groups; g++ {
		perm := rand.Perm(len(s.users))[:s.cfg.groupSize]
		members := make([]*simUser, len(perm))
		var others []string
		for i, p := range perm {
			members[i] = s.users[p]
			if i > 0 {
				others = append(others, s.users[p].id)
			}
		}
		var grp struct{ ID string }
		api := &client.API{BaseURL: gw.base(), Token: clusterToken(s.t, members[0].id, "")}
		for {
			err := api.Do(ctx, "POST", "/v1/groups", map[string]any{"name": fmt.Sprint("chaos ", g), "members": others}, &grp)
			if err == nil {
				break
			}
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable || ctx.Err() != nil {
				s.t.Fatalf("create group: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		s.groups[grp.ID] = members
		for _, m := range members {
			m.groups = append(m.groups, grp.ID)
		}
	}
}

// startTraffic starts one sender per user on its first device.
func (s *chaosSim) startTraffic(ctx context.Context) {
	s.sendCtx, s.stopSend = context.WithCancel(ctx)
	s.start = time.Now()
	for _, u := range s.users {
		s.senders.Add(1)
		go func() {
			defer s.senders.Done()
			s.sender(ctx, u)
		}()
	}
}

// stopTraffic stops new sends and waits until every started one is answered.
func (s *chaosSim) stopTraffic() {
	s.stopSend()
	s.senders.Wait()
}

// sender sends from u's first device every cfg.sendEvery (with jitter): a
// 1:1 message to a random user, or (one time in three) a message to one of
// its groups. Each send is retried with its cid until answered `sent`.
func (s *chaosSim) sender(ctx context.Context, u *simUser) {
	dev := u.devices[0]
	time.Sleep(time.Duration(rand.Int64N(int64(s.cfg.sendEvery))))
	for i := 0; s.sendCtx.Err() == nil; i++ {
		rec := &sentRec{cid: fmt.Sprintf("%s-%d", u.id, i), from: u, device: dev}
		req := client.SendRequest{CID: rec.cid, Body: "chaos " + rec.cid}
		if len(u.groups) > 0 && rand.IntN(3) == 0 {
			rec.group = u.groups[rand.IntN(len(u.groups))]
			req.Group = rec.group
		} else {
			rec.to = s.users[rand.IntN(len(s.users))].id
			req.To = rec.to
		}
		rec.first = time.Now()
		for try := 0; ; try++ {
			if try > 0 {
				s.retries.Add(1)
				time.Sleep(100 * time.Millisecond)
			}
			c := dev.current(ctx)
			if c == nil {
				return // the test is over
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := c.SendMsg(sctx, req)
			cancel()
			if err == nil {
				rec.id = res.ID
				rec.answered = time.Now()
				break
			}
			var ce *client.Error
			if errors.As(err, &ce) {
				if ce.Code != "unavailable" {
					s.t.Errorf("send %s: %v", rec.cid, err)
					return
				}
				s.unavailable.Add(1)
			}
			if ctx.Err() != nil {
				return
			}
		}
		s.mu.Lock()
		s.sent[rec.cid] = rec
		s.answers = append(s.answers, rec.answered)
		s.mu.Unlock()
		time.Sleep(s.cfg.sendEvery/2 + time.Duration(rand.Int64N(int64(s.cfg.sendEvery))))
	}
}

func (s *chaosSim) sentCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// expected lists the devices a sent message must reach: every device of
// its recipients and every other device of its sender.
func (s *chaosSim) expected(r *sentRec) []*simDevice {
	var out []*simDevice
	add := func(u *simUser) {
		for _, d := range u.devices {
			if d != r.device {
				out = append(out, d)
			}
		}
	}
	if r.group != "" {
		for _, m := range s.membersFor(r) {
			add(m)
		}
		return out
	}
	add(s.byID[r.to])
	if r.to != r.from.id {
		add(r.from)
	}
	return out
}

// membersFor returns the members a group message is due to: the group's
// members, less those added while it was being sent (either way is right
// for them).
func (s *chaosSim) membersFor(r *sentRec) []*simUser {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*simUser
	for _, m := range s.groups[r.group] {
		if at, ok := s.joined[m]; ok && !r.first.After(at) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// sentRecs returns the messages sent so far.
func (s *chaosSim) sentRecs() []*sentRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := make([]*sentRec, 0, len(s.sent))
	for _, r := range s.sent {
		recs = append(recs, r)
	}
	return recs
}

// missing lists the (message, device) deliveries not seen yet.
func (s *chaosSim) missing() []string {
	recs := s.sentRecs()
	var out []string
	for _, r := range recs {
		for _, d := range s.expected(r) {
			d.mu.Lock()
			_, ok := d.got[r.id]
			d.mu.Unlock()
			if !ok {
				out = append(out, fmt.Sprintf("%s(%s)→%s/%s", r.id, r.cid, d.user.id, d.id))
			}
		}
	}
	return out
}

// waitDelivered waits until nothing is missing, or timeout.
func (s *chaosSim) waitDelivered(ctx context.Context, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		m := s.missing()
		if len(m) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return m
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// missingReceipts lists the delivered receipts not seen yet: every
// recipient of a message other than its sender owes one, to every device
// of the sender.
func (s *chaosSim) missingReceipts() []string {
	recs := s.sentRecs()
	var out []string
	for _, r := range recs {
		var by []string
		if r.group != "" {
			for _, m := range s.membersFor(r) {
				if m != r.from {
					by = append(by, m.id)
				}
			}
		} else if r.to != r.from.id {
			by = []string{r.to}
		}
		for _, d := range r.from.devices {
			d.mu.Lock()
			for _, b := range by {
				if !d.receipts[r.id][b] {
					out = append(out, fmt.Sprintf("%s by %s→%s/%s", r.id, b, d.user.id, d.id))
				}
			}
			d.mu.Unlock()
		}
	}
	return out
}

// explainReceipts logs, for up to n messages whose receipts are missing,
// when they were sent and what the server's status of the message says
// (asked as the sender): "delivered" by the recipient means the receipt
// was stored but did not reach the sender's devices; "sent" that it was
// never made. For each recipient whose receipt is missing it logs when its
// devices got the message and their sessions, and then the gateways' log
// lines about those recipients.
func (s *chaosSim) explainReceipts(ctx context.Context, n int, logs *gatewayLogs) {
	recs := s.sentRecs()
	owing := map[string]bool{} // recipients with a receipt missing
	for _, r := range recs {
		if n == 0 {
			break
		}
		var by []*simUser
		if r.group != "" {
			for _, m := range s.membersFor(r) {
				if m != r.from {
					by = append(by, m)
				}
			}
		} else if r.to != r.from.id {
			by = []*simUser{s.byID[r.to]}
		}
		var missing []*simUser
		for _, m := range by {
			for _, d := range r.from.devices {
				d.mu.Lock()
				lost := !d.receipts[r.id][m.id]
				d.mu.Unlock()
				if lost {
					missing = append(missing, m)
					break
				}
			}
		}
		if len(missing) == 0 {
			continue
		}
		n--
		var st client.MessageStatus
		err := (&client.API{BaseURL: s.base(), Token: clusterToken(s.t, r.from.id, "")}).Do(ctx, "GET", "/v1/messages/"+r.id, nil, &st)
		s.t.Logf("receipt missing: %s cid %s from %s to %q group %q, sent %s after start (answered +%s); status as the sender: %+v %v",
			r.id, r.cid, r.from.id, r.to, r.group, s.since(r.first), r.answered.Sub(r.first).Truncate(time.Millisecond), st, err)
		for _, m := range missing {
			owing[m.id] = true
			for _, d := range m.devices {
				d.mu.Lock()
				got, ok := d.got[r.id]
				d.mu.Unlock()
				when := "never"
				if ok {
					when = s.since(got).String()
				}
				s.t.Logf("    %s/%s got it at %s", m.id, d.id, when)
			}
		}
	}
	for id := range owing {
		for _, d := range s.byID[id].devices {
			d.mu.Lock()
			var spans []string
			for _, ss := range d.sessions {
				to := "now"
				if !ss.to.IsZero() {
					to = fmt.Sprintf("%s (close %d)", s.since(ss.to), ss.code)
				}
				spans = append(spans, fmt.Sprintf("%s %s–%s", ss.gateway, s.since(ss.from), to))
			}
			d.mu.Unlock()
			s.t.Logf("sessions of %s/%s: %s", id, d.id, strings.Join(spans, "; "))
		}
		lines := logs.grep("user_id=" + id)
		s.t.Logf("gateway log lines about %s (%d):\n%s", id, len(lines), strings.Join(lines[:min(len(lines), 40)], "\n"))
	}
	if lines := logs.grep("receipt"); len(lines) > 0 {
		s.t.Logf("gateway log lines about receipts (%d):\n%s", len(lines), strings.Join(lines[:min(len(lines), 40)], "\n"))
	}
}

// metricSum is the sum over the gateways of a Prometheus counter or gauge
// without labels, or -1 when a gateway does not answer.
func (s *chaosSim) metricSum(ctx context.Context, name string) float64 {
	s.gwMu.Lock()
	gws := slices.Clone(s.gws)
	s.gwMu.Unlock()
	var sum float64
	for _, g := range gws {
		req, _ := http.NewRequestWithContext(ctx, "GET", g.base()+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return -1
		}
		for _, ln := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(ln, name+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				sum += f
			}
		}
	}
	return sum
}

// since is how long after the start of traffic t was.
func (s *chaosSim) since(t time.Time) time.Duration {
	return t.Sub(s.start).Truncate(time.Millisecond)
}

// session is one connection of a simulated device.
type session struct {
	gateway  string
	from, to time.Time
	code     int // close code, once ended
}

// gatewayLogs keeps the gateways' log lines, each prefixed with its
// gateway, to explain a failure.
type gatewayLogs struct {
	mu    sync.Mutex
	lines []string
}

// writer returns a writer whose lines are kept with prefix.
func (l *gatewayLogs) writer(prefix string) io.Writer {
	return &prefixWriter{l: l, prefix: prefix + " "}
}

// grep returns the lines that contain sub.
func (l *gatewayLogs) grep(sub string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ln := range l.lines {
		if strings.Contains(ln, sub) {
			out = append(out, ln)
		}
	}
	return out
}

type prefixWriter struct {
	l       *gatewayLogs
	prefix  string
	partial []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.l.lines = append(w.l.lines, w.prefix+string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

// waitReceipts waits until no receipt is missing, or timeout.
func (s *chaosSim) waitReceipts(ctx context.Context, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		m := s.missingReceipts()
		if len(m) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return m
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkPresence: every user, all of whose devices are connected, shows
// online (asked at any gateway), within a few seconds.
func (s *chaosSim) checkPresence(ctx context.Context) {
	deadline := time.Now().Add(20 * time.Second)
	for _, u := range s.users {
		for {
			var p client.Presence
			err := (&client.API{BaseURL: s.base(), Token: clusterToken(s.t, s.users[0].id, "")}).Do(ctx, "GET", "/v1/presence/"+u.id, nil, &p)
			if err == nil && p.Online {
				break
			}
			if time.Now().After(deadline) {
				s.t.Errorf("presence of %s = %+v, %v; want online", u.id, p, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// checkIDs: every cid got its own id, and every message a device received
// was answered `sent`.
func (s *chaosSim) checkIDs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := map[string]string{}
	for cid, r := range s.sent {
		if other, ok := ids[r.id]; ok {
			s.t.Errorf("cids %s and %s were both answered with id %s", cid, other, r.id)
		}
		ids[r.id] = cid
	}
	if len(ids) != len(s.sent) {
		s.t.Errorf("%d distinct ids for %d sent messages", len(ids), len(s.sent))
	}
	var stray []string
	for _, d := range s.devices {
		d.mu.Lock()
		for id := range d.got {
			if _, ok := ids[id]; !ok {
				stray = append(stray, id+"→"+d.user.id+"/"+d.id)
			}
		}
		d.mu.Unlock()
	}
	if len(stray) > 0 {
		slices.Sort(stray)
		s.t.Errorf("%d messages delivered that no send was answered for: %s", len(stray), strings.Join(stray[:min(len(stray), 10)], " "))
	}
	s.t.Logf("%d sent, %d distinct ids, every one delivered to every device it was due to", len(s.sent), len(ids))
}

// pause returns, for [from, to): the longest time without any sent answer,
// the slowest send started in it (first attempt to answer, retries
// included), and how many answers came.
func (s *chaosSim) pause(from, to time.Time) (gap, slowest time.Duration, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	times := slices.Clone(s.answers)
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	last := from
	for _, at := range times {
		if at.Before(from) || !at.Before(to) {
			continue
		}
		gap = max(gap, at.Sub(last))
		last = at
		n++
	}
	gap = max(gap, to.Sub(last))
	for _, r := range s.sent {
		if !r.first.Before(from) && r.first.Before(to) {
			slowest = max(slowest, r.answered.Sub(r.first))
		}
	}
	return gap, slowest, n
}
