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
	// StreamCids is the send index's log: each gateway stores, about once a
	// second, one record on cids.<gateway> holding the (user, cid) keys of
	// the sends it stored since the last, so that every gateway recognises a
	// repeated send for the whole dedup window, whichever gateway stored it.
	StreamCids = "JETCHAT_CIDS"
	// BucketDevices is the KV bucket of per-user device records: the
	// delivery cursor of each device.
	BucketDevices = "jetchat_devices"
	// BucketMedia is the object store of media bytes.
	BucketMedia = "jetchat_media"
	// BucketMediaACL is the KV bucket of media access grants, one key per
	// media object.
	BucketMediaACL = "jetchat_media_acl"
	// BucketPresence is the KV bucket of last-seen and presence settings,
	// one key per user.
	BucketPresence = "jetchat_presence"
	// BucketGateways is the KV bucket where live gateways register with a
	// heartbeat; an entry expires when its gateway stops.
	BucketGateways = "jetchat_gateways"

	// InboxPrefix starts every user inbox subject: chat.u.<user>.
	InboxPrefix = "chat.u."
	// LivePrefix is where StreamMsgs republishes stored records for live
	// delivery: chat.u.<user> is republished on live.u.<user>.
	LivePrefix = "live.u."
	// GroupPrefix starts every group subject: chat.g.<group> holds the
	// group's messages (stored once) and membership changes.
	GroupPrefix = "chat.g."
	// LiveGroupPrefix is where group records are republished: live.g.<group>.
	LiveGroupPrefix = "live.g."
	// CidsPrefix starts the subjects of StreamCids: cids.<gateway>.
	CidsPrefix = "cids."
	// PresencePrefix starts the core NATS subjects on which a user's presence
	// record is published after every change: presence.<user>.
	PresencePrefix = "presence."
	// BarrierSubject is a subject of StreamMsgs that no user's inbox is
	// (user ids hold no '$'): Barrier's refused messages go there.
	BarrierSubject = InboxPrefix + "$barrier"
)

// Inbox is the stream subject of a user's inbox.
func Inbox(user string) string { return InboxPrefix + user }

// Live is the core NATS subject on which a user's stored inbox records are
// republished.
func Live(user string) string { return LivePrefix + user }

// Cids is the StreamCids subject of a gateway's send index records.
func Cids(gateway string) string { return CidsPrefix + gateway }

// Group is the stream subject of a group.
func Group(id string) string { return GroupPrefix + id }

// LiveGroup is the core NATS subject on which a group's stored records are
// republished.
func LiveGroup(id string) string { return LiveGroupPrefix + id }

// GroupsChangedPrefix starts the core NATS subjects (never stored) on which a
// group's membership change is announced once committed, so that every
// membership cache drops its entry: jetchat.groups.changed.<group>.
const GroupsChangedPrefix = "jetchat.groups.changed."

// GroupsChanged is the core NATS subject announcing that a group's
// membership changed.
func GroupsChanged(id string) string { return GroupsChangedPrefix + id }

// Presence is the core NATS subject on which changes of a user's presence
// record are published.
func Presence(user string) string { return PresencePrefix + user }

// LeaderElected is the JetStream advisory subject announcing that stream
// has a new leader.
func LeaderElected(stream string) string {
	return "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + stream
}

// Backend services (docs/subjects.md). These subjects are the stable,
// versioned API for bots, push senders and other backend services; the
// version is part of each subject, so a v2 can run beside v1.
const (
	// SvcPrefix starts every subject of the service API: jetchat.svc.v1.
	SvcPrefix = "jetchat.svc.v1."
	// SvcSendPrefix starts the request/reply subject on which a backend
	// service sends a message as a bot user: jetchat.svc.v1.send.<bot>.
	// Every node serves it in the queue group SvcQueue; a NATS permission on
	// the literal subject decides which bots a credential may speak for.
	SvcSendPrefix = SvcPrefix + "send."
	// SvcConsumerPrefix starts the request/reply subject on which a backend
	// service creates or updates its durable pull consumer on StreamMsgs:
	// jetchat.svc.v1.consumer.<name>.<scope>, scope being all, users,
	// groups, u.<user> or g.<group>.
	SvcConsumerPrefix = SvcPrefix + "consumer."
	// SvcQueue is the queue group in which every node serves the service API.
	SvcQueue = "jetchat-svc"
	// PushPrefix starts the core NATS subjects of push events:
	// jetchat.push.v1.<user>, one event per message stored for a user with
	// no connected device.
	PushPrefix = "jetchat.push.v1."
	// PresenceFeedPrefix starts the core NATS subjects on which services
	// see presence changes in the stable v1 format:
	// jetchat.presence.v1.u.<user>.
	PresenceFeedPrefix = "jetchat.presence.v1.u."
	// PresenceFeedGateway is the core NATS subject on which the presence
	// feed announces a gateway that stopped or died: the users online only
	// there are offline.
	PresenceFeedGateway = "jetchat.presence.v1.gateway"
	// ConsumerPush is the durable pull consumer on StreamMsgs that the push
	// workers of every node share.
	ConsumerPush = "jetchat_push"
	// ConsumerReserved starts the names of jetchat's own consumers; the
	// service API refuses such names.
	ConsumerReserved = "jetchat"
)

