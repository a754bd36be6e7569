package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/ident"
)

// GroupMembership answers whether a user belonged to a group at a position
// of the message log: group grants let exactly the members at the time of
// the message read its media.
type GroupMembership interface {
	// WasMember reports whether user was a member of group when the
	// message at log position seq was sent.
	WasMember(ctx context.Context, group, user string, seq uint64) (bool, error)
}

// Store keeps media: bytes in Blobs (the JetStream object store), and per
// media object an access record in a KV bucket. It is safe for concurrent
// use.
type Store struct {
	cfg    Config
	blobs  Blobs
	acl    jetstream.KeyValue
	nc     *nats.Conn // when set, a refusal is checked against the access bucket's leader
	groups GroupMembership
	log    *slog.Logger
}

// New returns a Store keeping bytes in obs and access records in acl (the
// buckets natsx.Ensure makes); it reads media back over nc. Before it
// refuses media, it reads the access record again from the bucket's leader
// over nc: a KV Get may be answered by a replica that has not yet applied
// the upload or grant just acknowledged. groups may be nil: group grants
// then let nobody read.
func New(cfg Config, nc *nats.Conn, obs jetstream.ObjectStore, acl jetstream.KeyValue, groups GroupMembership, log *slog.Logger) (*Store, error) {
	if nc == nil || obs == nil {
		return nil, errors.New("objectstore: New needs a NATS connection and an object store")
	}
	blobs, err := NewJetStreamBlobs(nc, obs, cfg)
	if err != nil {
		return nil, err
	}
	s, err := NewWithBlobs(cfg, blobs, acl, groups, log)
	if err != nil {
		return nil, err
	}
	s.nc = nc
	return s, nil
}

// NewWithBlobs returns a Store keeping bytes in blobs (for example an
// S3-compatible store) and access records in acl. It reads the access
// records only through acl (see New).
func NewWithBlobs(cfg Config, blobs Blobs, acl jetstream.KeyValue, groups GroupMembership, log *slog.Logger) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if blobs == nil || acl == nil {
		return nil, errors.New("objectstore: New needs blob storage and an access bucket")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Store{cfg: cfg, blobs: blobs, acl: acl, groups: groups, log: log.With("component", "objectstore")}, nil
}

// MaxSize is the largest upload accepted, in bytes.
func (s *Store) MaxSize() int64 { return s.cfg.MaxSize }

// UploadTimeout is how long one upload may take.
func (s *Store) UploadTimeout() time.Duration { return s.cfg.UploadTimeout }

// DownloadTimeout is how long one download may take.
func (s *Store) DownloadTimeout() time.Duration { return s.cfg.DownloadTimeout }

// Put stores body as a new media object of owner and returns its
// description. The body is streamed into the store chunk by chunk, never
// held whole; it is hashed (SHA-256) and counted on the way.
//
// Errors: ErrContentType for a missing or malformed contentType, ErrEmpty
// for a zero-byte body, ErrTypeMismatch for an image type the bytes are
// not, ErrTooLarge past Config.MaxSize, ErrInterrupted when reading the body
// fails or ctx ends, ErrUnavailable when the stores fail. On every error
// nothing is left behind.
func (s *Store) Put(ctx context.Context, owner, contentType string, body io.Reader) (chat.MediaInfo, error) {
	if err := ident.User(owner); err != nil {
		return chat.MediaInfo{}, fmt.Errorf("%w: %w", chat.ErrBadRequest, err)
	}
	mt, err := parseType(contentType)
	if err != nil {
		return chat.MediaInfo{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.UploadTimeout)
	defer cancel()
	up := newUpload(ctx, body, s.cfg.MaxSize)
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(up, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return chat.MediaInfo{}, err
	}
	head = head[:n]
	if n == 0 {
		return chat.MediaInfo{}, ErrEmpty
	}
	if err := checkType(mt, head); err != nil {
		return chat.MediaInfo{}, err
	}

	id, rev, err := s.begin(ctx, owner)
	if err != nil {
		return chat.MediaInfo{}, err
	}
	log := s.log.With("media_id", id, "user_id", owner)
	err = s.blobs.Put(ctx, id, mt, io.MultiReader(bytes.NewReader(head), up))
	if err == nil && up.err != nil {
		err = up.err // the store must not take a failed body for its end
	}
	if err != nil {
		s.discard(ctx, id, rev, log)
		if up.err != nil {
			return chat.MediaInfo{}, up.err
		}
		return chat.MediaInfo{}, unavailable("store media "+id, err)
	}
	rec := &record{State: stateReady, Owner: owner, TS: s.cfg.Now().UnixMilli(), Size: up.n, MIME: mt, SHA256: up.sum()}
	if _, err := s.update(context.WithoutCancel(ctx), id, rec, rev); err != nil {
		s.discard(ctx, id, rev, log)
		return chat.MediaInfo{}, unavailable("complete media "+id, err)
	}
	log.Debug("media stored", "size", rec.Size, "mime", mt)
	return chat.MediaInfo{ID: id, Size: rec.Size, MIME: mt, SHA256: rec.SHA256}, nil
}

// begin picks an unused id and records the upload as in progress, before
// any byte is stored, so that the sweeper finds the bytes of an upload
// whose node died half way.
func (s *Store) begin(ctx context.Context, owner string) (string, uint64, error) {
	rec := &record{State: stateUploading, Owner: owner, TS: s.cfg.Now().UnixMilli()}
	for range 3 {
		id := newID()
		rev, err := s.create(ctx, id, rec)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // 131 random bits collided: draw again
		}
		if err != nil {
			return "", 0, unavailable("record upload", err)
		}
		return id, rev, nil
	}
	return "", 0, unavailable("record upload", errors.New("no free media id"))
}

