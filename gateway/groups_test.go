package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/pg"
	"github.com/jetchat/jetchat/internal/pgtest"
	"github.com/jetchat/jetchat/internal/testnode"
)

// A Store is what both the gateway and delivery need of groups.
var _ testnode.Groups = (*groups.Store)(nil)

// groupsNode starts a node whose groups live in pool, given to the gateway
// and to delivery.
func groupsNode(t *testing.T, pool *pgxpool.Pool, cfg groups.Config) *testnode.Node {
	t.Helper()
	return testnode.Start(t, natstest.RunJetStream(t), testnode.Options{
		Groups: testnode.PostgresGroups(pool, cfg, nil),
	})
}

// answer is an HTTP answer of the groups API.
type answer struct {
	status int
	body   []byte
}

// group decodes the answer as a group.
func (a answer) group(t *testing.T) chat.Group {
	t.Helper()
	var g chat.Group
	if err := json.Unmarshal(a.body, &g); err != nil {
		t.Fatalf("decode group %s: %v", a.body, err)
	}
	return g
}

// errorCode decodes the answer as the protocol's error body.
func (a answer) errorCode(t *testing.T) (code, message string) {
	t.Helper()
	var eb struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(a.body, &eb); err != nil || eb.Error.Code == "" {
		t.Fatalf("answer %d %s is not a JSON error: %v", a.status, a.body, err)
	}
	return eb.Error.Code, eb.Error.Message
}

// call makes a request as user ("" for no token) with a raw body.
func call(t *testing.T, n *testnode.Node, user, method, path, body string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+testnode.Token(t, user, "phone"))
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusNoContent && ct != "application/json" {
		t.Errorf("%s %s answered Content-Type %q", method, path, ct)
	}
	return answer{resp.StatusCode, b}
}

// jsonBody encodes v.
func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// members renders a group's members as "alice:admin bob:member".
func members(g chat.Group) string {
	var parts []string
	for _, m := range g.Members {
		parts = append(parts, m.User+":"+m.Role)
	}
	return strings.Join(parts, " ")
}

// expect checks an answer's status and, for errors, its JSON code.
func expect(t *testing.T, what string, a answer, status int, code string) {
	t.Helper()
	if a.status != status {
		t.Errorf("%s: status %d %s, want %d", what, a.status, a.body, status)
		return
	}
	if code != "" {
		if got, _ := a.errorCode(t); got != code {
			t.Errorf("%s: code %q, want %q", what, got, code)
		}
	}
}

