package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// natsCLI finds the nats CLI (github.com/nats-io/natscli): $JETCHAT_NATS_CLI,
// else nats on the PATH. .ci/run installs it; elsewhere the test skips
// without it, except under CI=true.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("JETCHAT_NATS_CLI"); p != "" {
		return p
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	msg := "the nats CLI is not installed: go install github.com/nats-io/natscli/nats@v0.5.0 (or set JETCHAT_NATS_CLI)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startServe runs serve in process until the test ends and returns its
// HTTP address.
func startServe(t *testing.T, getenv func(string) string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout := &syncWriter{addr: make(chan string, 1)}
	var stderr syncWriter
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--http", "127.0.0.1:0"}, args...), getenv, stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case addr := <-stdout.addr:
		return addr
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, stderr.buf.String())
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not start")
	}
	return ""
}

// TestNatsCLISeesTheDocumentedResources drives the real nats CLI against a
// running node, with the commands docs/operations.md gives operators: the
// streams and buckets it lists are those of natsx.Inventory, each
// documented and described; backup and purge work.
func TestNatsCLISeesTheDocumentedResources(t *testing.T) {
	t.Parallel()
	cli := natsCLI(t)
	data := t.TempDir()
	natsAddr := freePort(t)
	getenv := env("DATABASE_URL", pgtest.NewURL(t), "JETCHAT_DATA", data)
	addr := startServe(t, getenv, "--nats-listen", natsAddr, "--retention", "72h")
	home := t.TempDir() // no operator's nats contexts
	nats := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"--server", "nats://" + natsAddr}, args...)...)
		cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	names := func(out string) []string {
		var ns []string
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				ns = append(ns, l)
			}
		}
		slices.Sort(ns)
		return ns
	}

	streams, kvs, objects := natsx.Inventory()
	wantStreams := slices.Clone(streams)
	for _, b := range kvs {
		wantStreams = append(wantStreams, "KV_"+b)
	}
	for _, b := range objects {
		wantStreams = append(wantStreams, "OBJ_"+b)
	}
	slices.Sort(wantStreams)
	slices.Sort(kvs)
	slices.Sort(objects)
	if got := names(nats("stream", "ls", "--names")); !slices.Equal(got, wantStreams) {
		t.Errorf("nats stream ls = %v, want %v", got, wantStreams)
	}
	if got := names(nats("kv", "ls", "--names")); !slices.Equal(got, kvs) {
		t.Errorf("nats kv ls = %v, want %v", got, kvs)
	}
	if got := names(nats("object", "ls", "--names")); !slices.Equal(got, objects) {
		t.Errorf("nats object ls = %v, want %v", got, objects)
	}

	// Every resource is documented for operators, and described.
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range append(append(slices.Clone(streams), kvs...), objects...) {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/operations.md does not document %s", n)
		}
	}
	var info struct {
		Config struct {
			Description string `json:"description"`
			MaxAge      int64  `json:"max_age"`
		} `json:"config"`
		State struct {
			Messages uint64 `json:"messages"`
		} `json:"state"`
	}
	for _, s := range wantStreams {
		if err := json.Unmarshal([]byte(nats("stream", "info", s, "--json")), &info); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(info.Config.Description, "jetchat ") {
			t.Errorf("stream %s has description %q, want one that says what it is", s, info.Config.Description)
		}
	}
	json.Unmarshal([]byte(nats("stream", "info", natsx.StreamMsgs, "--json")), &info)
	if time.Duration(info.Config.MaxAge) != 72*time.Hour {
		t.Errorf("%s max age = %v, want --retention 72h", natsx.StreamMsgs, time.Duration(info.Config.MaxAge))
	}

	// A message, then back up the log and purge one inbox.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, err := client.Dial(ctx, "ws://"+addr+"/v1/ws", mintToken(t, getenv, "--user", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if _, err := alice.Send(ctx, "bob", "to be backed up"); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "msgs")
	nats("backup", "stream", natsx.StreamMsgs, backup, "--no-progress")
	if out := nats("backup", "validate", backup); !strings.Contains(strings.ToLower(out), "valid") {
		t.Errorf("nats backup validate: %s", out)
	}
	if out := nats("stream", "get", natsx.StreamMsgs, "1"); !strings.Contains(out, "to be backed up") || !strings.Contains(out, "Jc-V") {
		t.Errorf("nats stream get: %s", out)
	}
	nats("stream", "purge", natsx.StreamMsgs, "--subject", "chat.u.bob", "--force")
	json.Unmarshal([]byte(nats("stream", "info", natsx.StreamMsgs, "--json")), &info)
	if info.State.Messages != 0 {
		t.Errorf("after purging chat.u.bob the log holds %d records, want 0", info.State.Messages)
	}
}
