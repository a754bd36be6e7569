// Package ring decides which gateway owns a user: rendezvous (highest
// random weight) hashing over the live gateways of the registry
// (internal/registry). Every gateway computes the same function over the
// same live set, so they agree on each user's owner; the gateway answers
// GET /v1/route with it and, when ownership is enforced, refuses other
// users' WebSockets with 421 and closes the sessions of users it stops
// owning (docs/protocol.md, docs/operations.md).
//
// Why rendezvous hashing: with N gateways it moves only the users of a
// gateway that leaves (to their runner-up) and about 1/(N+1) of the users
// to one that joins, with an even spread and no virtual nodes to tune; a
// lookup costs N hashes of ~20 bytes (tens of nanoseconds for a dozen
// gateways), which is nothing next to a WebSocket upgrade. The hash is
// XXH64 of the gateway id, a zero byte and the user id; the gateway id is
// the only property of a gateway that counts, so a gateway restarted under
// the same id (a new incarnation) owns the same users again.
//
// # Concurrency
//
// A Ring is immutable and safe for concurrent use. A Tracker's methods are
// safe for concurrent use; Run is its only goroutine.
//
// # Lifecycle
//
// NewTracker does no I/O; its ring is empty (Owner answers ok=false) until
// Run has seen the registry's first load. Run rebuilds the ring on every
// change of the live set, closing the channel returned by Changed, until its
// context ends or the registry stops.
package ring