// discard removes the bytes and then the record of a failed upload. It runs
// even when ctx was cancelled (the client went away): that is when there
// is something to clean up. What it cannot remove (the stores are down) is
// left to the sweeper, which finds the in-progress record.
func (s *Store) discard(ctx context.Context, id string, rev uint64, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.OpTimeout)
	defer cancel()
	if err := s.blobs.Delete(ctx, id); err != nil {
		log.Warn("discard failed upload", "err", err)
		return
	}
	if err := s.acl.Delete(ctx, id, jetstream.LastRevision(rev)); err != nil {
		log.Warn("discard access record of failed upload", "err", err)
	}
}

// Open returns the media object id if user may read it: its uploader, a
// recipient of a 1:1 message that carries it, or a member of a group at
// the time a group message carried it. An unknown or malformed id, media
// still uploading or being removed, and media the user may not read all
// return ErrNotFound. Store failures return ErrUnavailable.
func (s *Store) Open(ctx context.Context, user, id string) (chat.MediaObject, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	// A group message reaches its members the moment it is stored; its
	// grant, which needs the message's position, is written just after.
	// A member asking at once is given a moment for the grant to land.
	wait := 25 * time.Millisecond
	for attempt := 0; ; attempt++ {
		rec, _, ok, err := s.readable(ctx, id, user, attempt > 0)
		if err != nil {
			return nil, err
		}
		if ok {
			return &object{s: s, info: chat.MediaInfo{ID: id, Size: rec.Size, MIME: rec.MIME, SHA256: rec.SHA256}}, nil
		}
		if attempt == 4 { // 375 ms in all
			return nil, ErrNotFound
		}
		select {
		case <-ctx.Done():
			return nil, ErrNotFound
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// Check returns nil if sender may attach id to a message (it uploaded the
// media or may read it), and ErrNotFound otherwise. Attach makes the same
// check; Check lets a send refuse bad media before it stores the message.
func (s *Store) Check(ctx context.Context, sender, id string) error {
	_, err := s.Open(ctx, sender, id)
	return err
}

// Attach records that a message from sender carries the media id, so that
// its recipients may read it: g.Users for a 1:1 message, or the members of
// g.Group at log position g.Seq for a group message. sender must have
// uploaded the media or be allowed to read it (it received it), otherwise
// Attach returns ErrNotFound. Attaching the same grant again changes
// nothing. Other errors: ErrBadGrant, ErrTooManyGrants, ErrUnavailable.
func (s *Store) Attach(ctx context.Context, sender, id string, g chat.MediaGrant) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	if len(g.Users) == 0 && g.Group == "" {
		return ErrBadGrant
	}
	for _, u := range g.Users {
		if !ident.ValidToken(u) {
			return ErrBadGrant
		}
	}
	if g.Group != "" && (!ident.ValidToken(g.Group) || g.Seq == 0) {
		return ErrBadGrant
	}
	for attempt := range 8 {
		// After a lost race, the record is read from the leader: a replica
		// may still hold the revision that lost.
		rec, rev, ok, err := s.readable(ctx, id, sender, attempt > 0)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		now := s.cfg.Now().UnixMilli()
		changed := rec.addGrant(g.Users, groupGrant{Group: g.Group, Seq: g.Seq})
		// An unchanged grant is written only to refresh Ref, at most
		// hourly, so that Retention counts from recent use.
		if !changed && (s.cfg.Retention == 0 || now-rec.Ref < time.Hour.Milliseconds()) {
			return nil
		}
		if rec.grants() > s.cfg.MaxGrants {
			return ErrTooManyGrants
		}
		rec.Ref = now
		_, err = s.update(ctx, id, rec, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // another Attach (or the sweeper) came first: look again
		}
		if err != nil {
			return unavailable("record grant on "+id, err)
		}
		s.log.Debug("media attached", "media_id", id, "user_id", sender, "users", len(g.Users), "group", g.Group)
		return nil
	}
	return unavailable("record grant on "+id, errors.New("too many concurrent changes"))
}

// object is a readable media object.
type object struct {
	s    *Store
	info chat.MediaInfo
}

// Info describes the object.
func (o *object) Info() chat.MediaInfo { return o.info }

// NewReader streams length bytes from offset. It holds one chunk's worth
// of memory whatever the object's size; bytes before offset are streamed
// past, not skipped (the object store has no ranged reads). The reader
// must be closed; it fails once ctx ends or Config.DownloadTimeout passes.
// A range outside the object is chat.ErrBadRequest; media removed since
// Open is ErrNotFound.
func (o *object) NewReader(ctx context.Context, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || length < 0 || offset > o.info.Size || length > o.info.Size-offset {
		return nil, fmt.Errorf("%w: range %d+%d outside media of %d bytes", chat.ErrBadRequest, offset, length, o.info.Size)
	}
	if length == 0 {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	ctx, cancel := context.WithTimeout(ctx, o.s.cfg.DownloadTimeout)
	rc, err := o.s.blobs.Get(ctx, o.info.ID, offset, length)
	if err != nil {
		cancel()
		if errors.Is(err, ErrBlobNotFound) {
			return nil, ErrNotFound
		}
		return nil, unavailable("read media "+o.info.ID, err)
	}
	return &download{ReadCloser: rc, cancel: cancel}, nil
}

// download ends the download's context when it is closed.
type download struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (d *download) Close() error {
	err := d.ReadCloser.Close()
	d.cancel()
	return err
}