func TestGroupsAPI(t *testing.T) {
	t.Parallel()
	n := groupsNode(t, pgtest.New(t), groups.Config{})

	// Create: 201, the caller admin, the others members.
	a := call(t, n, "alice", "POST", "/v1/groups", `{"name":"Team","members":["carol","bob"],"extra":"ignored"}`)
	expect(t, "create", a, http.StatusCreated, "")
	g := a.group(t)
	if g.ID == "" || g.Name != "Team" || members(g) != "alice:admin bob:member carol:member" {
		t.Fatalf("created %+v", g)
	}
	path := "/v1/groups/" + g.ID

	// Read: members only; everyone else 404, as for an unknown group.
	for _, u := range []string{"alice", "bob", "carol"} {
		a := call(t, n, u, "GET", path, "")
		if expect(t, "get as "+u, a, http.StatusOK, ""); a.status == 200 && members(a.group(t)) != members(g) {
			t.Errorf("get as %s = %s", u, a.body)
		}
	}
	expect(t, "get as a stranger", call(t, n, "eve", "GET", path, ""), http.StatusNotFound, "not_found")
	expect(t, "get an unknown group", call(t, n, "alice", "GET", "/v1/groups/gNOSUCHGROUP", ""), http.StatusNotFound, "not_found")
	expect(t, "get a malformed id", call(t, n, "alice", "GET", "/v1/groups/g.x", ""), http.StatusNotFound, "not_found")

	// List: the caller's groups.
	a = call(t, n, "bob", "GET", "/v1/groups", "")
	var list struct{ Groups []chat.Group }
	if err := json.Unmarshal(a.body, &list); err != nil || a.status != 200 || len(list.Groups) != 1 || list.Groups[0].ID != g.ID {
		t.Errorf("list as bob = %d %s", a.status, a.body)
	}
	if a := call(t, n, "eve", "GET", "/v1/groups", ""); a.status != 200 || strings.TrimSpace(string(a.body)) != `{"groups":[]}` {
		t.Errorf("list as eve = %d %s, want 200 {\"groups\":[]}", a.status, a.body)
	}

	// Add: admins only; idempotent for existing members.
	add := func(user string, users ...string) answer {
		return call(t, n, user, "POST", path+"/members", jsonBody(t, map[string]any{"users": users}))
	}
	expect(t, "add as a member", add("bob", "dave"), http.StatusForbidden, "forbidden")
	expect(t, "add as a stranger", add("eve", "eve"), http.StatusNotFound, "not_found")
	expect(t, "add to an unknown group", call(t, n, "alice", "POST", "/v1/groups/gNOSUCH/members", `{"users":["dave"]}`), http.StatusNotFound, "not_found")
	a = add("alice", "dave")
	if expect(t, "add as admin", a, http.StatusOK, ""); a.status == 200 && members(a.group(t)) != "alice:admin bob:member carol:member dave:member" {
		t.Errorf("after adding dave: %s", a.body)
	}
	a = add("alice", "dave", "bob")
	if expect(t, "add existing members", a, http.StatusOK, ""); a.status == 200 && members(a.group(t)) != "alice:admin bob:member carol:member dave:member" {
		t.Errorf("after adding existing members: %s", a.body)
	}

	// Remove: admins remove others, members leave.
	remove := func(user, who string) answer { return call(t, n, user, "DELETE", path+"/members/"+who, "") }
	expect(t, "member removes another", remove("bob", "carol"), http.StatusForbidden, "forbidden")
	expect(t, "member removes the admin", remove("bob", "alice"), http.StatusForbidden, "forbidden")
	expect(t, "stranger removes", remove("eve", "bob"), http.StatusNotFound, "not_found")
	expect(t, "remove a non-member", remove("alice", "eve"), http.StatusNotFound, "not_found")
	if a := remove("bob", "bob"); a.status != http.StatusNoContent || len(a.body) != 0 {
		t.Errorf("bob leaves: %d %s, want 204 and no body", a.status, a.body)
	}
	expect(t, "get after leaving", call(t, n, "bob", "GET", path, ""), http.StatusNotFound, "not_found")
	expect(t, "admin removes dave", remove("alice", "dave"), http.StatusNoContent, "")
	expect(t, "removed member reads", call(t, n, "dave", "GET", path, ""), http.StatusNotFound, "not_found")

	// The last admin leaves: the longest-standing member (carol, since the
	// creation) becomes admin, not aaron (added later, though first by id).
	expect(t, "add aaron", add("alice", "aaron"), http.StatusOK, "")
	expect(t, "alice leaves", remove("alice", "alice"), http.StatusNoContent, "")
	a = call(t, n, "aaron", "GET", path, "")
	if expect(t, "get after alice left", a, http.StatusOK, ""); a.status == 200 && members(a.group(t)) != "carol:admin aaron:member" {
		t.Errorf("after the last admin left: %s, want carol promoted", a.body)
	}
	expect(t, "carol adds as the new admin", add("carol", "frank"), http.StatusOK, "")
	// Everyone leaves: the group is visible to nobody.
	for _, u := range []string{"frank", "aaron", "carol"} {
		expect(t, u+" leaves", remove(u, u), http.StatusNoContent, "")
	}
	for _, u := range []string{"alice", "carol"} {
		expect(t, "get the empty group as "+u, call(t, n, u, "GET", path, ""), http.StatusNotFound, "not_found")
	}
}

