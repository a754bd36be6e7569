// Package svcapi is jetchat's API for backend services — bots, moderation,
// push notification senders, analytics — that talk to jetchat over NATS with
// their own credentials. It is the Go side of docs/subjects.md:
//
//   - Reading the traffic: every message and receipt is a record in the
//     stream natsx.StreamMsgs. Decode turns a record (from a durable pull
//     consumer, or a republished record on live.>) into an Event, the v1
//     envelope: the record's Jc-* headers and its JSON body.
//   - Durable, load-balanced consumers: Client.Consumer asks jetchat to
//     create (or update) the service's durable pull consumer on the log,
//     limited to one scope (everything, all inboxes, all groups, one user's
//     inbox or one group); every instance of the service binds the same
//     consumer and JetStream hands each record to one of them.
//   - Sending as a bot: Client.Send stores a message from a bot user,
//     validated and deduplicated exactly like a client's send, and answers
//     like the protocol's sent frame.
//   - Push and presence: PushEvent and PresenceEvent are the JSON events on
//     jetchat.push.v1.<user> and jetchat.presence.v1.u.<user>.
//
// A service connects with nats.Connect and the option Inbox(user), so that
// its replies arrive under the inbox prefix its NATS permissions allow
// (_INBOX.<nats user>.>), then wraps the connection with NewClient.
//
// Everything here is version 1: the subjects carry the version (svc.v1,
// push.v1, presence.v1) and records carry it in the Jc-V header. Version 1
// only grows — new fields, new record kinds — and never changes the meaning
// of what is documented; a service must ignore fields and kinds it does not
// know.
package svcapi
