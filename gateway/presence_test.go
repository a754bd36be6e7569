package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/internal/testnode"
	"github.com/jetchat/jetchat/presence"
)

// withPresence wires a registry and a presence tracker into a test node and
// stores the tracker in *tr.
func withPresence(id string, tr **presence.Tracker) func(t testing.TB, w testnode.Wiring, deps *gateway.Deps) {
	return func(t testing.TB, w testnode.Wiring, deps *gateway.Deps) {
		reg, err := registry.New(registry.Config{}, w.JS, w.Resources.Gateways, registry.Gateway{ID: id}, w.Log)
		if err != nil {
			t.Fatal(err)
		}
		p, err := presence.New(presence.Config{Grace: 100 * time.Millisecond}, w.NC, w.Resources.Presence, reg, w.Log)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { reg.Run(ctx) })
		wg.Go(func() { p.Run(ctx) })
		t.Cleanup(func() { cancel(); wg.Wait() })
		*tr = p
		deps.Presence = p
	}
}

func httpStatus(err error) (int, string) {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status, ce.Code
	}
	if err == nil {
		return 200, ""
	}
	return 0, err.Error()
}

func TestPresenceHTTP(t *testing.T) {
	t.Parallel()
	var tr *presence.Tracker
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{Wire: withPresence("gw-1", &tr)})
	ctx := testCtx(t)
	alice, bob := n.API(t, "alice"), n.API(t, "bob")
	type state struct {
		User     string `json:"user"`
		Online   *bool  `json:"online"`
		LastSeen int64  `json:"last_seen"`
	}
	get := func(api *client.API, user string) state {
		t.Helper()
		var st state
		if err := api.Do(ctx, "GET", "/v1/presence/"+user, nil, &st); err != nil {
			t.Fatalf("GET /v1/presence/%s: %v", user, err)
		}
		if st.User != user || st.Online == nil {
			t.Fatalf("GET /v1/presence/%s = %+v, want user and online", user, st)
		}
		return st
	}

	// Without a token: 401, before anything else.
	anon := &client.API{BaseURL: n.URL}
	for _, c := range []struct{ method, path string }{{"GET", "/v1/presence/bob"}, {"PUT", "/v1/privacy"}} {
		if st, code := httpStatus(anon.Do(ctx, c.method, c.path, map[string]string{"last_seen": "nobody"}, nil)); st != 401 || code != "unauthorized" {
			t.Errorf("%s %s without a token = %d %s, want 401 unauthorized", c.method, c.path, st, code)
		}
	}
	// Invalid ids: 400.
	for _, u := range []string{"a.b", "a%20b", "a*", strings.Repeat("x", 65)} {
		if st, code := httpStatus(alice.Do(ctx, "GET", "/v1/presence/"+u, nil, nil)); st != 400 || code != "bad_request" {
			t.Errorf("GET /v1/presence/%s = %d %s, want 400 bad_request", u, st, code)
		}
	}
	// A user never seen is offline with no last-seen.
	if st := get(alice, "bob"); *st.Online || st.LastSeen != 0 {
		t.Errorf("a user never seen = %+v, want offline without last_seen", st)
	}
	// Online while connected, then offline with a last-seen.
	if err := tr.Connected(ctx, "bob", "phone"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return *get(alice, "bob").Online })
	if st := get(alice, "bob"); st.LastSeen != 0 {
		t.Errorf("online user has last_seen: %+v", st)
	}
	tr.Disconnected(ctx, "bob", "phone")
	waitFor(t, func() bool { return !*get(alice, "bob").Online })
	if st := get(alice, "bob"); st.LastSeen == 0 {
		t.Errorf("offline user has no last_seen: %+v", st)
	}

	// Privacy: nobody hides the last-seen from others, not from bob.
	var out map[string]string
	if err := bob.Do(ctx, "PUT", "/v1/privacy", map[string]string{"last_seen": "nobody"}, &out); err != nil || out["last_seen"] != "nobody" {
		t.Fatalf("PUT /v1/privacy nobody = %v, %v", out, err)
	}
	if st := get(alice, "bob"); *st.Online || st.LastSeen != 0 {
		t.Errorf("with privacy nobody, alice sees %+v", st)
	}
	if st := get(bob, "bob"); st.LastSeen == 0 {
		t.Errorf("with privacy nobody, bob does not see his own last_seen: %+v", st)
	}
	if err := bob.Do(ctx, "PUT", "/v1/privacy", map[string]string{"last_seen": "everyone"}, &out); err != nil || out["last_seen"] != "everyone" {
		t.Fatalf("PUT /v1/privacy everyone = %v, %v", out, err)
	}
	if st := get(alice, "bob"); st.LastSeen == 0 {
		t.Errorf("with privacy everyone, alice sees no last_seen: %+v", st)
	}
	// Bad privacy requests: 400 (413 when huge).
	for _, body := range []string{``, `{`, `[]`, `{"last_seen":"contacts"}`, `{"last_seen":1}`, `{}`} {
		req, _ := http.NewRequestWithContext(ctx, "PUT", n.URL+"/v1/privacy", strings.NewReader(body))
		if st, code := httpStatus(bob.DoRequest(req, nil)); st != 400 || code != "bad_request" {
			t.Errorf("PUT /v1/privacy %q = %d %s, want 400 bad_request", body, st, code)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, "PUT", n.URL+"/v1/privacy", strings.NewReader(`{"last_seen":"`+strings.Repeat("x", 8<<10)+`"}`))
	if st, code := httpStatus(bob.DoRequest(req, nil)); st != 413 {
		t.Errorf("PUT /v1/privacy with 8 KiB = %d %s, want 413", st, code)
	}
	if st := get(alice, "bob"); st.LastSeen == 0 {
		t.Errorf("a refused privacy change changed it: %+v", st)
	}
}

func TestPresenceHTTPUnavailable(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	ctx := testCtx(t)
	api := n.API(t, "alice")
	if st, code := httpStatus(api.Do(ctx, "GET", "/v1/presence/bob", nil, nil)); st != 503 || code != "unavailable" {
		t.Errorf("GET /v1/presence/bob without presence = %d %s, want 503 unavailable", st, code)
	}
	if st, code := httpStatus(api.Do(ctx, "PUT", "/v1/privacy", map[string]string{"last_seen": "nobody"}, nil)); st != 503 || code != "unavailable" {
		t.Errorf("PUT /v1/privacy without presence = %d %s, want 503 unavailable", st, code)
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
