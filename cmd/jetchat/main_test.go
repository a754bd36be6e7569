package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// env builds a getenv from pairs.
func env(pairs ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return func(k string) string { return m[k] }
}

// syncWriter is a goroutine-safe buffer that signals the listen address.
type syncWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string // gets the listen address once
	sent bool
}

var listenRE = regexp.MustCompile(`jetchat listening on (\S+)`)

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := listenRE.FindSubmatch(w.buf.Bytes()); m != nil && w.addr != nil && !w.sent {
		w.addr <- string(m[1])
		w.sent = true
	}
	return len(p), nil
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func mintToken(t *testing.T, getenv func(string) string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append([]string{"token"}, args...), getenv, &out, &errOut); err != nil {
		t.Fatalf("token %v: %v (%s)", args, err, errOut.String())
	}
	return strings.TrimSpace(out.String())
}

// TestServeEndToEnd runs the whole program in process: serve with the
// defaults that matter, a token from the token command, real WebSockets.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	getenv := env("DATABASE_URL", pgtest.NewURL(t), "JETCHAT_DATA", data, "JETCHAT_NATS_LISTEN", "none")
	ctx, cancel := context.WithCancel(context.Background())
	stdout := &syncWriter{addr: make(chan string, 1)}
	var stderr syncWriter
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--http", "127.0.0.1:0"}, getenv, stdout, &stderr) }()
	var addr string
	select {
	case addr = <-stdout.addr:
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, stderr.buf.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	// The token command finds the secret serve generated in the data folder.
	aliceTok := mintToken(t, getenv, "--user", "alice", "--device", "phone")
	bobTok := mintToken(t, getenv, "--user", "bob")
	ws := "ws://" + addr + "/v1/ws"
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	alice, err := client.Dial(dctx, ws, aliceTok)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := client.Dial(dctx, ws, bobTok)
	if err != nil {
		t.Fatal(err)
	}
	if bob.Hello().Device != "default" {
		t.Errorf("device of a token without --device = %q, want default", bob.Hello().Device)
	}
	s, err := alice.Send(dctx, "bob", "hello from run()")
	if err != nil {
		t.Fatal(err)
	}
	f, err := bob.Next(dctx)
	if err != nil || f.Message == nil || f.Message.ID != s.ID {
		t.Fatalf("bob got %v, %v", f, err)
	}
	bob.Ack(s.ID)
	if f, err := alice.Next(dctx); err != nil || f.Receipt == nil || f.Receipt.Status != "delivered" {
		t.Fatalf("alice got %v, %v", f, err)
	}
	// readyz sees NATS, the live gateways, the service API and, once the
	// schema is made, Postgres.
	api := &client.API{BaseURL: "http://" + addr}
	var ready map[string]string
	deadline := time.Now().Add(20 * time.Second)
	for {
		ready = nil
		err := api.Do(dctx, "GET", "/readyz", nil, &ready)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz never became ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ready["nats"] != "ok" || ready["postgres"] != "ok" || ready["gateways"] != "ok" || ready["service_api"] != "ok" {
		t.Errorf("readyz = %v", ready)
	}
	// The only gateway holds one live subscription for all users.
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "live records: one subscription for all users") {
		if time.Now().After(deadline) {
			t.Fatalf("the only gateway never switched to one live subscription for all users; log:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And still delivers live.
	s2, err := alice.Send(dctx, "bob", "after the switch")
	if err != nil {
		t.Fatal(err)
	}
	if f, err := bob.Next(dctx); err != nil || f.Message == nil || f.Message.ID != s2.ID {
		t.Fatalf("bob got %v, %v", f, err)
	}
	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	<-alice.Done()
	if code := alice.CloseCode(); code != 1001 {
		t.Errorf("close code on shutdown = %d, want 1001", code)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{}, {"bogus"}, {"token"}, {"token", "--user", "a.b"}, {"serve", "--fsync", "sometimes"}, {"serve", "extra"},
		{"serve", "--dedup-store-window", "10s"}, {"serve", "--dedup-window", "10s", "--dedup-store-window", "5s"}} {
		err := run(context.Background(), args, env("JETCHAT_DATA", t.TempDir()), io.Discard, io.Discard)
		if _, ok := err.(usageError); !ok {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
	err := run(context.Background(), []string{"serve"}, env("JETCHAT_SEND_RATE", "fast"), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "JETCHAT_SEND_RATE") {
		t.Errorf("a bad environment value: %v, want an error naming JETCHAT_SEND_RATE", err)
	}
}

func TestServeRefusesATakenNATSPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = run(context.Background(), []string{"serve", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", l.Addr().String()}, env(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("serve on a taken NATS port: %v, want a clear error", err)
	}
}

// goBuilds holds the binaries built for this test binary, by package.
var goBuilds struct {
	sync.Mutex
	paths map[string]string
}

// goBuild builds pkg into a temporary folder once per test binary and
// returns the binary's path.
func goBuild(t *testing.T, pkg, name string) string {
	t.Helper()
	goBuilds.Lock()
	defer goBuilds.Unlock()
	if p, ok := goBuilds.paths[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "jetchat-"+name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", path, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	if goBuilds.paths == nil {
		goBuilds.paths = map[string]string{}
	}
	goBuilds.paths[pkg] = path
	return path
}

// binary is cmd/jetchat, built once per test binary.
func binary(t *testing.T) string { return goBuild(t, ".", "jetchat") }

// freePort returns a loopback address free now, for a process the test
// starts to listen on. It is picked at random below the kernel's
// ephemeral range (32768 and up on Linux), which outgoing connections and
// listeners on port 0 draw from: a port from there could be taken by a
// connection of another test before the process binds it.
func freePort(t *testing.T) string {
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no free port in 20000-31999")
	return ""
}

// process is a jetchat serve child process.
type process struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{} // closed when the process has exited
	err  error         // its exit error, once done is closed
}

func startProcess(t *testing.T, data, dbURL string, args ...string) *process {
	t.Helper()
	return startProcessAt(t, freePort(t), data, dbURL, args...)
}

// startProcessAt is startProcess with a given HTTP address (to restart a
// node where its clients expect it).
func startProcessAt(t *testing.T, addr, data, dbURL string, args ...string) *process {
	t.Helper()
	return startProcessTo(t, os.Stderr, addr, data, dbURL, args...)
}

// startProcessTo is startProcessAt with the process's log going to stderr.
func startProcessTo(t *testing.T, stderr io.Writer, addr, data, dbURL string, args ...string) *process {
	t.Helper()
	if len(args) == 0 {
		args = []string{"--nats-listen", "none"}
	}
	cmd := exec.Command(binary(t), append([]string{"serve", "--data", data, "--http", addr, "--log-level", "warn"}, args...)...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "JETCHAT_SEND_RATE=10000", "JETCHAT_SEND_BURST=10000")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, addr: addr, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "jetchat listening") {
				close(ready)
			}
		}
	}()
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("jetchat exited at start: %v", p.err)
	case <-time.After(60 * time.Second):
		t.Fatal("jetchat did not start")
	}
	return p
}

