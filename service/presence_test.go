package service_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/presence"
	"github.com/jetchat/jetchat/service"
	"github.com/jetchat/jetchat/svcapi"
)

// TestPresenceFeed runs the real presence tracker and gateway registry: a
// service with svc-audit's credentials sees the v1 events of a user coming
// online and going offline, and of a gateway leaving.
func TestPresenceFeed(t *testing.T) {
	t.Parallel()
	s := natstest.RunAccounts(t)
	n := startNode(t, s, service.Config{})
	reg, err := registry.New(registry.Config{Interval: 100 * time.Millisecond}, n.js, n.res.Gateways, registry.Gateway{ID: "gw-1"}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := presence.New(presence.Config{Grace: 50 * time.Millisecond}, n.nc, n.res.Presence, reg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	feed, err := service.NewPresenceFeed(n.nc, reg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	run(t, reg.Run, tr.Run, feed.Run)
	<-reg.Ready()

	audit := connectService(t, s, "svc-audit")
	ch := make(chan *nats.Msg, 64)
	if _, err := audit.nc.ChanSubscribe("jetchat.presence.v1.>", ch); err != nil {
		t.Fatal(err)
	}
	audit.nc.Flush()
	next := func(subject string) []byte {
		t.Helper()
		for {
			select {
			case m := <-ch:
				if m.Subject == subject {
					return m.Data
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no event on %s", subject)
			}
		}
	}

	ctx := testCtx(t)
	if err := tr.Connected(ctx, "bob", "phone"); err != nil {
		t.Fatal(err)
	}
	var on svcapi.PresenceEvent
	json.Unmarshal(next(svcapi.PresencePrefix+"bob"), &on)
	self := reg.Self()
	if !on.Online || on.V != 1 || len(on.Gateways) != 1 || on.Gateways[0] != registry.Key(self) || on.LastSeen != 0 {
		t.Errorf("online event = %+v, want online on %s", on, registry.Key(self))
	}
	if err := tr.Disconnected(ctx, "bob", "phone"); err != nil {
		t.Fatal(err)
	}
	var off svcapi.PresenceEvent
	json.Unmarshal(next(svcapi.PresencePrefix+"bob"), &off)
	if off.Online || off.LastSeen == 0 || len(off.Gateways) != 0 {
		t.Errorf("offline event = %+v, want offline with a last-seen", off)
	}

	// Another gateway stops: its incarnation is announced as gone.
	reg2, err := registry.New(registry.Config{Interval: 100 * time.Millisecond}, n.js, n.res.Gateways, registry.Gateway{ID: "gw-2"}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx2, stop2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- reg2.Run(ctx2) }()
	<-reg2.Ready()
	time.Sleep(300 * time.Millisecond) // gw-1 sees it join
	stop2()
	<-done2
	var gone svcapi.GatewayEvent
	json.Unmarshal(next(svcapi.PresenceGateway), &gone)
	if gone.Type != "gateway_gone" || gone.Gateway != registry.Key(reg2.Self()) || gone.LastSeen == 0 || !strings.HasPrefix(gone.Gateway, "gw-2.") {
		t.Errorf("gateway event = %+v, want gw-2's incarnation %s gone", gone, registry.Key(reg2.Self()))
	}
}
