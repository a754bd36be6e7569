package natsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream, bucket and subject names. Subjects are built only by the helpers
// below, from ids that were validated by package ident.
const (
	// StreamMsgs is the message log: every user's inbox (1:1 messages,
	// copies of the user's own sends for its other devices, receipts).
	StreamMsgs = "JETCHAT_MSGS"
	// BucketDevices is the KV bucket of per-user device records: the
	// delivery cursor of each device.
	BucketDevices = "jetchat_devices"

	// InboxPrefix starts every user inbox subject: chat.u.<user>.
	InboxPrefix = "chat.u."
	// LivePrefix is where StreamMsgs republishes stored records for live
	// delivery: chat.u.<user> is republished on live.u.<user>.
	LivePrefix = "live.u."
)

// Inbox is the stream subject of a user's inbox.
func Inbox(user string) string { return InboxPrefix + user }

// Live is the core NATS subject on which a user's stored inbox records are
// republished.
func Live(user string) string { return LivePrefix + user }

// Settings are the deployment choices that shape the streams.
type Settings struct {
	// Replicas is the replication factor of every stream and bucket (1, or 3
	// on a 3-node cluster).
	Replicas int
	// Retention is how long messages and receipts are kept in the message log.
	Retention time.Duration
	// DedupWindow is how long a repeated send (same user and cid) is
	// recognised.
	DedupWindow time.Duration
}

// DefaultSettings are the settings of a single node.
func DefaultSettings() Settings {
	return Settings{Replicas: 1, Retention: 30 * 24 * time.Hour, DedupWindow: 15 * time.Minute}
}

// MaxRecord is the largest record stored in the message log: a 64 KiB body
// can grow six-fold when every byte needs a JSON \u escape.
const MaxRecord = 512 << 10

// MsgsStream is the configuration of StreamMsgs.
func MsgsStream(s Settings) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamMsgs,
		Description: "jetchat message log: per-user inboxes (chat.u.<user>) of messages, own-send copies and receipts",
		Subjects:    []string{InboxPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      s.Retention,
		MaxMsgSize:  MaxRecord,
		Discard:     jetstream.DiscardOld,
		Duplicates:  s.DedupWindow,
		AllowDirect: true,
		RePublish:   &jetstream.RePublish{Source: "chat.>", Destination: "live.>"},
	}
}

// DevicesBucket is the configuration of BucketDevices.
func DevicesBucket(s Settings) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketDevices,
		Description: "jetchat device records: one key per user holding each device's delivery cursor",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
	}
}

// Resources is what Ensure created or found.
type Resources struct {
	Msgs    jetstream.Stream
	Devices jetstream.KeyValue
}

// Ensure creates every stream and bucket that is missing and updates the
// configuration of those that exist. It fails when NATS has no JetStream.
func Ensure(ctx context.Context, js jetstream.JetStream, s Settings) (*Resources, error) {
	if s.Replicas < 1 {
		return nil, errors.New("replicas must be at least 1")
	}
	msgs, err := js.CreateOrUpdateStream(ctx, MsgsStream(s))
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", StreamMsgs, err)
	}
	dev, err := js.CreateOrUpdateKeyValue(ctx, DevicesBucket(s))
	if err != nil {
		return nil, fmt.Errorf("create key-value bucket %s: %w", BucketDevices, err)
	}
	return &Resources{Msgs: msgs, Devices: dev}, nil
}