// TestSIGKILLLosesNothing kills the node right after sent answers and
// restarts it on the same data: every message is delivered.
func TestSIGKILLLosesNothing(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	dbURL := pgtest.NewURL(t)
	getenv := env("JETCHAT_DATA", data)
	p := startProcess(t, data, dbURL)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, err := client.Dial(ctx, "ws://"+p.addr+"/v1/ws", mintToken(t, getenv, "--user", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var ids []string
	for i := 0; i < n; i++ {
		s, err := alice.Send(ctx, "bob", fmt.Sprint("durable ", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done

	p = startProcess(t, data, dbURL)
	bob, err := client.Dial(ctx, "ws://"+p.addr+"/v1/ws", mintToken(t, getenv, "--user", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range ids {
		f, err := bob.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", i, n, err)
		}
		if f.Message == nil || f.Message.ID != want {
			t.Fatalf("message %d: got %s, want %s", i, f.Raw, want)
		}
		bob.Ack(want)
	}
}

// TestSIGTERMDrains sends SIGTERM to a node with a connected client: it
// closes the session with 1001 and exits 0.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	p := startProcess(t, data, pgtest.NewURL(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+p.addr+"/v1/ws", mintToken(t, env("JETCHAT_DATA", data), "--user", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, "bob", "before SIGTERM"); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", p.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node did not exit after SIGTERM")
	}
	<-c.Done()
	if code := c.CloseCode(); code != 1001 {
		t.Errorf("close code = %d, want 1001", code)
	}
}

// TestKilledGatewayUsersGoOffline runs two gateways on one NATS server (the
// first embeds it), kills the second with SIGKILL, and watches its user turn
// offline on the first within 30 s.
func TestKilledGatewayUsersGoOffline(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	dbURL := pgtest.NewURL(t)
	natsAddr := freePort(t)
	gw1 := startProcess(t, data, dbURL, "--nats-listen", natsAddr, "--gateway-id", "gw-1")
	gw2 := startProcess(t, t.TempDir(), dbURL, "--nats-url", "nats://"+natsAddr, "--gateway-id", "gw-2", "--jwt-secret", secretOf(t, data))
	getenv := env("JETCHAT_DATA", data)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alice, err := client.Dial(ctx, "ws://"+gw1.addr+"/v1/ws", mintToken(t, getenv, "--user", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	bob, err := client.Dial(ctx, "ws://"+gw2.addr+"/v1/ws", mintToken(t, getenv, "--user", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	if bob.Hello().Gateway != "gw-2" {
		t.Fatalf("bob is on %s", bob.Hello().Gateway)
	}
	alice.Subscribe("bob")
	waitPresence := func(online bool) *client.Presence {
		for {
			f, err := alice.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for bob online=%v: %v", online, err)
			}
			if f.Presence != nil && f.Presence.User == "bob" && f.Presence.Online == online {
				return f.Presence
			}
		}
	}
	waitPresence(true)
	gw2.cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	p := waitPresence(false)
	took := time.Since(killed)
	if took > 30*time.Second {
		t.Errorf("bob went offline %s after the kill, want within 30 s", took)
	}
	if p.LastSeen == 0 || p.LastSeen > killed.UnixMilli()+1000 || p.LastSeen < killed.Add(-15*time.Second).UnixMilli() {
		t.Errorf("last_seen %d, want about the kill time %d", p.LastSeen, killed.UnixMilli())
	}
	t.Logf("offline %s after SIGKILL", took.Truncate(time.Millisecond))
	// Back online when bob reconnects to the other gateway.
	bob, err = client.Dial(ctx, "ws://"+gw1.addr+"/v1/ws", mintToken(t, getenv, "--user", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	waitPresence(true)
}

// secretOf reads the token secret a node generated in its data folder.
func secretOf(t *testing.T, data string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "jwt-hs256.key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
