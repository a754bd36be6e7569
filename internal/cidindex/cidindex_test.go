package cidindex_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/cidindex"
)

const window = 15 * time.Minute

var t0 = time.UnixMilli(1_700_000_000_000)

// at returns t0 plus ms milliseconds.
func at(ms int64) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// ts returns the entry time of t0 plus ms milliseconds.
func ts(ms int64) int64 { return t0.UnixMilli() + ms }

func TestPutGet(t *testing.T) {
	tab := cidindex.New(window)
	k := cidindex.KeyOf("alice", "c1")
	first := cidindex.Entry{Seq: 10, IDSeq: 9, TS: ts(0)}
	if _, ok := tab.Get(k, at(0)); ok {
		t.Fatal("Get on an empty table found an entry")
	}
	if !tab.Put(k, first, at(0)) {
		t.Fatal("first Put refused")
	}
	if tab.Put(k, cidindex.Entry{Seq: 20, IDSeq: 19, TS: ts(5)}, at(5)) {
		t.Fatal("second Put of the same key accepted")
	}
	got, ok := tab.Get(k, at(10))
	if !ok || got != first {
		t.Fatalf("Get = %+v, %v; want %+v, true", got, ok, first)
	}
	if _, ok := tab.Get(cidindex.KeyOf("alice", "c2"), at(10)); ok {
		t.Fatal("Get of another cid found an entry")
	}
	if n := tab.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
}

func TestKeyOf(t *testing.T) {
	if cidindex.KeyOf("alice", "c1") != cidindex.KeyOf("alice", "c1") {
		t.Fatal("KeyOf is not deterministic")
	}
	pairs := [][2]string{
		{"alice", "c1"}, {"alice", "c2"}, {"bob", "c1"},
		{"a", "bc"}, {"ab", "c"}, {"bc", "a"}, {"", "abc"}, {"abc", ""},
	}
	seen := map[cidindex.Key][2]string{}
	for _, p := range pairs {
		k := cidindex.KeyOf(p[0], p[1])
		if k.A == 0 {
			t.Errorf("KeyOf(%q, %q).A = 0", p[0], p[1])
		}
		if k.A == k.B {
			t.Errorf("KeyOf(%q, %q) has A == B", p[0], p[1])
		}
		if q, dup := seen[k]; dup {
			t.Errorf("KeyOf(%q, %q) == KeyOf(%q, %q)", p[0], p[1], q[0], q[1])
		}
		seen[k] = p
	}
}

func TestExpiry(t *testing.T) {
	tab := cidindex.New(time.Second)
	old := cidindex.KeyOf("u", "old")
	young := cidindex.KeyOf("u", "young")
	tab.Put(old, cidindex.Entry{Seq: 1, TS: ts(0)}, at(0))
	tab.Put(young, cidindex.Entry{Seq: 2, TS: ts(500)}, at(500))

	if _, ok := tab.Get(old, at(999)); !ok {
		t.Fatal("entry absent before its expiry")
	}
	if _, ok := tab.Get(old, at(1000)); ok {
		t.Fatal("entry present at TS + window")
	}
	tab.Expire(at(1000))
	if n := tab.Len(); n != 1 {
		t.Fatalf("Len after Expire = %d, want 1", n)
	}
	if e, ok := tab.Get(young, at(1000)); !ok || e.Seq != 2 {
		t.Fatalf("unexpired entry: Get = %+v, %v", e, ok)
	}
	if tab.Put(cidindex.KeyOf("u", "late"), cidindex.Entry{TS: ts(0)}, at(1000)) {
		t.Fatal("Put of an expired entry accepted")
	}
	tab.Expire(at(1500))
	if n := tab.Len(); n != 0 {
		t.Fatalf("Len after expiring all = %d, want 0", n)
	}
	if _, ok := tab.Get(young, at(1500)); ok {
		t.Fatal("expired entry present")
	}
}

