package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/ring"
)

// This file runs jetchat the way an operator does: three nats-server
// processes built from the module and configured by the repository's
// nats.conf, forming a JetStream cluster on loopback, and jetchat serve
// processes (gateways) against it with --replicas 3.

// testSecret is the HS256 secret every gateway of a test cluster shares.
const testSecret = "jetchat-cluster-test-secret-0123456789abcdef"

// natsServerBinary is nats-server (the version in go.mod), built once per
// test binary.
func natsServerBinary(t *testing.T) string {
	return goBuild(t, "github.com/nats-io/nats-server/v2", "nats-server")
}

// natsNode is one nats-server process of a test cluster.
type natsNode struct {
	name                   string
	client, route, monitor string // loopback addresses
	store                  string
	log                    *syncBuffer // its output, for failure reports

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// natsCluster is a 3-node JetStream cluster of nats-server processes.
type natsCluster struct {
	t     *testing.T
	nodes []*natsNode
	env   map[string]string // nats.conf's environment variables
}

// natsConfVars matches a variable reference in nats.conf; natsConfDefs a
// variable the file defines itself.
var (
	natsConfVars = regexp.MustCompile(`\$([A-Za-z_][A-Za-z0-9_]*)`)
	natsConfDefs = regexp.MustCompile(`(?m)^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:]`)
	// natsConfText is what is not a variable reference: comments and
	// quoted strings (subjects like "$JS.API.>").
	natsConfText = regexp.MustCompile(`(?m)#.*$|"[^"\n]*"|'[^'\n]*'`)
)

// natsConfEnv reads nats.conf and gives every environment variable it
// refers to (the passwords of its users) a test value.
func natsConfEnv(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	b = natsConfText.ReplaceAll(b, nil)
	defined := map[string]bool{"NATS_SERVER_NAME": true, "NATS_STORE_DIR": true}
	for _, m := range natsConfDefs.FindAllSubmatch(b, -1) {
		defined[string(m[1])] = true
	}
	env := map[string]string{}
	for _, m := range natsConfVars.FindAllSubmatch(b, -1) {
		if name := string(m[1]); !defined[name] {
			env[name] = "test-" + strings.ToLower(name)
		}
	}
	return env
}

// nodeAuth is the --nats-user and --nats-password of jetchat nodes when
// nats.conf has users (the jetchat user of its ACCOUNTS section), else none.
func (c *natsCluster) nodeAuth() []string {
	if pw, ok := c.env["JETCHAT_NATS_PASSWORD"]; ok {
		return []string{"--nats-user", "jetchat", "--nats-password", pw}
	}
	return nil
}

// adminOptions connects as nats.conf's admin user, when it has one.
func (c *natsCluster) adminOptions() []nats.Option {
	if pw, ok := c.env["NATS_ADMIN_PASSWORD"]; ok {
		return []nats.Option{nats.UserInfo("admin", pw)}
	}
	return nil
}

// startNATSCluster starts three nats-server processes with the
// repository's nats.conf, overriding its per-host parts (ports, routes,
// store folder) on the command line as docs/operations.md describes, and
// waits until every node reports JetStream healthy.
func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t, env: natsConfEnv(t)}
	for i := 1; i <= 3; i++ {
		c.nodes = append(c.nodes, &natsNode{
			name:    fmt.Sprintf("nats-%d", i),
			client:  freePort(t),
			route:   freePort(t),
			monitor: freePort(t),
			store:   t.TempDir(),
		})
	}
	for _, n := range c.nodes {
		c.start(n)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
	})
	c.waitHealthy(60 * time.Second)
	return c
}

