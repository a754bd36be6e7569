package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/pg"
)

// keyFlags are the token flags shared by serve and token, so a token minted
// by one is accepted by the other.
type keyFlags struct {
	data       string
	secret     string
	publicKeys string
}

func (k *keyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.data, "data", "./data", "data folder (JetStream files, generated token secret)")
	fs.StringVar(&k.secret, "jwt-secret", "", "HS256 token secret (base64 or text, at least 32 bytes); generated into the data folder when no key is set")
	fs.StringVar(&k.publicKeys, "jwt-public-keys", "", "comma-separated PEM files of Ed25519 or RSA public keys whose EdDSA/RS256 tokens are accepted")
}

// secretBytes returns the configured HS256 secret, or the one in the data
// folder (created when missing) if create is set or it exists.
func (k *keyFlags) secretBytes(create bool) ([]byte, error) {
	if k.secret != "" {
		return auth.ParseSecret(k.secret)
	}
	if !create {
		if _, err := os.Stat(k.data + "/" + auth.SecretFile); err != nil {
			return nil, nil
		}
	}
	return auth.LoadOrCreateSecret(k.data)
}

func (k *keyFlags) files() []string {
	var out []string
	for _, f := range strings.Split(k.publicKeys, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// keys builds the token verifier of serve: the configured keys, or a
// generated HS256 secret when none is configured.
func (k *keyFlags) keys() (*auth.Keys, error) {
	secret, err := k.secretBytes(k.publicKeys == "")
	if err != nil {
		return nil, err
	}
	return auth.NewKeys(secret, k.files())
}

// syncFlag is --fsync: "always" or an interval.
type syncFlag struct{ interval time.Duration }

func (s *syncFlag) String() string {
	if s.interval == 0 {
		return "always"
	}
	return s.interval.String()
}

func (s *syncFlag) Set(v string) error {
	if v == "always" {
		s.interval = 0
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return errors.New(`want "always" or a positive duration like 1s`)
	}
	s.interval = d
	return nil
}

// logFlags configure slog.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", l.level)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Sprintf("--log-format %q: want text or json", l.format)}
}

// databaseURL is --database-url, falling back to DATABASE_URL as the
// protocol promises, then to the default.
func databaseURL(flagValue string, getenv func(string) string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := getenv("DATABASE_URL"); v != "" {
		return v
	}
	return pg.DefaultURL
}
