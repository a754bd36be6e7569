package objectstore

import (
	"errors"
	"time"
)

// Config tunes a Store. The zero value of a field means its default (see
// Defaults).
type Config struct {
	// MaxSize is the largest upload, in bytes. A longer body is cut off
	// while it streams and fails with ErrTooLarge.
	MaxSize int64
	// GracePeriod is how long media that no message references is kept
	// after its upload completed; the sweeper (Run) then removes it.
	GracePeriod time.Duration
	// Retention, when positive, also removes referenced media once its most
	// recent reference (Attach) is older than this: set it to the message
	// log's retention. Zero keeps referenced media for ever.
	Retention time.Duration
	// SweepInterval is how often Run looks for media to remove.
	SweepInterval time.Duration
	// OpTimeout bounds each read or write of an access record and each
	// removal of stored bytes.
	OpTimeout time.Duration
	// UploadTimeout bounds one upload, from its first byte to its last.
	UploadTimeout time.Duration
	// DownloadTimeout bounds one download, from NewReader to Close.
	DownloadTimeout time.Duration
	// MaxGrants bounds the users plus group grants recorded for one media
	// object (one forwarded many times); past it Attach fails with
	// ErrTooManyGrants.
	MaxGrants int
	// ChunkSize is the size of the chunks the JetStream object store keeps.
	// An upload holds up to 8 chunks, a download up to 4.
	ChunkSize int
	// MaxFetches bounds the chunk batches that downloads request at once
	// over the node's NATS connection, so that many downloads never queue
	// more than MaxFetches*4 chunks there (NATS closes a connection with
	// 64 MiB pending as a slow consumer). Downloads beyond it wait their
	// turn.
	MaxFetches int
	// Now is the clock (tests may set it).
	Now func() time.Time
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		MaxSize:         100 << 20,
		GracePeriod:     24 * time.Hour,
		SweepInterval:   15 * time.Minute,
		OpTimeout:       5 * time.Second,
		UploadTimeout:   time.Hour,
		DownloadTimeout: time.Hour,
		MaxGrants:       4096,
		ChunkSize:       128 << 10,
		MaxFetches:      16,
		Now:             time.Now,
	}
}

func (c Config) withDefaults() (Config, error) {
	d := Defaults()
	if c.MaxSize == 0 {
		c.MaxSize = d.MaxSize
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = d.GracePeriod
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = d.SweepInterval
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = d.OpTimeout
	}
	if c.UploadTimeout == 0 {
		c.UploadTimeout = d.UploadTimeout
	}
	if c.DownloadTimeout == 0 {
		c.DownloadTimeout = d.DownloadTimeout
	}
	if c.MaxGrants == 0 {
		c.MaxGrants = d.MaxGrants
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = d.ChunkSize
	}
	if c.MaxFetches == 0 {
		c.MaxFetches = d.MaxFetches
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.MaxSize < 1 || c.GracePeriod < 0 || c.Retention < 0 || c.SweepInterval < 0 ||
		c.OpTimeout < 0 || c.UploadTimeout < 0 || c.DownloadTimeout < 0 || c.MaxGrants < 1 || c.MaxFetches < 1 {
		return c, errors.New("objectstore: sizes must be positive and durations not negative")
	}
	if c.ChunkSize < 1<<10 || c.ChunkSize > 1<<20 {
		return c, errors.New("objectstore: chunk size must be between 1 KiB and 1 MiB (the NATS payload limit)")
	}
	return c, nil
}
