package service

import (
	"errors"
	"strings"
	"time"

	"github.com/jetchat/jetchat/internal/ident"
)

// Config tunes the service API. The zero value of a field means its
// default.
type Config struct {
	// Bots are the user ids services may send as: exact user ids, or
	// prefixes followed by '*' ("bot-*"). NATS permissions narrow this per
	// credential (a service may publish only to its own bots' send
	// subjects); this list is the node's own limit, so a mistake in
	// nats.conf cannot let a service speak for a person. Default: "bot-*".
	Bots []string
	// Replicas is the replication factor of the consumers made through the
	// API (default 1; 3 on a 3-node cluster).
	Replicas int
	// Workers is how many requests a node handles at once (default 16).
	Workers int
	// RequestTimeout bounds the handling of one request (default 10s).
	RequestTimeout time.Duration
}

// DefaultBots is the default of Config.Bots.
var DefaultBots = []string{"bot-*"}

func (c Config) withDefaults() (Config, error) {
	if len(c.Bots) == 0 {
		c.Bots = DefaultBots
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Workers == 0 {
		c.Workers = 16
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	for _, b := range c.Bots {
		if err := checkBotPattern(b); err != nil {
			return c, err
		}
	}
	if c.Replicas < 1 || c.Workers < 1 || c.RequestTimeout < 0 {
		return c, errors.New("service: replicas and workers must be at least 1, timeouts not negative")
	}
	return c, nil
}

// checkBotPattern accepts a user id, or a prefix of one followed by '*'.
func checkBotPattern(p string) error {
	if p == "*" {
		return errors.New(`service: bot pattern "*" would let services speak for every user; name a prefix such as "bot-*"`)
	}
	if prefix, ok := strings.CutSuffix(p, "*"); ok {
		if !ident.ValidToken(prefix) {
			return errors.New("service: bot pattern " + p + ": the prefix must be a valid user id start")
		}
		return nil
	}
	if err := ident.User(p); err != nil {
		return errors.New("service: bot pattern " + p + ": " + err.Error())
	}
	return nil
}

// isBot reports whether user matches one of the patterns.
func isBot(patterns []string, user string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(user, prefix) {
				return true
			}
		} else if p == user {
			return true
		}
	}
	return false
}

// PushConfig tunes the push hook. The zero value of a field means its
// default.
type PushConfig struct {
	// Preview, when positive, includes the first Preview characters of the
	// body in each event. Default 0: events carry no text.
	Preview int
	// MaxAge skips messages older than this (the worker was down, or the
	// consumer was just created on an old log): a notification that late
	// helps nobody. Default 1h.
	MaxAge time.Duration
	// Replicas is the replication factor of the push consumer (default 1).
	Replicas int
	// AckWait is how long a record may take before another node gets it
	// (default 30s).
	AckWait time.Duration
	// Parallel bounds the concurrent presence look-ups for one group
	// message (default 32).
	Parallel int
	// Now is the clock (tests may set it).
	Now func() time.Time
}

func (c PushConfig) withDefaults() (PushConfig, error) {
	if c.MaxAge == 0 {
		c.MaxAge = time.Hour
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.Parallel == 0 {
		c.Parallel = 32
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Preview < 0 || c.MaxAge < 0 || c.Replicas < 1 || c.AckWait < time.Second || c.Parallel < 1 {
		return c, errors.New("service: push preview and max age must not be negative, replicas and parallel at least 1, ack wait at least 1s")
	}
	return c, nil
}
