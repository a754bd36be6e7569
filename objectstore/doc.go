// Package objectstore keeps jetchat's media: photos, videos and documents
// that messages carry by reference (a media id), as the seed's blob store.
//
// # Storage
//
// The bytes live in the JetStream object store (bucket natsx.BucketMedia),
// behind the small Blobs interface so that an S3-compatible store can take
// over (NewWithBlobs). Next to them, the KV bucket natsx.BucketMediaACL
// holds one access record per media object, keyed by its id: the uploader,
// the object's size, type and SHA-256, and the grants of the messages that
// carry it. Records change only by compare-and-set on their revision.
//
// Uploads stream from the request body into the store one chunk
// (Config.ChunkSize, 128 KiB) at a time, hashed and counted on the way,
// with at most a few chunks awaiting their acknowledgement: memory per
// upload is bounded whatever its size. The size limit
// (Config.MaxSize, 100 MiB) is enforced while streaming; a zero-byte body,
// a missing Content-Type and an image type the first bytes are not are
// refused before anything is stored. A failed upload (too large, client
// gone, store error) leaves nothing behind: its chunks, stored under a
// subject named after the media id, are purged and its record removed.
//
// Downloads read the chunks by batched direct gets, a few chunks per
// request: no consumer is created, and a download holds at most a few
// chunks in memory however slow its client. The object store has no ranged
// reads: a range is served by fetching and dropping the chunks before it.
//
// # Access
//
// A media object may be read (Open) by its uploader; by the recipients of
// 1:1 messages that carry it; and, for a group message that carries it, by
// whoever was a member of the group at that message's log position
// (GroupMembership.WasMember). Everyone else, and any unknown or malformed
// id, gets ErrNotFound, so a media object's existence does not leak. A
// message may carry (Attach) only media its sender uploaded or may read
// (received); Attach records the message's grant.
//
// # Lifetime
//
// An upload first writes its record ("uploading"), then the bytes, then
// marks the record "ready". The sweeper (Run) removes:
//
//   - media that no message references, Config.GracePeriod (24 h) after
//     its upload completed: uploaded but never sent;
//   - when Config.Retention is set, referenced media whose last Attach is
//     older than Retention (so media expires with the messages that carry
//     it); with Retention zero, referenced media is kept for ever;
//   - uploads still "uploading" after UploadTimeout plus GracePeriod (their
//     node died half way);
//   - removals that a node began and did not finish.
//
// A removal first claims the record ("deleting", by compare-and-set, so an
// Attach racing with it either lands first and saves the media or finds it
// gone), then deletes the bytes, then the record. Readers see removed media
// as not found. A removal purges the object's messages outright (an
// upload whose node died half way included); the KV delete markers of
// removed records are purged by the sweeper after 30 minutes.
//
// # Concurrency
//
// A Store is safe for concurrent use by any number of uploads, downloads
// and attaches. Each upload runs on its caller's goroutine and holds up to
// 8 chunk buffers (the chunks awaiting their acknowledgement). Each
// download reader makes one request at a time, on its caller's goroutine,
// and holds at most the 4 chunks of its last batch; all the downloads of a
// Store share Config.MaxFetches request slots, so that together they never
// queue more than a few MiB on the node's NATS connection. Run sweeps on its
// caller's goroutine. The Store starts no goroutine of its own. Several
// nodes may run Run against the same buckets.
//
// # Lifecycle
//
// New builds a Store over the buckets made by natsx.Ensure; it needs no
// closing. Run until its context ends (it returns nil then), typically under
// the node's errgroup. Close every reader returned by NewReader.
package objectstore
