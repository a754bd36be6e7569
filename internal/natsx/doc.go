// Package natsx holds jetchat's NATS plumbing: the one table of every stream,
// key-value bucket, object store and subject the system uses (names.go), the
// embedded nats-server, connections, and the JetStream direct-get reads that
// delivery uses for catch-up and history.
//
// Everything an operator sees with `nats stream ls`, `nats kv ls` or
// `nats object ls` is declared in names.go, with a description.
package natsx
