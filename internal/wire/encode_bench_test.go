package wire

import "testing"

// The frames every message makes on its way: the sender's sent answer and
// a receipt back.
//
//	go test ./internal/wire/ -run '^$' -bench Append -benchmem

func BenchmarkAppendSent(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendSent(buf[:0], "alice-phone-000123", "m1234567", 1795775914762)
	}
}

func BenchmarkAppendReceipt(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendReceipt(buf[:0], "r1234570-3", "m1234567", StatusDelivered, "bob", 1795775914762)
	}
}
