// Package cidindex remembers, for a fixed window, the sends a gateway has
// stored, so that a client's repeated send (same user, same client-chosen
// cid) is answered with what was stored the first time.
//
// It replaces JetStream's duplicate table for this purpose. That table
// keeps about three heap objects with pointers per entry (a map slot, an
// entry and its id string), and the garbage collector marks every one of
// them on every cycle: millions of objects at a busy gateway, which shows
// in the latency tail. A Table keeps its entries in slices of structs of
// integers only, which the collector never scans, however many entries
// they hold.
//
// # Design
//
// A (user, cid) pair is reduced to a Key of two 64-bit hashes. The Table
// is a hash table with open addressing and linear probing over a
// power-of-two array of slots; it doubles when more than half full, and
// deletes by shifting the following slots of the cluster back (no
// tombstones). A FIFO ring of keys in the order they were put drives
// expiry: Expire pops keys from the head while their entries are expired.
// Entries arrive in roughly, not strictly, increasing time, so an entry
// that is not expired yet at the head holds back older ones behind it for
// a few seconds; Get checks the time of every entry, so an expired entry
// is never reported, dropped or not. Both arrays shrink when mostly empty,
// so memory follows the load of the window.
//
// # Concurrency
//
// A Table's methods are safe for concurrent use; one mutex guards it.
package cidindex

import (
	"sync"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Key identifies one (user, cid) pair by two independent 64-bit hashes; the
// table finds a slot by A and checks B, so two pairs are confused only if
// both hashes collide (about 2^-128).
type Key struct{ A, B uint64 }

// KeyOf returns the key of user's cid: A is XXH64 of user, a zero byte and
// cid (never 0, which marks an empty slot: 0 becomes 1); B is XXH64 of a
// one byte, cid, a zero byte and user. The zero bytes keep ("a", "bc") and
// ("ab", "c") apart, assuming user ids hold no zero byte.
func KeyOf(user, cid string) Key {
	var d xxhash.Digest
	d.Reset()
	d.WriteString(user)
	d.WriteString("\x00")
	d.WriteString(cid)
	a := d.Sum64()
	if a == 0 {
		a = 1
	}
	d.Reset()
	d.WriteString("\x01")
	d.WriteString(cid)
	d.WriteString("\x00")
	d.WriteString(user)
	return Key{A: a, B: d.Sum64()}
}

// Entry is what the index keeps of one stored send.
type Entry struct {
	Seq   uint64 // stream sequence of the message record
	IDSeq uint64 // the sequence that names the message id
	TS    int64  // when the send was accepted, ms since the Unix epoch; the entry expires at TS + window
}

const (
	minSlots = 64 // a shard's slot array never shrinks below this
	minRing  = 32 // nor its ring below this
)

// slot is one place of the hash table; a == 0 marks it empty.
type slot struct {
	a, b  uint64 // the Key
	seq   uint64
	idSeq uint64
	ts    int64
}

// pending is one key of the expiry ring, with the time of the entry it
// was put with.
type pending struct {
	k  Key
	ts int64
}

// Table is a set of entries that expire a fixed window after their TS.
// Its methods are safe for concurrent use.
//
// It is made of shards, each a hash table and ring of its own under its
// own mutex, picked by the top bits of Key.A: a shard that grows rehashes
// and allocates a 64th of the entries, so a growing table never holds
// every send up at once, nor hands the collector one huge allocation to
// pay for (a goroutine allocating while the collector marks pays for the
// bytes with marking work of its own).
type Table struct {
	window int64 // ms
	shards [nShards]shard
}

// nShards is the number of shards, a power of two; shardBits its log2.
const (
	shardBits = 6
	nShards   = 1 << shardBits
)

// shard is one hash table and its expiry ring.
type shard struct {
	mu    sync.Mutex
	slots []slot // power-of-two length, at most half full
	n     int    // occupied slots
	ring  []pending
	head  int // index in ring of the oldest key
	count int // keys in ring
}

// New returns an empty table that keeps entries for window (counted in
// whole milliseconds; with a window under 1ms, every entry is expired).
func New(window time.Duration) *Table {
	t := &Table{window: window.Milliseconds()}
	for i := range t.shards {
		t.shards[i].slots = make([]slot, minSlots)
		t.shards[i].ring = make([]pending, minRing)
	}
	return t
}

// cutoff returns the latest TS that is expired at now.
func (t *Table) cutoff(now time.Time) int64 {
	return now.UnixMilli() - t.window
}

// shard returns the shard of k.
func (t *Table) shard(k Key) *shard { return &t.shards[k.A>>(64-shardBits)] }

// Put records e under k unless k is already present (the first store of a
// send wins: a later Put for the same key changes nothing) or e is already
// expired at now. It reports whether it added the entry.
//
// An entry of k that is expired at now but not dropped yet does not count
// as present: Put replaces it, as a send after the window is a new send.
func (t *Table) Put(k Key, e Entry, now time.Time) bool {
	cut := t.cutoff(now)
	if e.TS <= cut {
		return false
	}
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, found := sh.find(k)
	if found && sh.slots[i].ts > cut {
		return false
	}
	if !found {
		if (sh.n+1)*2 > len(sh.slots) {
			sh.rehash(len(sh.slots) * 2)
			i, _ = sh.find(k)
		}
		sh.n++
	}
	sh.slots[i] = slot{a: k.A, b: k.B, seq: e.Seq, idSeq: e.IDSeq, ts: e.TS}
	sh.push(pending{k: k, ts: e.TS})
	return true
}

// Get returns the entry of k if present and not expired at now.
func (t *Table) Get(k Key, now time.Time) (Entry, bool) {
	cut := t.cutoff(now)
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, found := sh.find(k)
	if !found || sh.slots[i].ts <= cut {
		return Entry{}, false
	}
	s := sh.slots[i]
	return Entry{Seq: s.seq, IDSeq: s.idSeq, TS: s.ts}, true
}

// Expire drops the entries expired at now, and shrinks the table's arrays
// when they are mostly empty, so memory follows the window's load.
//
// It drops entries in the order they were put, and stops at the first one
// that is not expired: an older entry put after it stays (absent for Get)
// until a later Expire gets past it.
func (t *Table) Expire(now time.Time) {
	cut := t.cutoff(now)
	for i := range t.shards {
		t.shards[i].expire(cut)
	}
}

func (t *shard) expire(cut int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.count > 0 && t.ring[t.head].ts <= cut {
		p := t.ring[t.head]
		t.head = (t.head + 1) & (len(t.ring) - 1)
		t.count--
		// The key finds nothing, or a newer entry, when its entry was
		// replaced after expiring (see Put); a newer entry that has not
		// expired stays.
		if i, found := t.find(p.k); found && t.slots[i].ts <= cut {
			t.remove(i)
			t.n--
		}
	}
	size := len(t.slots)
	for size > minSlots && t.n < size/8 {
		size /= 2
	}
	if size != len(t.slots) {
		t.rehash(size)
	}
	size = len(t.ring)
	for size > minRing && t.count < size/4 {
		size /= 2
	}
	if size != len(t.ring) {
		t.resizeRing(size)
	}
}

// Len is the number of entries held (expired ones not yet dropped included).
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// Bytes is the memory held by the table's arrays, for a metric.
func (t *Table) Bytes() int {
	b := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		b += len(sh.slots)*int(unsafe.Sizeof(slot{})) + len(sh.ring)*int(unsafe.Sizeof(pending{}))
		sh.mu.Unlock()
	}
	return b
}

