package svcapi

// PushEvent is published on jetchat.push.v1.<user> when a message is stored
// for a user with no connected device: one per message and offline
// recipient. Events may repeat (after a crash of the node handling the
// message); Msg identifies the message, so a push sender drops repeats. The
// header Nats-Msg-Id is "push:<user>:<msg>", so a JetStream stream on
// jetchat.push.v1.> deduplicates them too.
//
// The event carries no message text unless the node runs with
// --push-preview: then Preview holds the first characters of the body.
type PushEvent struct {
	// V is the version (1).
	V int `json:"v"`
	// Type is "push".
	Type string `json:"type"`
	// User is the recipient to notify.
	User string `json:"user"`
	// From is the sender.
	From string `json:"from"`
	// Msg is the message id.
	Msg string `json:"msg"`
	// Group is set for a group message.
	Group string `json:"group,omitempty"`
	// TS is when the message was stored (ms).
	TS int64 `json:"ts"`
	// Media is set when the message carries media (not which).
	Media bool `json:"media,omitempty"`
	// Preview is the start of the body, only with --push-preview.
	Preview string `json:"preview,omitempty"`
}

// PresenceEvent is published on jetchat.presence.v1.u.<user> after every
// change of a user's stored presence (it came online on a gateway, or went
// offline). A user is online while any gateway in Gateways is alive: when a
// GatewayEvent names one of them, drop it; a user left with none is
// offline since the event's LastSeen.
type PresenceEvent struct {
	// V is the version (1).
	V int `json:"v"`
	// Type is "presence".
	Type string `json:"type"`
	// User is whose presence changed.
	User string `json:"user"`
	// Online says whether the user is online.
	Online bool `json:"online"`
	// Gateways are the gateway incarnations (<id>.<start ns>) where the
	// user is online.
	Gateways []string `json:"gateways,omitempty"`
	// LastSeen is when the user was last online (ms); omitted while online
	// and when the user hides its last-seen.
	LastSeen int64 `json:"last_seen,omitempty"`
	// TS is when the event was made (ms).
	TS int64 `json:"ts"`
}

// GatewayEvent is published on jetchat.presence.v1.gateway when a gateway
// incarnation leaves (stops, or dies and its registry entry expires). Every
// node announces it, so it repeats once per node.
type GatewayEvent struct {
	// V is the version (1).
	V int `json:"v"`
	// Type is "gateway_gone".
	Type string `json:"type"`
	// Gateway is the incarnation (<id>.<start ns>), as in
	// PresenceEvent.Gateways.
	Gateway string `json:"gateway"`
	// LastSeen is its last heartbeat or its stop (ms): the last-seen of the
	// users that were online only there.
	LastSeen int64 `json:"last_seen"`
}
