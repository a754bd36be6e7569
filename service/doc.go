// Package service is jetchat's side of the API for backend services (the
// client side is package svcapi; the subjects are documented in
// docs/subjects.md):
//
//   - API serves the request/reply subjects jetchat.svc.v1.send.<bot>
//     (a service sends a message as a bot user, validated and stored exactly
//     like a client's send) and jetchat.svc.v1.consumer.<name>.<scope> (a
//     service gets its durable pull consumer on the message log, pull-only
//     and limited to the scope in the subject, so that NATS permissions on
//     the subject bound what it reads).
//   - Pusher is the push hook: a durable pull consumer on the message log
//     shared by every node, which publishes an event on
//     jetchat.push.v1.<user> for each message stored for a user with no
//     connected device.
//   - PresenceFeed republishes presence changes in the stable v1 format on
//     jetchat.presence.v1.u.<user>, and announces gateways that leave.
//
// Every node runs all three; NATS queue groups and the shared durable
// consumer spread the work, so adding nodes adds capacity and a node that
// dies loses nothing (unacked records are redelivered to the others).
//
// # Concurrency
//
// API handles requests on Config.Workers goroutines; Pusher handles one
// record at a time per node, checking a group's members in parallel;
// PresenceFeed handles changes on one goroutine. All methods are safe for
// concurrent use.
//
// # Lifecycle
//
// New* validate their arguments and do no I/O. Run subscribes (or creates
// the push consumer), works until ctx ends, then drains: requests and
// records already received are finished (and answered or acked) before Run
// returns. Stop Run before closing the NATS connection.
package service
