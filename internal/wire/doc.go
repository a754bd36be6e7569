// Package wire defines the frames of the jetchat client protocol (version 1,
// docs/protocol.md) and their encoding: a strict decoder for the frames
// clients send and fast, allocation-light encoders for the frames the server
// sends. Both the gateway and the Go client use it, so the two can never
// disagree about a field name.
package wire
