package natstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// Markers of the accounts section of the repository's nats.conf.
const (
	accountsBegin = "# ACCOUNTS:"
	accountsEnd   = "# END ACCOUNTS"
)

// passwordVars are the environment variables nats.conf's accounts section
// takes its passwords from, by user.
var passwordVars = map[string]string{
	"jetchat":   "JETCHAT_NATS_PASSWORD",
	"admin":     "NATS_ADMIN_PASSWORD",
	"sys":       "NATS_SYS_PASSWORD",
	"svc-echo":  "SVC_ECHO_PASSWORD",
	"svc-push":  "SVC_PUSH_PASSWORD",
	"svc-audit": "SVC_AUDIT_PASSWORD",
}

// Password is the password of a nats.conf user on a server started by
// RunAccounts.
func Password(user string) string { return "test-password-" + user }

// AccountsSection returns the accounts section of the repository's
// nats.conf (from its "# ACCOUNTS:" line to "# END ACCOUNTS"): the users and
// permissions that production uses, so tests check those very rules.
func AccountsSection() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("natstest: no go.mod above the working folder")
		}
		dir = parent
	}
	b, err := os.ReadFile(filepath.Join(dir, "nats.conf"))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.Index(s, accountsBegin)
	j := strings.Index(s, accountsEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("natstest: nats.conf has no section between %q and %q", accountsBegin, accountsEnd)
	}
	return s[i : j+len(accountsEnd)], nil
}

// RunAccounts starts a nats-server with JetStream and the accounts, users
// and permissions of the repository's nats.conf; user u's password is
// Password(u).
func RunAccounts(t testing.TB) *server.Server {
	t.Helper()
	section, err := AccountsSection()
	if err != nil {
		t.Fatal(err)
	}
	var vars strings.Builder
	for user, v := range passwordVars {
		fmt.Fprintf(&vars, "%s: %q\n", v, Password(user))
	}
	return RunConfig(t, vars.String()+"\n"+section)
}
