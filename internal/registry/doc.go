// Package registry is the registry of live gateways: each gateway writes its
// entry (id, public URL, start time, last heartbeat) into the JetStream KV
// bucket natsx.BucketGateways every couple of seconds, and every gateway
// watches the bucket to know which gateways are alive.
//
// An entry is written with a per-message TTL (natsx.GatewayTTL), so a
// gateway that dies without a goodbye (SIGKILL, lost machine, lost network)
// drops out of the live set about GatewayTTL after its last heartbeat: the
// server removes the entry and leaves a marker that every watcher sees. A
// gateway that stops cleanly writes a final "stopped" entry instead, and the
// others see it leave at once.
//
// One gateway process is one incarnation, named by its id and its start
// time (Gateway.Started), and has its own key, <id>.<start time in ns>
// (Key). When a gateway restarts under the same id, the old incarnation is
// reported as left and the new one as joined, so that state recorded against
// the old incarnation (presence) is not mistaken for the new one's. Because
// keys are never reused, the expiry marker or stopped entry of every
// incarnation stays in the bucket for natsx.GatewayGoneTTL: a registry that
// starts later still knows when each gateway that left was last alive
// (State).
//
// The registry keeps one KV watcher per Registry (one per process), whatever
// the number of sessions; consumers of gateway changes subscribe to the
// Registry, not to the bucket.
//
// # Concurrency
//
// All methods are safe for concurrent use. Run owns the heartbeat and the
// watcher; it delivers events to subscribers through per-subscription queues
// that never block Run and never drop an event.
//
// # Lifecycle
//
// New validates its arguments and does no I/O. Run registers the gateway,
// loads the live set (Ready is closed then), heartbeats and watches until ctx
// ends, then writes the stopped entry and returns. Subscription channels are
// closed when Run returns or the subscription is cancelled.
package registry