// SvcSend is the service API subject on which a service sends as bot.
func SvcSend(bot string) string { return SvcSendPrefix + bot }

// Push is the subject of user's push events.
func Push(user string) string { return PushPrefix + user }

// PresenceFeed is the subject of user's v1 presence events.
func PresenceFeed(user string) string { return PresenceFeedPrefix + user }

// Inventory lists what Ensure creates, as an operator sees it with the nats
// CLI: the streams (`nats stream ls`), the key-value buckets (`nats kv ls`)
// and the object store buckets (`nats object ls`). docs/operations.md
// documents each; a test holds the three together.
func Inventory() (streams, keyValue, objects []string) {
	return []string{StreamCids, StreamMsgs},
		[]string{BucketDevices, BucketGateways, BucketMediaACL, BucketPresence},
		[]string{BucketMedia}
}

// Settings are the deployment choices that shape the streams.
type Settings struct {
	// Replicas is the replication factor of every stream and bucket (1, or 3
	// on a 3-node cluster).
	Replicas int
	// Retention is how long messages and receipts are kept in the message log.
	Retention time.Duration
	// DedupWindow is how long a repeated send (same user and cid) is
	// recognised: how long StreamCids keeps its records.
	DedupWindow time.Duration
	// StoreDedupWindow is the message log's own duplicate window
	// (JetStream's, kept in the servers' memory, where the collector marks
	// every id of it on every cycle): long enough for a retried store (a
	// send's retries end within 10 s) and for every gateway to have read the
	// others' send index records, or, after a crash, the log's last sends
	// (read once a gateway's records have stopped for a few seconds).
	// Zero, or longer than DedupWindow: DedupWindow.
	StoreDedupWindow time.Duration
}

// MinStoreDedupWindow is the shortest message log window a gateway may
// run with (and the default): a send's retries end within 10 s, and a
// gateway whose send index records stop reaches the others' index within
// a few seconds (delivery reads the log's last sends after 3 s of silence).
const MinStoreDedupWindow = 15 * time.Second

// DefaultSettings are the settings of a single node.
func DefaultSettings() Settings {
	return Settings{Replicas: 1, Retention: 30 * 24 * time.Hour, DedupWindow: 15 * time.Minute, StoreDedupWindow: MinStoreDedupWindow}
}

// MaxRecord is the largest record stored in the message log: a 64 KiB body
// can grow six-fold when every byte needs a JSON \u escape.
const MaxRecord = 512 << 10

// MsgsStream is the configuration of StreamMsgs.
func MsgsStream(s Settings) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamMsgs,
		Description: "jetchat message log: per-user inboxes (chat.u.<user>: messages, own-send copies, receipts) and groups (chat.g.<group>: messages stored once, membership changes)",
		Subjects:    []string{InboxPrefix + "*", GroupPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      s.Retention,
		MaxMsgSize:  MaxRecord,
		Discard:     jetstream.DiscardOld,
		Duplicates:  s.storeDedupWindow(),
		AllowDirect: true,
		RePublish:   &jetstream.RePublish{Source: "chat.>", Destination: "live.>"},
	}
}

func (s Settings) storeDedupWindow() time.Duration {
	if s.StoreDedupWindow == 0 || s.StoreDedupWindow > s.DedupWindow {
		return s.DedupWindow
	}
	return s.StoreDedupWindow
}

// CidsMargin is how much longer than the dedup window StreamCids keeps its
// records, so that a gateway starting up reads every key still in the
// window: the window is StreamCids' MaxAge less CidsMargin.
const CidsMargin = time.Minute