// TestOutOfOrder checks that an entry put after a newer one is reported
// absent once expired, though Expire cannot drop it yet, and that a send
// after its window replaces it.
func TestOutOfOrder(t *testing.T) {
	tab := cidindex.New(10 * time.Second)
	newer := cidindex.KeyOf("u", "newer")
	older := cidindex.KeyOf("u", "older")
	tab.Put(newer, cidindex.Entry{Seq: 1, TS: ts(5000)}, at(5000))
	tab.Put(older, cidindex.Entry{Seq: 2, TS: ts(0)}, at(5000)) // from a merged batch

	now := at(10_000) // older has expired, newer has not
	tab.Expire(now)
	if _, ok := tab.Get(older, now); ok {
		t.Fatal("expired entry behind a newer one is reported present")
	}
	if _, ok := tab.Get(newer, now); !ok {
		t.Fatal("unexpired entry absent")
	}
	// Held behind the newer one when both are in one shard, dropped
	// otherwise.
	if n := tab.Len(); n != 1 && n != 2 {
		t.Fatalf("Len = %d, want 1 or 2", n)
	}

	// A repeat of older after its window is a new send.
	if !tab.Put(older, cidindex.Entry{Seq: 3, TS: ts(10_000)}, now) {
		t.Fatal("Put over an expired entry refused")
	}
	if e, ok := tab.Get(older, now); !ok || e.Seq != 3 {
		t.Fatalf("Get after replacement = %+v, %v; want Seq 3", e, ok)
	}
	if n := tab.Len(); n != 2 {
		t.Fatalf("Len after replacement = %d, want 2", n)
	}
	// The first key of older in the ring must not drop its replacement.
	tab.Expire(at(15_000))
	if e, ok := tab.Get(older, at(15_000)); !ok || e.Seq != 3 {
		t.Fatalf("replacement dropped with the entry it replaced: %+v, %v", e, ok)
	}
	tab.Expire(at(20_000))
	if n := tab.Len(); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
}

func TestGrowShrink(t *testing.T) {
	const n = 100_000
	tab := cidindex.New(window)
	minBytes := tab.Bytes()
	for i := range n {
		k := cidindex.KeyOf(fmt.Sprintf("user-%d", i%1000), fmt.Sprintf("cid-%d", i))
		e := cidindex.Entry{Seq: uint64(i), IDSeq: uint64(2 * i), TS: ts(int64(i))}
		if !tab.Put(k, e, at(int64(i))) {
			t.Fatalf("Put %d refused", i)
		}
	}
	if got := tab.Len(); got != n {
		t.Fatalf("Len = %d, want %d", got, n)
	}
	if tab.Bytes() <= minBytes {
		t.Fatalf("Bytes = %d, did not grow from %d", tab.Bytes(), minBytes)
	}
	now := at(n)
	for i := range n {
		k := cidindex.KeyOf(fmt.Sprintf("user-%d", i%1000), fmt.Sprintf("cid-%d", i))
		e, ok := tab.Get(k, now)
		want := cidindex.Entry{Seq: uint64(i), IDSeq: uint64(2 * i), TS: ts(int64(i))}
		if !ok || e != want {
			t.Fatalf("Get %d = %+v, %v; want %+v", i, e, ok, want)
		}
	}
	tab.Expire(now.Add(window))
	if got := tab.Len(); got != 0 {
		t.Fatalf("Len after expiring all = %d, want 0", got)
	}
	if got := tab.Bytes(); got != minBytes {
		t.Fatalf("Bytes after expiring all = %d, want %d", got, minBytes)
	}
}

// model is the reference the table is checked against: a map that never
// drops anything, with the table's rules for presence.
type model struct {
	window int64
	m      map[cidindex.Key]cidindex.Entry
}

func (m *model) live(k cidindex.Key, now time.Time) (cidindex.Entry, bool) {
	e, ok := m.m[k]
	if !ok || e.TS <= now.UnixMilli()-m.window {
		return cidindex.Entry{}, false
	}
	return e, true
}

