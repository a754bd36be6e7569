package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/testnode"
	"github.com/jetchat/jetchat/objectstore"
)

// mediaNode is a node whose gateway serves media from a real Store.
type mediaNode struct {
	*testnode.Node
	store *objectstore.Store
	res   *natsx.Resources
}

// groupMembers is the test's own group membership: group → user → the log
// position from which the user is a member.
type groupMembers map[string]map[string]uint64

func (m groupMembers) WasMember(_ context.Context, group, user string, seq uint64) (bool, error) {
	since, ok := m[group][user]
	return ok && seq >= since, nil
}

func startMediaNode(t *testing.T, cfg objectstore.Config, groups objectstore.GroupMembership) *mediaNode {
	t.Helper()
	mn := &mediaNode{}
	mn.Node = testnode.Start(t, natstest.RunJetStream(t), testnode.Options{
		Wire: func(t testing.TB, w testnode.Wiring, deps *gateway.Deps) {
			mn.store, mn.res = testnode.WireMedia(t, w, deps, cfg, groups), w.Resources
		},
	})
	return mn
}

// request sends an HTTP request to the node as user ("" for no token) and
// returns the answer with its body read.
func (n *mediaNode) request(t *testing.T, method, path, user string, hdr map[string]string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx10(t), method, n.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+testnode.Token(t, user, "phone"))
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	return resp, b
}

// upload posts body as user with the given Content-Type and requires 201.
func (n *mediaNode) upload(t *testing.T, user, ctype string, body []byte) chat.MediaInfo {
	t.Helper()
	resp, b := n.request(t, "POST", "/v1/media", user, map[string]string{"Content-Type": ctype}, bytes.NewReader(body))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload = %d %s, want 201", resp.StatusCode, b)
	}
	var info chat.MediaInfo
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("upload answer %s: %v", b, err)
	}
	return info
}

// wantError checks an answer's status and JSON error code.
func wantError(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	var eb struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); resp.StatusCode != status || err != nil || eb.Error.Code != code || eb.Error.Message == "" {
		t.Errorf("%s = %d %s, want %d with error code %q", what, resp.StatusCode, body, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
}

// stored is what media storage holds: messages in the object store's
// stream and keys in the access bucket.
func (n *mediaNode) stored(t *testing.T) (msgs uint64, records int) {
	t.Helper()
	st, err := n.JS.Stream(ctx10(t), "OBJ_"+natsx.BucketMedia)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := n.res.MediaACL.Keys(ctx10(t))
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatal(err)
	}
	return info.State.Msgs, len(keys)
}