func (c *natsCluster) start(n *natsNode) {
	c.t.Helper()
	var routes []string
	for _, o := range c.nodes {
		routes = append(routes, "nats-route://"+o.route)
	}
	host, port := splitAddr(c.t, n.client)
	_, mport := splitAddr(c.t, n.monitor)
	cmd := exec.Command(natsServerBinary(c.t), "-c", filepath.Join(repoRoot(c.t), "nats.conf"),
		"-a", host, "-p", port, "-m", mport,
		"--cluster", "nats://"+n.route, "--routes", strings.Join(routes, ","))
	cmd.Env = append(os.Environ(), "NATS_SERVER_NAME="+n.name, "NATS_STORE_DIR="+n.store)
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	n.log = &syncBuffer{}
	cmd.Stderr = n.log
	if os.Getenv("JETCHAT_NATS_LOGS") != "" {
		cmd.Stderr = io.MultiWriter(n.log, os.Stderr)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
}

// kill ends a node with SIGKILL and waits for it.
func (n *natsNode) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// restart starts a killed node again on its ports and store.
func (c *natsCluster) restart(n *natsNode) {
	c.t.Helper()
	n.kill()
	c.start(n)
}

// waitHealthy waits until every running node's /healthz answers 200:
// JetStream is enabled and current with the cluster.
func (c *natsCluster) waitHealthy(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, n := range c.nodes {
		for {
			resp, err := http.Get("http://" + n.monitor + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("nats-server %s not healthy after %s: %v %v\n%s", n.name, timeout, err, resp, n.log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// urls is the --nats-url of the cluster.
func (c *natsCluster) urls() string {
	var us []string
	for _, n := range c.nodes {
		us = append(us, "nats://"+n.client)
	}
	return strings.Join(us, ",")
}

// node returns the node named name.
func (c *natsCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no nats node %s", name)
	return nil
}

// streamLeader names the node that leads stream.
func (c *natsCluster) streamLeader(ctx context.Context, stream string) (string, error) {
	leaders, err := c.leaders(ctx)
	if err != nil {
		return "", err
	}
	if leaders[stream] == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	return leaders[stream], nil
}

// leaders maps every stream (KV buckets and the object store included) to
// the node that leads it.
func (c *natsCluster) leaders(ctx context.Context) (map[string]string, error) {
	nc, err := nats.Connect(c.urls(), c.adminOptions()...)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		if info.Cluster != nil {
			out[info.Config.Name] = info.Cluster.Leader
		}
	}
	return out, l.Err()
}

func splitAddr(t *testing.T, addr string) (host, port string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("bad address %q", addr)
	}
	return addr[:i], addr[i+1:]
}

// repoRoot is the repository's root folder (tests run in cmd/jetchat).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", dir, err)
	}
	return dir
}

// gatewayProc is a jetchat serve process of a test cluster.
type gatewayProc struct {
	*process
	id   string
	data string
}

// base is the gateway's HTTP address; ws its WebSocket URL.
func (g *gatewayProc) base() string { return "http://" + g.addr }
func (g *gatewayProc) ws() string   { return "ws://" + g.addr + "/v1/ws" }

// startGateway runs jetchat serve as gateway id against the cluster, at
// addr (a fresh port when empty), with extra flags.
func startGateway(t *testing.T, nc *natsCluster, dbURL, id, addr, data string, extra ...string) *gatewayProc {
	t.Helper()
	return startGatewayTo(t, os.Stderr, nc, dbURL, id, addr, data, extra...)
}

// startGatewayTo is startGateway with the gateway's log going to stderr.
func startGatewayTo(t *testing.T, stderr io.Writer, nc *natsCluster, dbURL, id, addr, data string, extra ...string) *gatewayProc {
	t.Helper()
	if addr == "" {
		addr = freePort(t)
	}
	if data == "" {
		data = t.TempDir()
	}
	args := append([]string{"--nats-url", nc.urls(), "--replicas", "3", "--gateway-id", id,
		"--public-url", "ws://" + addr + "/v1/ws", "--jwt-secret", testSecret}, nc.nodeAuth()...)
	args = append(args, extra...)
	p := startProcessTo(t, stderr, addr, data, dbURL, args...)
	return &gatewayProc{process: p, id: id, data: data}
}

// kill ends the gateway with SIGKILL and waits for it.
func (g *gatewayProc) kill() {
	g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.done
}

// clusterToken mints an access token for user and device with the cluster's secret.
func clusterToken(t testing.TB, user, device string) string {
	t.Helper()
	secret, err := auth.ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Mint(secret, user, device, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// userLiveSubs returns the subjects of the subscriptions to users' live
// records (live.u.…) that the cluster's clients hold, from each node's
// monitoring endpoint.
func (c *natsCluster) userLiveSubs(ctx context.Context) ([]string, error) {
	var subs []string
	for _, n := range c.nodes {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.monitor+"/connz?subs=detail&limit=1024", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		var connz struct {
			Connections []struct {
				Subs []struct {
					Subject string `json:"subject"`
				} `json:"subscriptions_list_detail"`
			} `json:"connections"`
		}
		err = json.NewDecoder(resp.Body).Decode(&connz)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("connz of %s: %w", n.name, err)
		}
		for _, conn := range connz.Connections {
			for _, sub := range conn.Subs {
				if strings.HasPrefix(sub.Subject, "live.u.") {
					subs = append(subs, sub.Subject)
				}
			}
		}
	}
	return subs, nil
}

// ringOf is the ring the gateways should compute.
func ringOf(gws ...*gatewayProc) *ring.Ring {
	ms := make([]ring.Member, len(gws))
	for i, g := range gws {
		ms[i] = ring.Member{ID: g.id, URL: g.ws()}
	}
	return ring.New(ms)
}

// waitRoutes waits until every gateway answers GET /v1/route as r does, for
// user and for a user of each of r's members: until every gateway sees r.
func waitRoutes(t *testing.T, r *ring.Ring, user string, gws ...*gatewayProc) {
	t.Helper()
	// One probe per member as well: a gateway that does not see a member
	// yet could still route user right by chance, but not the user that
	// member owns.
	users := []string{user}
	for _, m := range r.Members() {
		users = append(users, userOn(t, r, m.ID, "probe-"+m.ID+"-"))
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, g := range gws {
		for _, u := range users {
			want, _ := r.Owner(u)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				rt, err := (&client.API{BaseURL: g.base(), Token: clusterToken(t, u, "")}).Route(ctx)
				cancel()
				if err == nil && rt.Gateway == want.ID && rt.URL == want.URL {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("route of %s at %s = %+v, %v; want %+v", u, g.id, rt, err, want)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// userOn returns a user (name prefix plus a number) owned by gateway id on
// r, skipping the names in avoid.
func userOn(t *testing.T, r *ring.Ring, id, prefix string, avoid ...string) string {
	t.Helper()
outer:
	for i := 0; i < 10000; i++ {
		u := fmt.Sprint(prefix, i)
		for _, a := range avoid {
			if a == u {
				continue outer
			}
		}
		if m, _ := r.Owner(u); m.ID == id {
			return u
		}
	}
	t.Fatalf("no user %s* on %s", prefix, id)
	return ""
}