// CidsStream is the configuration of StreamCids.
func CidsStream(s Settings) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamCids,
		Description: "jetchat send index: per gateway (cids.<gateway>), batches of the (user, cid) keys of stored sends, read by every gateway to answer a repeated send within the dedup window",
		Subjects:    []string{CidsPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      s.DedupWindow + CidsMargin,
		MaxMsgSize:  MaxRecord,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
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

// MediaBucket is the configuration of BucketMedia.
func MediaBucket(s Settings) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      BucketMedia,
		Description: "jetchat media bytes (photos, videos, documents), referenced by messages",
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
	}
}

// MediaACLBucket is the configuration of BucketMediaACL.
func MediaACLBucket(s Settings) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketMediaACL,
		Description: "jetchat media access: per media object, its uploader and the messages that carry it",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
	}
}

// PresenceBucket is the configuration of BucketPresence.
func PresenceBucket(s Settings) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      BucketPresence,
		Description: "jetchat presence: per user, last-seen, the gateways it is connected to, privacy",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
	}
}

// GatewaysBucket is the configuration of BucketGateways: one key per
// gateway incarnation (<id>.<start time in ns>). The bucket has no
// bucket-wide TTL: each heartbeat is written with a per-message TTL of
// GatewayTTL, so an entry expires when its gateway stops refreshing it, and
// the expiry leaves a marker (seen by watchers) that is kept for
// GatewayGoneTTL: a marker written at T records that the incarnation's last
// heartbeat was at about T - GatewayTTL. A gateway that stops cleanly writes
// a final "stopped" entry, kept as long.
func GatewaysBucket(s Settings) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         BucketGateways,
		Description:    "jetchat gateway registry: one key per gateway incarnation (<id>.<start ns>), refreshed by heartbeat, expiring with a marker",
		History:        1,
		LimitMarkerTTL: GatewayGoneTTL,
		Storage:        jetstream.FileStorage,
		Replicas:       s.Replicas,
	}
}

// GatewayTTL is how long a gateway's registry entry outlives its last
// heartbeat.
const GatewayTTL = 10 * time.Second

// GatewayGoneTTL is how long the registry remembers a gateway incarnation
// that left (its expiry marker or its stopped entry). Presence uses it to
// give users stranded on a crashed gateway an exact last-seen.
const GatewayGoneTTL = 30 * 24 * time.Hour

// Resources is what Ensure created or found.
type Resources struct {
	Msgs     jetstream.Stream
	Cids     jetstream.Stream
	Devices  jetstream.KeyValue
	Media    jetstream.ObjectStore
	MediaACL jetstream.KeyValue
	Presence jetstream.KeyValue
	Gateways jetstream.KeyValue
}

// Ensure creates every stream and bucket that is missing and updates the
// configuration of those that exist. A cluster that cannot answer yet (no
// meta leader, peers still joining, a request lost during an election) is
// asked again, each try bounded by 5 s, until ctx ends; a refusal
// (an invalid or conflicting configuration) fails at once.
func Ensure(ctx context.Context, js jetstream.JetStream, s Settings) (*Resources, error) {
	if s.Replicas < 1 {
		return nil, errors.New("replicas must be at least 1")
	}
	r := &Resources{}
	err := ensureRetry(ctx, func(ctx context.Context) (err error) {
		r.Msgs, err = js.CreateOrUpdateStream(ctx, MsgsStream(s))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", StreamMsgs, err)
	}
	err = ensureRetry(ctx, func(ctx context.Context) (err error) {
		r.Cids, err = js.CreateOrUpdateStream(ctx, CidsStream(s))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", StreamCids, err)
	}
	for _, kv := range []struct {
		cfg jetstream.KeyValueConfig
		dst *jetstream.KeyValue
	}{
		{DevicesBucket(s), &r.Devices},
		{MediaACLBucket(s), &r.MediaACL},
		{PresenceBucket(s), &r.Presence},
		{GatewaysBucket(s), &r.Gateways},
	} {
		err := ensureRetry(ctx, func(ctx context.Context) (err error) {
			*kv.dst, err = js.CreateOrUpdateKeyValue(ctx, kv.cfg)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("create key-value bucket %s: %w", kv.cfg.Bucket, err)
		}
	}
	err = ensureRetry(ctx, func(ctx context.Context) (err error) {
		r.Media, err = js.CreateOrUpdateObjectStore(ctx, MediaBucket(s))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create object store %s: %w", BucketMedia, err)
	}
	return r, nil
}

// ensureRetry asks again, each try bounded by 5 s, while the cluster
// cannot answer yet.
var ensureRetry = Retry{Try: 5 * time.Second, Retryable: transient}.Do
