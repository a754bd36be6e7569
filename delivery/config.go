package delivery

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nuid"

	"github.com/jetchat/jetchat/internal/ident"
)

// Config tunes the delivery service. The zero value of a field means its
// default (see Defaults).
type Config struct {
	// Window is the most records a device may hold unacknowledged. When it
	// is reached, delivery to that device pauses (nothing is buffered) until
	// acks arrive, then resumes from the stream.
	Window int
	// ReadBatch is how many records a catch-up reads per request.
	ReadBatch int
	// LongBacklog is where a backlog counts as long: a source of a
	// catch-up with at least this many records still waiting after its
	// first read is read on through a consumer of its own
	// (natsx.SubjectReader), which costs two requests to make and remove
	// but reads records at about two thirds of the cost of direct gets.
	// Negative: never.
	LongBacklog int
	// ReceiptDelay is how long receipts for one sender are collected before
	// they are stored as one record. Longer means fewer stored writes.
	ReceiptDelay time.Duration
	// ReceiptSpacing is the time between two receipt records stored for
	// one user: a user whose messages are being acked all the time gets
	// one record per ReceiptSpacing (each next one at a random offset of
	// up to a quarter of it either way, so users do not come due together),
	// holding all of them, while the first receipt after a quiet spell
	// waits only ReceiptDelay.
	ReceiptSpacing time.Duration
	// CursorFlush is how often acknowledged positions are written to the
	// device records. A crash loses at most this much progress, which
	// shows as redelivery (never as loss).
	CursorFlush time.Duration
	// DeviceTTL forgets a device that has not connected for this long.
	DeviceTTL time.Duration
	// PublishTimeout bounds one JetStream write, retries included.
	PublishTimeout time.Duration
	// ScanLimit bounds the records one history or status request reads.
	ScanLimit int
	// VerifyAfter is how long after a catch-up hands a device over to live
	// delivery the device checks with the message log's leader that
	// neither the catch-up's reads (which any replica may answer, from a
	// copy that can lag) nor the live copies (whose subscription takes a
	// moment to reach the leader's server) missed a record. Until the check
	// passes the device's floor stays where it was, so a stored floor never
	// passes a record the device has not had. Zero: a second when the NATS
	// server is part of a cluster, never with a standalone server, where
	// neither can happen. Negative: never.
	VerifyAfter time.Duration
	// LiveSwitchGrace is how long a switch of live subscriptions
	// (SubscribeAll) keeps the old ones after the new ones are in place.
	// The server may have matched a record against the old ones just
	// before the new ones arrived and still be handing it over. Default 1 s.
	LiveSwitchGrace time.Duration
	// GatewayID names this node's send index records (cids.<id> in
	// natsx.StreamCids). Default: a random id.
	GatewayID string
	// CidFlush is how often this node stores the keys of the sends it
	// stored, for the other nodes' send index: a record every CidFlush,
	// empty when there are none. Default 1 s.
	CidFlush time.Duration
	// CidSilence is how long another gateway's send index records may
	// stop, without a goodbye, before this node reads the message log's
	// last sends itself (that gateway's unstored keys are there). Default
	// 3 × CidFlush.
	CidSilence time.Duration
	// Now is the clock (tests may set it).
	Now func() time.Time
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{
		Window:          4096,
		ReadBatch:       512,
		LongBacklog:     256,
		ReceiptDelay:    100 * time.Millisecond,
		ReceiptSpacing:  time.Second,
		CursorFlush:     10 * time.Second,
		DeviceTTL:       90 * 24 * time.Hour,
		PublishTimeout:  10 * time.Second,
		ScanLimit:       50000,
		LiveSwitchGrace: time.Second,
		CidFlush:        time.Second,
		Now:             time.Now,
	}
}

func (c Config) withDefaults() (Config, error) {
	d := Defaults()
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.ReadBatch == 0 {
		c.ReadBatch = d.ReadBatch
	}
	if c.LongBacklog == 0 {
		c.LongBacklog = d.LongBacklog
	}
	if c.ReceiptDelay == 0 {
		c.ReceiptDelay = d.ReceiptDelay
	}
	if c.ReceiptSpacing == 0 {
		c.ReceiptSpacing = d.ReceiptSpacing
	}
	if c.CursorFlush == 0 {
		c.CursorFlush = d.CursorFlush
	}
	if c.DeviceTTL == 0 {
		c.DeviceTTL = d.DeviceTTL
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = d.PublishTimeout
	}
	if c.ScanLimit == 0 {
		c.ScanLimit = d.ScanLimit
	}
	if c.LiveSwitchGrace == 0 {
		c.LiveSwitchGrace = d.LiveSwitchGrace
	}
	if c.CidFlush == 0 {
		c.CidFlush = d.CidFlush
	}
	if c.CidSilence == 0 {
		c.CidSilence = 3 * c.CidFlush
	}
	if c.GatewayID == "" {
		c.GatewayID = nuid.Next()
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if !ident.ValidToken(c.GatewayID) {
		return c, fmt.Errorf("delivery: gateway id %q must match ^[A-Za-z0-9_-]{1,64}$", c.GatewayID)
	}
	if c.CidFlush < 0 || c.CidSilence < 0 {
		return c, errors.New("delivery: the send index's flush interval and silence must not be negative")
	}
	if c.Window < 16 || c.ReadBatch < 1 || c.ReceiptDelay < 0 || c.ReceiptSpacing < 0 || c.CursorFlush < 0 || c.ScanLimit < 100 || c.LiveSwitchGrace < 0 {
		return c, errors.New("delivery: window must be at least 16, read batch at least 1, scan limit at least 100, durations not negative")
	}
	return c, nil
}
