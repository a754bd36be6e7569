package groups

import (
	"fmt"
	"time"
)

// Config tunes a Store. Zero fields take the values of Defaults; negative
// ones are refused by New.
type Config struct {
	// MaxMembers is the largest group, its creator included.
	MaxMembers int
	// MaxNameLen is the longest group name, in characters.
	MaxNameLen int
	// QueryTimeout bounds one Postgres query, and one membership change
	// (its transaction, log append included).
	QueryTimeout time.Duration
	// PublishTimeout bounds the append of a membership record to the
	// message log.
	PublishTimeout time.Duration
	// CacheMembers bounds the membership cache: the most members held,
	// summed over the cached groups (a group without members counts one).
	// Least recently used groups are dropped first. A cached member costs
	// about 50 bytes plus its user id.
	CacheMembers int
	// CacheTTL is how long a cached membership is trusted without a change
	// announcement: it bounds staleness should an announcement be lost.
	// Older entries are reloaded, and served only while Postgres fails.
	CacheTTL time.Duration
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		MaxMembers:     1024,
		MaxNameLen:     100,
		QueryTimeout:   5 * time.Second,
		PublishTimeout: 5 * time.Second,
		CacheMembers:   1 << 18,
		CacheTTL:       time.Minute,
	}
}

// withDefaults fills the zero fields of c and checks the others.
func (c Config) withDefaults() (Config, error) {
	d := Defaults()
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"MaxMembers", &c.MaxMembers, d.MaxMembers},
		{"MaxNameLen", &c.MaxNameLen, d.MaxNameLen},
		{"CacheMembers", &c.CacheMembers, d.CacheMembers},
	}
	for _, f := range ints {
		switch {
		case *f.v < 0:
			return c, fmt.Errorf("groups: Config.%s is %d, must not be negative", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	durs := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"QueryTimeout", &c.QueryTimeout, d.QueryTimeout},
		{"PublishTimeout", &c.PublishTimeout, d.PublishTimeout},
		{"CacheTTL", &c.CacheTTL, d.CacheTTL},
	}
	for _, f := range durs {
		switch {
		case *f.v < 0:
			return c, fmt.Errorf("groups: Config.%s is %v, must not be negative", f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	return c, nil
}