func TestGroupsAPIRefusals(t *testing.T) {
	t.Parallel()
	n := groupsNode(t, pgtest.New(t), groups.Config{})
	a := call(t, n, "alice", "POST", "/v1/groups", `{"name":"Team","members":["bob"]}`)
	expect(t, "create", a, http.StatusCreated, "")
	id := a.group(t).ID
	path := "/v1/groups/" + id

	var others []string
	for i := range 2000 {
		others = append(others, fmt.Sprintf("user%04d", i))
	}
	for _, tc := range []struct {
		name         string
		user         string // "" for no token
		method, path string
		body         string
		status       int
		code         string
		msg          string // part of the error message
	}{
		{name: "create without a token", method: "POST", path: "/v1/groups", body: `{"name":"x"}`, status: 401, code: "unauthorized"},
		{name: "list without a token", method: "GET", path: "/v1/groups", status: 401, code: "unauthorized"},
		{name: "get without a token", method: "GET", path: path, status: 401, code: "unauthorized"},
		{name: "add without a token", method: "POST", path: path + "/members", body: `{"users":["x"]}`, status: 401, code: "unauthorized"},
		{name: "remove without a token", method: "DELETE", path: path + "/members/bob", status: 401, code: "unauthorized"},

		{name: "no body", user: "alice", method: "POST", path: "/v1/groups", status: 400, code: "bad_request", msg: "body is required"},
		{name: "truncated JSON", user: "alice", method: "POST", path: "/v1/groups", body: `{"name":`, status: 400, code: "bad_request", msg: "malformed JSON"},
		{name: "not an object", user: "alice", method: "POST", path: "/v1/groups", body: `["bob"]`, status: 400, code: "bad_request", msg: "JSON object"},
		{name: "members not a list", user: "alice", method: "POST", path: "/v1/groups", body: `{"name":"x","members":"bob"}`, status: 400, code: "bad_request", msg: `"members"`},
		{name: "member not a string", user: "alice", method: "POST", path: "/v1/groups", body: `{"name":"x","members":[1]}`, status: 400, code: "bad_request", msg: `"members"`},
		{name: "trailing data", user: "alice", method: "POST", path: "/v1/groups", body: `{"name":"x"} {}`, status: 400, code: "bad_request", msg: "after the JSON object"},
		{name: "no name", user: "alice", method: "POST", path: "/v1/groups", body: `{"members":["bob"]}`, status: 400, code: "bad_request", msg: "name is required"},
		{name: "name too long", user: "alice", method: "POST", path: "/v1/groups", body: jsonBody(t, map[string]any{"name": strings.Repeat("x", 101)}), status: 400, code: "bad_request", msg: "at most 100"},
		{name: "invalid user id", user: "alice", method: "POST", path: "/v1/groups", body: `{"name":"x","members":["bob","a.b"]}`, status: 400, code: "bad_request", msg: `"a.b"`},
		{name: "duplicate member", user: "alice", method: "POST", path: "/v1/groups", body: `{"name":"x","members":["bob","carol","bob"]}`, status: 400, code: "bad_request", msg: `"bob" is listed more than once`},
		{name: "2000 members", user: "alice", method: "POST", path: "/v1/groups", body: jsonBody(t, map[string]any{"name": "big", "members": others}), status: 413, code: "too_large", msg: "at most 1024 members"},
		{name: "1024 others and the creator", user: "alice", method: "POST", path: "/v1/groups", body: jsonBody(t, map[string]any{"name": "big", "members": others[:1024]}), status: 413, code: "too_large", msg: "would have 1025"},
		{name: "body over the cap", user: "alice", method: "POST", path: "/v1/groups", body: `{"name":"` + strings.Repeat("x", 300<<10) + `"}`, status: 413, code: "too_large", msg: "request body over"},

		{name: "add nobody", user: "alice", method: "POST", path: path + "/members", body: `{"users":[]}`, status: 400, code: "bad_request", msg: "users"},
		{name: "add malformed", user: "alice", method: "POST", path: path + "/members", body: `{"users":`, status: 400, code: "bad_request", msg: "malformed JSON"},
		{name: "add an invalid id", user: "alice", method: "POST", path: path + "/members", body: `{"users":["ok","no/pe"]}`, status: 400, code: "bad_request", msg: `"no/pe"`},
		{name: "add a duplicate", user: "alice", method: "POST", path: path + "/members", body: `{"users":["dave","dave"]}`, status: 400, code: "bad_request", msg: `"dave"`},
		{name: "add past the limit", user: "alice", method: "POST", path: path + "/members", body: jsonBody(t, map[string]any{"users": others[:1023]}), status: 413, code: "too_large", msg: "would have 1025"},
		{name: "remove an invalid id", user: "alice", method: "DELETE", path: path + "/members/a.b", status: 400, code: "bad_request", msg: `"a.b"`},
		{name: "remove from a malformed group", user: "alice", method: "DELETE", path: "/v1/groups/g.b/members/bob", status: 404, code: "not_found"},
		{name: "unknown method", user: "alice", method: "PUT", path: path, body: `{}`, status: 404, code: "not_found"},
	} {
		a := call(t, n, tc.user, tc.method, tc.path, tc.body)
		if a.status != tc.status {
			t.Errorf("%s: %s %s = %d %.200s, want %d", tc.name, tc.method, tc.path, a.status, a.body, tc.status)
			continue
		}
		code, msg := a.errorCode(t)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: error %q %q, want %q saying %q", tc.name, code, msg, tc.code, tc.msg)
		}
	}
	// None of the refusals changed the group.
	a = call(t, n, "alice", "GET", path, "")
	if a.status != 200 || members(a.group(t)) != "alice:admin bob:member" {
		t.Errorf("group after the refusals: %d %s", a.status, a.body)
	}
	a = call(t, n, "alice", "GET", "/v1/groups", "")
	var list struct{ Groups []chat.Group }
	if json.Unmarshal(a.body, &list); len(list.Groups) != 1 {
		t.Errorf("alice has %d groups after the refusals, want 1", len(list.Groups))
	}
	// A full group of 1024 is fine.
	a = call(t, n, "alice", "POST", "/v1/groups", jsonBody(t, map[string]any{"name": "full", "members": others[:1023]}))
	if a.status != http.StatusCreated || len(a.group(t).Members) != 1024 {
		t.Errorf("create a group of 1024: %d", a.status)
	}
}