func (m *model) put(k cidindex.Key, e cidindex.Entry, now time.Time) bool {
	if e.TS <= now.UnixMilli()-m.window {
		return false
	}
	if _, ok := m.live(k, now); ok {
		return false
	}
	m.m[k] = e
	return true
}

// TestModel runs random operations against the table and the model with a
// moving clock and entries up to 3s out of order. The clustered keys share
// a few home slots (around the end of the array, so clusters wrap) and
// some share A, which exercises deletion inside long clusters; the random
// keys are many, which exercises growth and shrinking.
func TestModel(t *testing.T) {
	clustered := func(r *rand.Rand) cidindex.Key {
		home := uint64(1020+r.IntN(8)) % 1024
		return cidindex.Key{A: uint64(r.IntN(64))<<16 | home | 1<<40, B: uint64(r.IntN(4))}
	}
	random := func(r *rand.Rand) cidindex.Key {
		return cidindex.KeyOf(fmt.Sprint("user-", r.IntN(50)), fmt.Sprint("cid-", r.IntN(200)))
	}
	for _, tc := range []struct {
		name string
		key  func(*rand.Rand) cidindex.Key
		ops  int
		puts int // puts per op at most
	}{
		{"clustered", clustered, 20_000, 1},
		{"random", random, 20_000, 1},
		{"bursts", random, 4_000, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			const win = 10_000
			tab := cidindex.New(win * time.Millisecond)
			m := &model{window: win, m: map[cidindex.Key]cidindex.Entry{}}
			var clock int64
			for op := range tc.ops {
				clock += int64(r.IntN(100))
				if r.IntN(500) == 0 {
					clock += win // a quiet spell: everything expires
				}
				now := at(clock)
				switch x := r.IntN(100); {
				case x < 45:
					for range 1 + r.IntN(tc.puts) {
						k := tc.key(r)
						e := cidindex.Entry{Seq: uint64(op), IDSeq: r.Uint64(), TS: ts(clock - int64(r.IntN(3000)))}
						if got, want := tab.Put(k, e, now), m.put(k, e, now); got != want {
							t.Fatalf("op %d: Put(%v, %+v) = %v, want %v", op, k, e, got, want)
						}
					}
				case x < 95:
					k := tc.key(r)
					got, gotOK := tab.Get(k, now)
					want, wantOK := m.live(k, now)
					if gotOK != wantOK || got != want {
						t.Fatalf("op %d: Get(%v) = %+v, %v; want %+v, %v", op, k, got, gotOK, want, wantOK)
					}
				default:
					tab.Expire(now)
					held, live := len(m.m), 0
					for k := range m.m {
						if _, ok := m.live(k, now); ok {
							live++
						}
					}
					if n := tab.Len(); n < live || n > held {
						t.Fatalf("op %d: Len = %d, want between %d live and %d held", op, n, live, held)
					}
				}
			}
			// Every key of the model, then a final expiry.
			now := at(clock)
			for k := range m.m {
				got, gotOK := tab.Get(k, now)
				want, wantOK := m.live(k, now)
				if gotOK != wantOK || got != want {
					t.Fatalf("final: Get(%v) = %+v, %v; want %+v, %v", k, got, gotOK, want, wantOK)
				}
			}
			tab.Expire(at(clock + win))
			if n := tab.Len(); n != 0 {
				t.Fatalf("Len after expiring all = %d", n)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	const workers, per = 8, 5_000
	tab := cidindex.New(window)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			user := fmt.Sprint("user-", w)
			for i := range per {
				now := at(int64(i))
				k := cidindex.KeyOf(user, fmt.Sprint(i))
				if !tab.Put(k, cidindex.Entry{Seq: uint64(i), TS: ts(int64(i))}, now) {
					t.Errorf("worker %d: Put %d refused", w, i)
					return
				}
				if e, ok := tab.Get(k, now); !ok || e.Seq != uint64(i) {
					t.Errorf("worker %d: Get %d = %+v, %v", w, i, e, ok)
					return
				}
				if i%100 == 0 {
					tab.Expire(now)
					_, _ = tab.Len(), tab.Bytes()
				}
			}
		})
	}
	wg.Wait()
	if n := tab.Len(); n != workers*per {
		t.Fatalf("Len = %d, want %d", n, workers*per)
	}
	tab.Expire(at(per).Add(window))
	if n := tab.Len(); n != 0 {
		t.Fatalf("Len after expiring all = %d", n)
	}
}

