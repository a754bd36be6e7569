package presence

import (
	"fmt"
	"time"

	"github.com/jetchat/jetchat/internal/natsx"
)

// Config tunes a Tracker. Zero fields take the defaults of Defaults.
type Config struct {
	// MaxFollows is how many users one session may follow at once.
	MaxFollows int
	// Grace is how long a user stays online after its last device
	// disconnected or its last activity (the seed's rule: activity within
	// the last 10 seconds counts as online), so a quick reconnect does not
	// flap.
	Grace time.Duration
	// Writers is how many KV writes run at once (a connect storm queues).
	Writers int
	// Timeout bounds one KV read or write.
	Timeout time.Duration
	// Pending is how long an entry of a gateway incarnation that the
	// registry has not seen yet counts as online: the record can arrive
	// before the registry hears of a gateway that has just started.
	Pending time.Duration
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		MaxFollows: 1000,
		Grace:      10 * time.Second,
		Writers:    8,
		Timeout:    5 * time.Second,
		Pending:    2 * natsx.GatewayTTL,
	}
}

func (c Config) withDefaults() (Config, error) {
	d := Defaults()
	if c.MaxFollows == 0 {
		c.MaxFollows = d.MaxFollows
	}
	if c.Grace == 0 {
		c.Grace = d.Grace
	}
	if c.Writers == 0 {
		c.Writers = d.Writers
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.Pending == 0 {
		c.Pending = d.Pending
	}
	if c.MaxFollows < 0 || c.Grace < 0 || c.Writers < 0 || c.Timeout < 0 || c.Pending < 0 {
		return c, fmt.Errorf("presence: invalid config %+v: negative values", c)
	}
	return c, nil
}

// tick is how often idle users are checked for the end of their grace.
func (c Config) tick() time.Duration {
	return min(max(c.Grace/4, 10*time.Millisecond), time.Second)
}