func TestGroupsAPIPostgresUnreachable(t *testing.T) {
	t.Parallel()
	pool, err := pg.NewPool(context.Background(), "postgres://postgres@127.0.0.1:1/jetchat?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	n := groupsNode(t, pool, groups.Config{QueryTimeout: 3 * time.Second})
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/groups", `{"name":"Team","members":["bob"]}`},
		{"GET", "/v1/groups", ""},
		{"GET", "/v1/groups/gSOME", ""},
		{"POST", "/v1/groups/gSOME/members", `{"users":["bob"]}`},
		{"DELETE", "/v1/groups/gSOME/members/bob", ""},
	} {
		a := call(t, n, "alice", tc.method, tc.path, tc.body)
		expect(t, tc.method+" "+tc.path, a, http.StatusServiceUnavailable, "unavailable")
		if a.status == 503 && bytes.Contains(a.body, []byte("127.0.0.1")) {
			t.Errorf("%s %s leaks internals: %s", tc.method, tc.path, a.body)
		}
	}
	// 1:1 messaging is unaffected.
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	s := send(t, alice, "bob", "still works")
	if m := nextMessage(t, bob); m.ID != s.ID {
		t.Errorf("bob got %s, want %s", m.ID, s.ID)
	}
}

func TestGroupsAPIWithoutGroups(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/groups", `{"name":"Team"}`},
		{"GET", "/v1/groups", ""},
		{"GET", "/v1/groups/gSOME", ""},
		{"POST", "/v1/groups/gSOME/members", `{"users":["bob"]}`},
		{"DELETE", "/v1/groups/gSOME/members/bob", ""},
	} {
		expect(t, tc.method+" "+tc.path, call(t, n, "alice", tc.method, tc.path, tc.body), http.StatusServiceUnavailable, "unavailable")
	}
	// Authentication still comes first.
	expect(t, "no token", call(t, n, "", "GET", "/v1/groups", ""), http.StatusUnauthorized, "unauthorized")
}

// With inbox notices, the committed delivery service follows membership
// changes live: members added get what is sent after, removed members
// nothing more.
func TestGroupMessagesFollowMembership(t *testing.T) {
	t.Parallel()
	n := groupsNode(t, pgtest.New(t), groups.Config{})
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	carol := n.Dial(t, "carol", "phone")
	a := call(t, n, "alice", "POST", "/v1/groups", `{"name":"Team","members":["bob"]}`)
	expect(t, "create", a, http.StatusCreated, "")
	id := a.group(t).ID
	sendGroup := func(body string) client.Sent {
		t.Helper()
		s, err := alice.SendMsg(ctx10(t), client.SendRequest{Group: id, Body: body})
		if err != nil {
			t.Fatalf("send %q to the group: %v", body, err)
		}
		return s
	}
	receive := func(c *client.Conn, who string, want client.Sent) {
		t.Helper()
		m := nextMessage(t, c)
		if m.ID != want.ID || m.Group != id || m.From != "alice" {
			t.Fatalf("%s got %+v, want message %s in %s", who, m, want.ID, id)
		}
		c.Ack(m.ID)
	}

	first := sendGroup("before carol")
	receive(bob, "bob", first)
	expect(t, "add carol", call(t, n, "alice", "POST", "/v1/groups/"+id+"/members", `{"users":["carol"]}`), http.StatusOK, "")
	second := sendGroup("with carol")
	receive(bob, "bob", second)
	receive(carol, "carol", second) // not the one sent before she joined
	expect(t, "remove bob", call(t, n, "alice", "DELETE", "/v1/groups/"+id+"/members/bob", ""), http.StatusNoContent, "")
	third := sendGroup("without bob")
	receive(carol, "carol", third)
	quiet(t, bob, 300*time.Millisecond)
	// bob may no longer send; alice's other frames are receipts only.
	if _, err := bob.SendMsg(ctx10(t), client.SendRequest{Group: id, Body: "still here?"}); err == nil {
		t.Error("a removed member sent to the group")
	}
}