// waitNothingStored waits until media storage is empty.
func (n *mediaNode) waitNothingStored(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msgs, records := n.stored(t)
		if msgs == 0 && records == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s left %d object store messages and %d access records behind", what, msgs, records)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestMediaUploadAndDownload(t *testing.T) {
	t.Parallel()
	n := startMediaNode(t, objectstore.Config{}, nil)
	content := randomBytes(300<<10 + 17)
	info := n.upload(t, "alice", "video/mp4", content)
	if !objectstore.ValidID(info.ID) || info.Size != int64(len(content)) || info.MIME != "video/mp4" || info.SHA256 != fmt.Sprintf("%x", sha256.Sum256(content)) {
		t.Errorf("upload answered %+v, want a media id, size %d, video/mp4 and the SHA-256", info, len(content))
	}
	resp, body := n.request(t, "GET", "/v1/media/"+info.ID, "alice", nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("GET by the uploader = %d, %d bytes; want 200 and the %d bytes", resp.StatusCode, len(body), len(content))
	}
	for h, want := range map[string]string{
		"Content-Type":           "video/mp4",
		"Content-Length":         strconv.Itoa(len(content)),
		"ETag":                   `"` + info.SHA256 + `"`,
		"Accept-Ranges":          "bytes",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("GET %s = %q, want %q", h, got, want)
		}
	}
	// HEAD answers the same headers without the bytes.
	resp, body = n.request(t, "HEAD", "/v1/media/"+info.ID, "alice", nil, nil)
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(content)) || resp.Header.Get("ETag") == "" {
		t.Errorf("HEAD = %d, %d bytes, length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
	// An image is checked against its bytes and served with its type.
	png := append([]byte("\x89PNG\r\n\x1a\n"), randomBytes(2000)...)
	img := n.upload(t, "alice", "image/png", png)
	resp, body = n.request(t, "GET", "/v1/media/"+img.ID, "alice", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" || !bytes.Equal(body, png) {
		t.Errorf("GET image = %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
}

func TestMediaDownloadAccess(t *testing.T) {
	t.Parallel()
	n := startMediaNode(t, objectstore.Config{}, groupMembers{"g1": {"alice": 1, "gina": 5, "hank": 50}})
	content := randomBytes(1000)
	direct := n.upload(t, "alice", "application/pdf", content)
	grouped := n.upload(t, "alice", "application/pdf", content)
	// The send path records grants with Attach.
	if err := n.store.Attach(ctx10(t), "alice", direct.ID, chat.MediaGrant{Users: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	if err := n.store.Attach(ctx10(t), "alice", grouped.ID, chat.MediaGrant{Group: "g1", Seq: 10}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, path string
		want       int
	}{
		{"alice", "/v1/media/" + direct.ID, 200},             // uploader
		{"bob", "/v1/media/" + direct.ID, 200},               // recipient
		{"carol", "/v1/media/" + direct.ID, 404},             // anyone else
		{"gina", "/v1/media/" + grouped.ID, 200},             // member when it was sent
		{"hank", "/v1/media/" + grouped.ID, 404},             // joined after
		{"bob", "/v1/media/" + grouped.ID, 404},              // not a member
		{"alice", "/v1/media/mdAAAAAAAAAAAAAAAAAAAAAA", 404}, // unknown
		{"alice", "/v1/media/nonsense", 404},
		{"alice", "/v1/media/..%2Fx", 404},
		{"alice", "/v1/media/" + url.PathEscape("md*"), 404},
		{"alice", "/v1/media/%3E", 404},
		{"alice", "/v1/media/../x", 404}, // cleaned by the router to /v1/x
		{"", "/v1/media/" + direct.ID, 401},
	} {
		resp, body := n.request(t, "GET", tc.path, tc.user, nil, nil)
		switch tc.want {
		case 200:
			if resp.StatusCode != 200 || !bytes.Equal(body, content) {
				t.Errorf("GET %s as %s = %d %.100s, want 200 and the bytes", tc.path, tc.user, resp.StatusCode, body)
			}
		case 404:
			wantError(t, "GET "+tc.path+" as "+tc.user, resp, body, 404, "not_found")
		case 401:
			wantError(t, "GET "+tc.path+" without a token", resp, body, 401, "unauthorized")
		}
	}
	resp, body := n.request(t, "POST", "/v1/media", "", map[string]string{"Content-Type": "text/plain"}, strings.NewReader("x"))
	wantError(t, "POST /v1/media without a token", resp, body, 401, "unauthorized")
	if msgs, _ := n.stored(t); msgs != 4 { // two objects, one chunk and one metadata message each
		t.Errorf("object store holds %d messages, want 4 (the refused upload stored nothing)", msgs)
	}
}

func TestMediaRange(t *testing.T) {
	t.Parallel()
	n := startMediaNode(t, objectstore.Config{}, nil)
	content := randomBytes(400 << 10) // several chunks
	size := len(content)
	info := n.upload(t, "alice", "audio/ogg", content)
	etag := `"` + info.SHA256 + `"`
	path := "/v1/media/" + info.ID
	s := strconv.Itoa
	for _, tc := range []struct {
		name, rng, ifRange string
		status             int
		from, to           int // the bytes [from, to] for 206
	}{
		{"first bytes", "bytes=0-99", "", 206, 0, 99},
		{"middle, across a chunk boundary", "bytes=131000-140000", "", 206, 131000, 140000},
		{"suffix", "bytes=-100", "", 206, size - 100, size - 1},
		{"open-ended", "bytes=300000-", "", 206, 300000, size - 1},
		{"last byte", "bytes=" + s(size-1) + "-" + s(size-1), "", 206, size - 1, size - 1},
		{"end past the size is clamped", "bytes=10-99999999", "", 206, 10, size - 1},
		{"suffix longer than the object", "bytes=-99999999", "", 206, 0, size - 1},
		{"with spaces", "bytes= 5 - 9 ", "", 206, 5, 9},
		{"If-Range with the ETag", "bytes=0-9", etag, 206, 0, 9},
		{"start past the end", "bytes=" + s(size) + "-", "", 416, 0, 0},
		{"far past the end", "bytes=99999999-100000000", "", 416, 0, 0},
		{"empty suffix", "bytes=-0", "", 416, 0, 0},
		{"several ranges: the whole object", "bytes=0-1,5-6", "", 200, 0, size - 1},
		{"malformed: the whole object", "bytes=x-y", "", 200, 0, size - 1},
		{"backwards: the whole object", "bytes=9-5", "", 200, 0, size - 1},
		{"other unit: the whole object", "items=0-1", "", 200, 0, size - 1},
		{"If-Range with another ETag: the whole object", "bytes=0-9", `"other"`, 200, 0, size - 1},
	} {
		hdr := map[string]string{"Range": tc.rng}
		if tc.ifRange != "" {
			hdr["If-Range"] = tc.ifRange
		}
		resp, body := n.request(t, "GET", path, "alice", hdr, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: Range %q = %d, want %d", tc.name, tc.rng, resp.StatusCode, tc.status)
			continue
		}
		switch tc.status {
		case 416:
			if got, want := resp.Header.Get("Content-Range"), "bytes */"+s(size); got != want {
				t.Errorf("%s: Content-Range %q, want %q", tc.name, got, want)
			}
			wantError(t, tc.name, resp, body, 416, "bad_request")
		case 206:
			if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", tc.from, tc.to, size); got != want {
				t.Errorf("%s: Content-Range %q, want %q", tc.name, got, want)
			}
			fallthrough
		default:
			want := content[tc.from : tc.to+1]
			if !bytes.Equal(body, want) || resp.Header.Get("Content-Length") != s(len(want)) {
				t.Errorf("%s: %d bytes (Content-Length %s), want bytes %d-%d", tc.name, len(body), resp.Header.Get("Content-Length"), tc.from, tc.to)
			}
		}
	}
}

func TestMediaIfNoneMatch(t *testing.T) {
	t.Parallel()
	n := startMediaNode(t, objectstore.Config{}, nil)
	info := n.upload(t, "alice", "text/plain", []byte("cache me"))
	etag := `"` + info.SHA256 + `"`
	for _, tc := range []struct {
		inm    string
		status int
	}{
		{etag, 304},
		{"W/" + etag, 304},
		{`"abc", ` + etag, 304},
		{"*", 304},
		{`"abc"`, 200},
	} {
		resp, body := n.request(t, "GET", "/v1/media/"+info.ID, "alice", map[string]string{"If-None-Match": tc.inm}, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("If-None-Match %s = %d, want %d", tc.inm, resp.StatusCode, tc.status)
		}
		if tc.status == 304 && (len(body) != 0 || resp.Header.Get("ETag") != etag) {
			t.Errorf("304 with %d bytes and ETag %q", len(body), resp.Header.Get("ETag"))
		}
	}
	// The ETag does not reveal media to others.
	resp, body := n.request(t, "GET", "/v1/media/"+info.ID, "eve", map[string]string{"If-None-Match": etag}, nil)
	wantError(t, "If-None-Match by a stranger", resp, body, 404, "not_found")
}

// chunked hides a body's length, so that it is sent chunked and only
// streaming can find it too large.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestMediaUploadOverLimit(t *testing.T) {
	t.Parallel()
	const max = 64 << 10
	// Small chunks: several are stored before the cut, and must go.
	n := startMediaNode(t, objectstore.Config{MaxSize: max, ChunkSize: 16 << 10}, nil)
	over := randomBytes(max + 100<<10)
	for name, body := range map[string]io.Reader{
		"declared length":  bytes.NewReader(over),
		"streamed chunked": chunked{bytes.NewReader(over)},
		"one byte over":    chunked{bytes.NewReader(over[:max+1])},
	} {
		resp, b := n.request(t, "POST", "/v1/media", "alice", map[string]string{"Content-Type": "application/zip"}, body)
		wantError(t, "upload over the limit, "+name, resp, b, 413, "too_large")
		n.waitNothingStored(t, "an upload over the limit, "+name)
	}
	info := n.upload(t, "alice", "application/zip", over[:max])
	if info.Size != max {
		t.Errorf("upload of exactly the limit: size %d", info.Size)
	}
}

func TestMediaUploadBadInput(t *testing.T) {
	t.Parallel()
	n := startMediaNode(t, objectstore.Config{}, nil)
	for _, tc := range []struct {
		name, ctype string
		body        []byte
	}{
		{"zero bytes", "image/png", nil},
		{"zero bytes, no type", "", nil},
		{"missing Content-Type", "", []byte("hello")},
		{"malformed Content-Type", "not a type", []byte("hello")},
		{"text declared as an image", "image/jpeg", []byte("<html><script>alert(1)</script></html>")},
	} {
		hdr := map[string]string{}
		if tc.ctype != "" {
			hdr["Content-Type"] = tc.ctype
		}
		resp, b := n.request(t, "POST", "/v1/media", "alice", hdr, bytes.NewReader(tc.body))
		wantError(t, "upload with "+tc.name, resp, b, 400, "bad_request")
	}
	n.waitNothingStored(t, "refused uploads")
}

func TestMediaUploadInterrupted(t *testing.T) {
	t.Parallel()
	n := startMediaNode(t, objectstore.Config{}, nil)
	u, err := url.Parse(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Announce 1 MiB, send 600 KiB (several chunks), then hang up.
	fmt.Fprintf(conn, "POST /v1/media HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n\r\n",
		u.Host, testnode.Token(t, "alice", "phone"), 1<<20)
	if _, err := conn.Write(randomBytes(600 << 10)); err != nil {
		t.Fatal(err)
	}
	// Wait until the upload is under way: its record exists and chunks are
	// stored.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if msgs, records := n.stored(t); msgs > 0 && records == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn.Close()
	n.waitNothingStored(t, "an upload interrupted half way")
}

func TestMediaUnavailableWithoutStore(t *testing.T) {
	t.Parallel()
	n := &mediaNode{Node: testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})}
	resp, b := n.request(t, "POST", "/v1/media", "alice", map[string]string{"Content-Type": "text/plain"}, strings.NewReader("x"))
	wantError(t, "upload without a media store", resp, b, 503, "unavailable")
	resp, b = n.request(t, "GET", "/v1/media/mdAAAAAAAAAAAAAAAAAAAAAA", "alice", nil, nil)
	wantError(t, "download without a media store", resp, b, 503, "unavailable")
}
