package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// TestServeFailsWithoutNATS starts a node whose --nats-url does not answer:
// it exits with status 1 within a few seconds, saying what it could not
// reach.
func TestServeFailsWithoutNATS(t *testing.T) {
	t.Parallel()
	url := "nats://" + freePort(t) + ",nats://" + freePort(t) // nothing listens there
	cmd := exec.Command(binary(t), "serve", "--data", t.TempDir(), "--http", freePort(t), "--nats-url", url, "--replicas", "3")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("serve with an unreachable --nats-url still runs after 20 s:\n%s", stderr.String())
	}
	took := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit = %v, want status 1", err)
	}
	msg := stderr.String()
	if !strings.Contains(msg, "connect to NATS") || !strings.Contains(msg, url) {
		t.Errorf("stderr does not say which NATS could not be reached:\n%s", msg)
	}
	if took > 10*time.Second {
		t.Errorf("took %s to fail, want a few seconds", took)
	}
	t.Logf("failed after %s: %s", took.Truncate(time.Millisecond), strings.TrimSpace(msg[strings.LastIndex(strings.TrimSpace(msg), "\n")+1:]))
}

// TestGatewayRidesOutANATSOutage kills the NATS server under a running
// gateway: a send answers unavailable (and /readyz 503) instead of hanging;
// once NATS is back, the gateway recovers by itself: the retried send (same
// cid) is stored once, sessions that stayed open get live traffic again,
// and new sessions attach.
func TestGatewayRidesOutANATSOutage(t *testing.T) {
	t.Parallel()
	natsAddr, store := freePort(t), t.TempDir()
	startNATS := func() *exec.Cmd {
		host, port := splitAddr(t, natsAddr)
		cmd := exec.Command(natsServerBinary(t), "-js", "-a", host, "-p", port, "-sd", store, "-n", "solo")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	ns := startNATS()
	gw := startProcess(t, t.TempDir(), pgtest.NewURL(t), "--nats-url", "nats://"+natsAddr, "--jwt-secret", testSecret, "--gateway-id", "gw-1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws := "ws://" + gw.addr + "/v1/ws"
	alice, err := client.Dial(ctx, ws, clusterToken(t, "alice", "phone"))
	if err != nil {
		t.Fatal(err)
	}
	bob, err := client.Dial(ctx, ws, clusterToken(t, "bob", "phone"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := alice.Send(ctx, "bob", "before the outage")
	if err != nil {
		t.Fatal(err)
	}
	waitFrame(t, ctx, bob, "the first message", func(f *client.Frame) bool { return f.Message != nil && f.Message.ID == s.ID })
	bob.Ack(s.ID)

	ns.Process.Signal(syscall.SIGKILL)
	ns.Wait()
	down := time.Now()
	req := client.SendRequest{CID: "during-outage", To: "bob", Body: "during the outage"}
	_, err = alice.SendMsg(ctx, req)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "unavailable" {
		t.Fatalf("send while NATS is down = %v, want an unavailable error", err)
	}
	t.Logf("send answered unavailable %s after NATS died", time.Since(down).Truncate(time.Millisecond))
	api := &client.API{BaseURL: "http://" + gw.addr}
	var ready map[string]string
	if err := api.Do(ctx, "GET", "/readyz", nil, &ready); !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable {
		t.Errorf("readyz while NATS is down = %v, want 503", err)
	}

	startNATS()
	back := time.Now()
	for {
		if err := api.Do(ctx, "GET", "/readyz", nil, &ready); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the gateway did not become ready after NATS came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("ready again %s after NATS came back", time.Since(back).Truncate(time.Millisecond))
	retried, err := alice.SendMsg(ctx, req)
	if err != nil {
		t.Fatalf("the retried send after the outage: %v", err)
	}
	// The attempts made during the outage were refused, not kept in a
	// buffer to be stored once NATS came back (and then, past the log's
	// own duplicate window, beside a repeat made on another gateway): the
	// retry is stored now, with a time after NATS came back.
	if retried.TS < back.UnixMilli() {
		t.Errorf("the retried send was answered with a message stored at %s, before NATS came back at %s: a store from the outage landed later",
			time.UnixMilli(retried.TS).Format(time.StampMilli), back.Format(time.StampMilli))
	}
	fresh, err := alice.Send(ctx, "bob", "after the outage")
	if err != nil {
		t.Fatal(err)
	}
	// bob's session stayed open: both arrive, in order, once.
	seen := map[string]int{}
	for seen[fresh.ID] == 0 {
		f := waitFrame(t, ctx, bob, "messages after the outage", func(f *client.Frame) bool { return f.Message != nil })
		seen[f.Message.ID]++
		bob.Ack(f.Message.ID)
		if f.Message.ID == fresh.ID && seen[retried.ID] == 0 {
			t.Errorf("the message sent after the outage came before the retried one")
		}
	}
	if seen[retried.ID] != 1 {
		t.Errorf("the retried send was delivered %d times, want once", seen[retried.ID])
	}
	carol, err := client.Dial(ctx, ws, clusterToken(t, "carol", "phone"))
	if err != nil {
		t.Fatalf("a new session after the outage: %v", err)
	}
	carol.Close()
}
