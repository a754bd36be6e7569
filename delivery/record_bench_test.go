package delivery

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/natsx"
)

// The hot functions of a delivery: encoding a message's stored form (once
// per message, whatever its number of recipients) and decoding a live
// record (once per node, then shared by every device there).
//
//	go test ./delivery/ -run '^$' -bench 'AppendMessage|DecodeRecord' -benchmem

func BenchmarkAppendMessage(b *testing.B) {
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendMessage(buf[:0], "", "alice", "bob", "", "hello, this is a chat message of typical length \"quoted\"", "", 1795775914762)
	}
}

func liveRecord(kind string, data []byte) *nats.Msg {
	m := nats.NewMsg("live.u.bob")
	m.Data = data
	m.Header.Set(HdrKind, kind)
	m.Header.Set(HdrFrom, "alice")
	m.Header.Set(HdrTo, "bob")
	m.Header.Set(HdrDevice, "phone")
	m.Header.Set(HdrTS, "1795775914762")
	m.Header.Set(HdrVersion, RecordVersion)
	m.Header.Set(natsx.HdrLastSequence, "41")
	m.Header.Set(natsx.HdrSequence, "42")
	return m
}

func BenchmarkDecodeRecord(b *testing.B) {
	msg := liveRecord(KindMessage, appendMessage(nil, "", "alice", "bob", "", "hello, this is a chat message of typical length", "", 1795775914762))
	items := make([]receiptItem, 64)
	for i := range items {
		items[i] = receiptItem{Msg: "m" + strconv.Itoa(1000+i), Status: "delivered", By: "bob", TS: 1795775914762}
	}
	data, err := json.Marshal(receiptsBody{Type: "receipts", Items: items})
	if err != nil {
		b.Fatal(err)
	}
	rcpt := liveRecord(KindReceipts, data)
	for _, tc := range []struct {
		name string
		m    *nats.Msg
	}{{"message", msg}, {"receipts64", rcpt}} {
		b.Run(tc.name, func(b *testing.B) {
			if _, err := decodeRecord(tc.m, true); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				decodeRecord(tc.m, true)
			}
		})
	}
}

func BenchmarkMarshalReceipts(b *testing.B) {
	items := make([]receiptItem, 64)
	for i := range items {
		items[i] = receiptItem{Msg: "m" + strconv.Itoa(1000+i), Status: "delivered", By: "bob", TS: 1795775914762}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := marshalReceipts(items); err != nil {
			b.Fatal(err)
		}
	}
}
