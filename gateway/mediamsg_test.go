package gateway_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/pgtest"
	"github.com/jetchat/jetchat/internal/testnode"
	"github.com/jetchat/jetchat/objectstore"
)

// fullNode is a node with groups and media.
func fullNode(t *testing.T) (*testnode.Node, *groups.Store) {
	t.Helper()
	pool := pgtest.New(t)
	var store *groups.Store
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{
		Groups: testnode.PostgresGroups(pool, groups.Config{}, &store),
		Wire: func(t testing.TB, w testnode.Wiring, deps *gateway.Deps) {
			testnode.WireMedia(t, w, deps, objectstore.Config{}, store)
		},
	})
	return n, store
}

func uploadMedia(t *testing.T, n *testnode.Node, user string, data []byte) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx10(t), "POST", n.URL+"/v1/media", bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	var info chat.MediaInfo
	if err := n.API(t, user).DoRequest(req, &info); err != nil {
		t.Fatalf("upload: %v", err)
	}
	return info.ID
}

func downloadStatus(t *testing.T, n *testnode.Node, user, id string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx10(t), "GET", n.URL+"/v1/media/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+testnode.Token(t, user, ""))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestMediaInMessages(t *testing.T) {
	t.Parallel()
	n, store := fullNode(t)
	data := bytes.Repeat([]byte("pixel"), 50000)
	id := uploadMedia(t, n, "alice", data)
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	ctx := testCtx(t)

	s, err := alice.SendMsg(ctx, client.SendRequest{To: "bob", Body: "look", Media: id})
	if err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, bob); m.ID != s.ID || m.Media != id {
		t.Fatalf("bob got %+v, want media %s", m, id)
	}
	if st, b := downloadStatus(t, n, "bob", id); st != 200 || !bytes.Equal(b, data) {
		t.Errorf("recipient download = %d (%d bytes), want 200 with the bytes", st, len(b))
	}
	if st, _ := downloadStatus(t, n, "eve", id); st != 404 {
		t.Errorf("stranger download = %d, want 404", st)
	}
	// A recipient may pass it on; a stranger may not attach it; unknown ids
	// are refused before anything is stored.
	if _, err := bob.SendMsg(ctx, client.SendRequest{To: "carol", Body: "fwd", Media: id}); err != nil {
		t.Fatalf("forward received media: %v", err)
	}
	if st, _ := downloadStatus(t, n, "carol", id); st != 200 {
		t.Errorf("download after a forward = %d, want 200", st)
	}
	eve := n.Dial(t, "eve", "phone")
	for _, media := range []string{id, "md0000000000000000000000", "nope"} {
		_, err := eve.SendMsg(ctx, client.SendRequest{To: "bob", Body: "x", Media: media})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != "not_found" {
			t.Errorf("eve sending media %q: %v, want not_found", media, err)
		}
	}
	quiet(t, bob, 200*time.Millisecond)

	// In a group: members at the time of sending may read it.
	g, err := store.Create(ctx, "alice", "pics", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	gid := uploadMedia(t, n, "alice", []byte("group bytes"))
	if _, err := alice.SendMsg(ctx, client.SendRequest{Group: g.ID, Body: "for the group", Media: gid}); err != nil {
		t.Fatal(err)
	}
	if st, _ := downloadStatus(t, n, "bob", gid); st != 200 {
		t.Errorf("member download = %d, want 200", st)
	}
	if _, err := store.AddMembers(ctx, "alice", g.ID, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := downloadStatus(t, n, "dave", gid); st != 404 {
		t.Errorf("download by a member who joined later = %d, want 404", st)
	}
}
