package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// TestGroupFanOutSurvivesAKilledGateway kills the gateway that holds a
// group's members with SIGKILL while group messages flow, restarts it, and
// checks that every member ends with every message exactly once after
// dropping repeats by id, and that no member misses one.
func TestGroupFanOutSurvivesAKilledGateway(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	dbURL := pgtest.NewURL(t)
	natsAddr := freePort(t)
	gw1 := startProcess(t, data, dbURL, "--nats-listen", natsAddr, "--gateway-id", "gw-1", "--send-rate", "1000", "--send-burst", "1000")
	secret := secretOf(t, data)
	gw2Data := t.TempDir()
	gw2 := startProcess(t, gw2Data, dbURL, "--nats-url", "nats://"+natsAddr, "--gateway-id", "gw-2", "--jwt-secret", secret)
	getenv := env("JETCHAT_DATA", data)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const members, total = 200, 60
	names := make([]string, members)
	for i := range names {
		names[i] = fmt.Sprintf("m%03d", i)
	}
	api := &client.API{BaseURL: "http://" + gw1.addr, Token: mintToken(t, getenv, "--user", "owner")}
	var g struct{ ID string }
	for {
		err := api.Do(ctx, "POST", "/v1/groups", map[string]any{"name": "fan", "members": names}, &g)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("create group: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // the schema is made in the background
	}

	var mu sync.Mutex
	got := make(map[string]map[string]int, members) // member → id → times received
	connect := func(addr string) []*client.Conn {
		conns := make([]*client.Conn, members)
		var wg sync.WaitGroup
		for i, u := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := client.Dial(ctx, "ws://"+addr+"/v1/ws", mintToken(t, getenv, "--user", u))
				if err != nil {
					t.Errorf("dial %s: %v", u, err)
					return
				}
				c.OnFrame(func(f *client.Frame) {
					if f.Message == nil {
						return
					}
					mu.Lock()
					got[u][f.Message.ID]++
					mu.Unlock()
					c.Ack(f.Message.ID)
				})
				conns[i] = c
			}()
		}
		wg.Wait()
		return conns
	}
	for _, u := range names {
		got[u] = map[string]int{}
	}
	conns := connect(gw2.addr)

	owner, err := client.Dial(ctx, "ws://"+gw1.addr+"/v1/ws", mintToken(t, getenv, "--user", "owner"))
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	for i := 0; i < total; i++ {
		s, err := owner.SendMsg(ctx, client.SendRequest{Group: g.ID, Body: fmt.Sprint("fan-out ", i)})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		sent = append(sent, s.ID)
		if i == total/3 {
			// Kill the members' gateway in the middle of its fan-out.
			gw2.cmd.Process.Signal(syscall.SIGKILL)
			<-gw2.done
		}
	}
	for _, c := range conns {
		if c != nil {
			<-c.Done()
		}
	}
	gw2 = startProcess(t, gw2Data, dbURL, "--nats-url", "nats://"+natsAddr, "--gateway-id", "gw-2", "--jwt-secret", secret)
	connect(gw2.addr)

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		complete := 0
		for _, u := range names {
			if len(got[u]) == total {
				complete++
			}
		}
		mu.Unlock()
		if complete == members || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	repeats := 0
	for _, u := range names {
		for _, id := range sent {
			switch n := got[u][id]; {
			case n == 0:
				t.Fatalf("%s never got %s", u, id)
			case n > 1:
				repeats += n - 1
			}
		}
		if len(got[u]) != total {
			t.Fatalf("%s got %d distinct messages, want %d", u, len(got[u]), total)
		}
	}
	t.Logf("%d members × %d messages complete after a SIGKILL mid fan-out; %d repeats dropped by id", members, total, repeats)
}