// find returns the slot of k and true, or the empty slot where k would go
// and false.
func (t *shard) find(k Key) (int, bool) {
	mask := len(t.slots) - 1
	for i := int(k.A) & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.a == 0 {
			return i, false
		}
		if s.a == k.A && s.b == k.B {
			return i, true
		}
	}
}

// remove empties slot i, moving later slots of its cluster back so that
// every key stays reachable from its home slot without crossing an empty
// one.
func (t *shard) remove(i int) {
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j].a != 0; j = (j + 1) & mask {
		home := int(t.slots[j].a) & mask
		// The key at j may move to the hole at i only if i lies on its
		// probe path, from home to j: i is no closer to j than home is.
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = slot{}
}

// rehash moves every entry into a new slot array of size slots.
func (t *shard) rehash(size int) {
	old := t.slots
	t.slots = make([]slot, size)
	for _, s := range old {
		if s.a != 0 {
			i, _ := t.find(Key{A: s.a, B: s.b})
			t.slots[i] = s
		}
	}
}

// push appends p at the tail of the ring, doubling the ring when full.
func (t *shard) push(p pending) {
	if t.count == len(t.ring) {
		t.resizeRing(len(t.ring) * 2)
	}
	t.ring[(t.head+t.count)&(len(t.ring)-1)] = p
	t.count++
}

// resizeRing moves the ring's keys, in order, into a new array of size
// places (a power of two, at least t.count).
func (t *shard) resizeRing(size int) {
	ring := make([]pending, size)
	for i := range t.count {
		ring[i] = t.ring[(t.head+i)&(len(t.ring)-1)]
	}
	t.ring, t.head = ring, 0
}
