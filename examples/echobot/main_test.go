package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/pgtest"
)

const secret = "echobot-test-secret-0123456789abcdef"

// TestEchoBotAnswersOverWebSocket runs the real thing: a NATS server with
// nats.conf's accounts, the jetchat binary connected as user jetchat, two
// instances of the bot connected as svc-echo, and alice on a WebSocket.
// Every message alice sends to bot-echo is answered exactly once. The bots
// start before the node, as they may in a deployment: they wait for it.
func TestEchoBotAnswersOverWebSocket(t *testing.T) {
	ns := natstest.RunAccounts(t)
	bin := buildJetchat(t)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runBot(ctx, t, ns.ClientURL()); err != nil {
				t.Errorf("echobot instance %d: %v", i, err)
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	addr := startJetchat(t, bin, ns.ClientURL())

	tok, err := auth.Mint([]byte(secret), "alice", "phone", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer dcancel()
	alice, err := client.Dial(dctx, "ws://"+addr+"/v1/ws", tok)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	// The consumer starts with the messages stored after it was made: wait
	// for the bots to make it.
	_, js := natstest.ConnectUser(t, ns, "admin", natstest.Password("admin"))
	for {
		if _, err := js.Consumer(dctx, "JETCHAT_MSGS", "svc-echo"); err == nil {
			break
		} else if dctx.Err() != nil {
			t.Fatalf("the bots made no consumer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	const n = 10
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		body := fmt.Sprint("hello bot ", i)
		if _, err := alice.Send(dctx, "bot-echo", body); err != nil {
			t.Fatal(err)
		}
		want["echo: "+body] = true
	}
	got := map[string]int{}
	for len(got) < n {
		f, err := alice.Next(dctx)
		if err != nil {
			t.Fatalf("answers so far %v: %v", got, err)
		}
		if f.Message == nil {
			continue
		}
		if f.Message.From != "bot-echo" || !want[f.Message.Body] {
			t.Fatalf("alice got %s, want an echo from bot-echo", f.Raw)
		}
		got[f.Message.Body]++
		alice.Ack(f.Message.ID)
	}
	// No second answer to any message.
	qctx, qcancel := context.WithTimeout(context.Background(), time.Second)
	defer qcancel()
	for {
		f, err := alice.Next(qctx)
		if err != nil {
			break
		}
		if f.Message != nil {
			t.Errorf("extra answer %s", f.Raw)
		}
	}
}

// TestEchoBotStopsWhileWaitingForANode: a bot told to stop while no node
// answers yet stops at once, without an error.
func TestEchoBotStopsWhileWaitingForANode(t *testing.T) {
	ns := natstest.RunAccounts(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runBot(ctx, t, ns.ClientURL())
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run stopped while waiting for a node: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run still waiting for a node 5 s after it was stopped")
	}
}

// runBot runs one bot instance against natsURL as nats.conf's svc-echo.
func runBot(ctx context.Context, t *testing.T, natsURL string) error {
	return run(ctx, []string{"--nats-url", natsURL}, func(k string) string {
		if k == "ECHOBOT_NATS_PASSWORD" {
			return natstest.Password("svc-echo")
		}
		return ""
	}, &testWriter{t: t})
}

// buildJetchat builds the jetchat binary.
func buildJetchat(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "jetchat")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/jetchat/jetchat/cmd/jetchat").CombinedOutput(); err != nil {
		t.Fatalf("build jetchat: %v\n%s", err, out)
	}
	return bin
}

// startJetchat starts the jetchat binary bin against natsURL as
// nats.conf's jetchat user; it returns its HTTP address.
func startJetchat(t *testing.T, bin, natsURL string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "serve", "--http", addr, "--data", t.TempDir(), "--log-level", "warn",
		"--nats-url", natsURL, "--nats-user", "jetchat")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+pgtest.NewURL(t), "JETCHAT_JWT_SECRET="+secret,
		"JETCHAT_NATS_PASSWORD="+natstest.Password("jetchat"))
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = &testWriter{t: t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); <-done })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "jetchat listening") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatal("jetchat exited at start")
	case <-time.After(60 * time.Second):
		t.Fatal("jetchat did not start")
	}
	return addr
}

// testWriter logs a process's output in the test.
type testWriter struct {
	t  *testing.T
	mu sync.Mutex
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
