package natsx

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// parseAckReply reads both forms of a delivery's reply subject as nats.go
// does, and refuses anything else.
func TestParseAckReply(t *testing.T) {
	t.Parallel()
	for _, reply := range []string{
		"$JS.ACK.JETCHAT_MSGS.abc123.1.4021.17.1764300000000000000.983",
		"$JS.ACK.hub.ACCHASH.JETCHAT_MSGS.abc123.1.4021.17.1764300000000000000.983.rnd",
		"$JS.ACK.hub.ACCHASH.JETCHAT_MSGS.abc123.1.4021.17.1764300000000000000.983.rnd.more",
	} {
		got, ok := parseAckReply(reply)
		md, err := (&nats.Msg{Reply: reply, Sub: &nats.Subscription{}}).Metadata()
		if err != nil {
			t.Fatalf("nats.go cannot read %q: %v", reply, err)
		}
		want := ackMeta{streamSeq: md.Sequence.Stream, consumerSeq: md.Sequence.Consumer, pending: md.NumPending}
		if !ok || got != want || got != (ackMeta{4021, 17, 983}) {
			t.Errorf("parseAckReply(%q) = %+v, %v; want %+v", reply, got, ok, want)
		}
	}
	for _, bad := range []string{
		"",
		"_INBOX.abc",
		"$JS.ACK.",
		"$JS.ACK.JETCHAT_MSGS.abc123.1.4021.17.1764300000000000000",           // 8 tokens
		"$JS.ACK.JETCHAT_MSGS.abc123.1.4021.x17.1764300000000000000.983",      // not a number
		"$JS.ACK.JETCHAT_MSGS.abc123.1.4021..1764300000000000000.983",         // empty
		"$JS.ACK.JETCHAT_MSGS.abc123.1.99999999999999999999.17.1.983",         // too long
		"$JS.ACK.hub.ACCHASH.JETCHAT_MSGS.abc123.1.4021.17.1764300000000.983", // 11 tokens
	} {
		if got, ok := parseAckReply(bad); ok {
			t.Errorf("parseAckReply(%q) = %+v, want refused", bad, got)
		}
	}
}
