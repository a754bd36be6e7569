// Package presence keeps users' online state and last-seen, and tells the
// sessions that follow a user when it changes.
//
// # Storage
//
// The JetStream KV bucket natsx.BucketPresence holds one key per user (the
// user id): the gateway incarnations where the user is online now, the time
// it was last seen, and who may see that time. A Tracker writes it with
// compare-and-set, only on transitions: when a user becomes online on this
// gateway (its first device connects, or it shows activity without a
// connection), and when it stops being online here (its last device left and
// it showed no activity for Config.Grace). Activity while online costs no
// write: it is kept in memory, and the time of the last one becomes the
// last-seen written at the offline transition. A chatty user therefore costs
// two writes per visit, however many frames it sends.
//
// A user is online while its record names a live gateway incarnation
// (package registry). When a gateway dies without a goodbye, its entries in
// records stay behind; every reader treats them as offline as soon as the
// registry reports the gateway gone (natsx.GatewayTTL after its last
// heartbeat), with that last heartbeat as the user's last-seen. The next
// write of such a record removes the dead entries.
//
// # Live changes
//
// After every write, the writer publishes the new record on the core NATS
// subject natsx.Presence(user). A Tracker subscribes, once per user however
// many sessions follow it, to the users its sessions follow, with all those
// subscriptions feeding one channel drained by one goroutine. It also
// re-evaluates the users it follows when a gateway joins or leaves. A
// session receives a presence frame when what it may see changes; each frame
// is encoded once for all the sessions that receive it.
//
// Memory grows with the users online on this gateway and the users its
// sessions follow, never with registered or offline users.
//
// # Concurrency
//
// All methods are safe for concurrent use. Connected, Disconnected and
// Activity only change memory and never wait for storage: writes run on a few
// writer goroutines owned by Run and are retried until they succeed or are
// no longer needed. chat.Frames.Deliver is called with the Tracker's follow
// lock held: it must not block and must not call back into the Tracker.
//
// # Lifecycle
//
// New does no I/O. Run waits for the registry to be ready, then runs the
// writers, the dispatcher of live changes and the reaction to gateway
// changes until ctx ends. Stop the gateway's sessions before ending Run, and
// end Run before the registry's Run: the registry's final "stopped" entry
// then turns every user still online here offline at once, with an exact
// last-seen, without a write per user.
package presence