// keys returns n distinct keys.
func keys(n int) []cidindex.Key {
	ks := make([]cidindex.Key, n)
	for i := range ks {
		ks[i] = cidindex.KeyOf(fmt.Sprint("user-", i%10_000), fmt.Sprint("cid-", i))
	}
	return ks
}

func BenchmarkKeyOf(b *testing.B) {
	for b.Loop() {
		cidindex.KeyOf("9b2f6c1e-3c2a-4f8e-9d51-0a7c3e5b8f21", "01J9ZQ7X4K3M2N1P0R9S8T7V6W")
	}
}

func BenchmarkPut(b *testing.B) {
	ks := keys(1 << 20)
	var tab *cidindex.Table
	i := 0
	for b.Loop() {
		if i%len(ks) == 0 {
			tab = cidindex.New(window) // growth is part of the cost
		}
		tab.Put(ks[i%len(ks)], cidindex.Entry{Seq: uint64(i), TS: ts(0)}, t0)
		i++
	}
}

// filled returns a table of the first n keys of ks.
func filled(ks []cidindex.Key, n int) *cidindex.Table {
	tab := cidindex.New(window)
	for i, k := range ks[:n] {
		tab.Put(k, cidindex.Entry{Seq: uint64(i), TS: ts(0)}, t0)
	}
	return tab
}

func BenchmarkGetHit(b *testing.B) {
	const n = 1_000_000
	ks := keys(n)
	tab := filled(ks, n)
	i := 0
	for b.Loop() {
		if _, ok := tab.Get(ks[i%n], t0); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

func BenchmarkGetMiss(b *testing.B) {
	const n = 1_000_000
	ks := keys(2 * n)
	tab := filled(ks, n)
	i := 0
	for b.Loop() {
		if _, ok := tab.Get(ks[n+i%n], t0); ok {
			b.Fatal("hit")
		}
		i++
	}
}

// ddentry is the shape of an entry of JetStream's duplicate table.
type ddentry struct {
	id  string
	seq uint64
	ts  int64
}

// BenchmarkGCMark measures a full collection with 2,000,000 entries held
// in a Table, against the same held the way JetStream's duplicate table
// holds them (a map of pointers plus a slice of the same pointers), and
// against an empty heap.
func BenchmarkGCMark(b *testing.B) {
	const n = 2_000_000
	gc := func(b *testing.B, keep any) {
		runtime.GC()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			runtime.GC()
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "ns/GC")
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "MiB-heap")
		runtime.KeepAlive(keep)
	}
	b.Run("Empty", func(b *testing.B) { gc(b, nil) })
	b.Run("Table", func(b *testing.B) {
		tab := cidindex.New(window)
		for i := range n {
			k := cidindex.KeyOf(fmt.Sprint("user-", i%10_000), fmt.Sprint("cid-", i))
			tab.Put(k, cidindex.Entry{Seq: uint64(i), TS: ts(0)}, t0)
		}
		gc(b, tab)
	})
	b.Run("JetStreamShape", func(b *testing.B) {
		m := make(map[string]*ddentry)
		arr := make([]*ddentry, 0)
		for i := range n {
			id := fmt.Sprint("user-", i%10_000, ":cid-", i)
			e := &ddentry{id: id, seq: uint64(i), ts: ts(0)}
			m[id] = e
			arr = append(arr, e)
		}
		gc(b, [2]any{m, arr})
	})
}
