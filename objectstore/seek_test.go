package objectstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/objectstore"
)

// fillerReader yields an object's bytes and, before each piece, stores
// some messages of another object's chunk subject, so that the object's
// chunks end up scattered among them in the stream (pattern[i] fillers
// before the i-th piece, cycling).
type fillerReader struct {
	t       *testing.T
	js      jetstream.JetStream
	src     io.Reader
	piece   int
	pattern []int
	i       int
}

// fillerBatch bounds the fillers awaiting their acknowledgements.
const fillerBatch = 500

func (r *fillerReader) Read(p []byte) (int, error) {
	// Published asynchronously, at most fillerBatch unacknowledged at a
	// time (the client stalls past its own limit of pending publishes),
	// and all stored before the chunk this read fills is published.
	for n := r.pattern[r.i%len(r.pattern)]; n > 0; n -= fillerBatch {
		for range min(n, fillerBatch) {
			if _, err := r.js.PublishAsync("$O."+natsx.BucketMedia+".C.filler", []byte("x")); err != nil {
				r.t.Errorf("filler: %v", err)
			}
		}
		select {
		case <-r.js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			r.t.Errorf("fillers not stored in a minute")
		}
	}
	r.i++
	return r.src.Read(p[:min(len(p), r.piece)])
}

// TestRangeReadsSeek: a read from an offset finds the chunk that holds it
// instead of reading every chunk before it, whether the object's chunks
// are contiguous in the stream or scattered among other messages, and
// returns exactly the stored bytes from any offset.
func TestRangeReadsSeek(t *testing.T) {
	t.Parallel()
	const chunk = 1024
	f := newFixture(t, objectstore.Config{ChunkSize: chunk}, nil)
	// Count the direct gets of the object store's stream: the requests go
	// out on this connection, so once a flush returns, all of them are in
	// the channel.
	gets := make(chan *nats.Msg, 1<<16)
	sub, err := f.nc.ChanSubscribe("$JS.API.DIRECT.GET.OBJ_"+natsx.BucketMedia, gets)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	count := func() int64 {
		if err := f.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		n := int64(len(gets))
		for range n {
			<-gets
		}
		return n
	}

	const size = 1000*chunk + 321 // 1,001 chunks
	want := genBytes(0, size)
	layouts := []struct {
		name    string
		pattern []int
	}{
		{"contiguous", []int{0}},
		{"scattered evenly", []int{2}},
		{"scattered unevenly", []int{0, 0, 7, 1, 0, 30, 0, 0, 0, 3}},
		{"a long run of others midway", append(make([]int, 500), 5000)},
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			// Pieces of half a chunk: fillers land inside chunks' reads too.
			r := &fillerReader{t: t, js: f.js, src: bytes.NewReader(want), piece: chunk / 2, pattern: l.pattern}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			info, err := f.store.Put(ctx, "alice", "application/octet-stream", r)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := f.store.Open(ctx10(t), "alice", info.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, rg := range [][2]int64{
				{chunk - 1, 2}, {chunk, 1}, {chunk + 1, chunk}, {2*chunk - 1, 1}, {17 * chunk, 3 * chunk},
				{499*chunk + 5, 10}, {500 * chunk, chunk}, {501*chunk - 1, 2}, {777*chunk + 100, 2000},
				{1000 * chunk, 321}, {size - 1, 1}, {size - 100, 100}, {3, size - 3}, {size, 0},
			} {
				count()
				got := read(t, obj, rg[0], rg[1])
				if !bytes.Equal(got, want[rg[0]:rg[0]+rg[1]]) {
					t.Fatalf("read %d+%d: %d bytes, not the stored ones", rg[0], rg[1], len(got))
				}
				// A seek is a few dozen direct gets at most; reading the
				// chunks before a late offset would be hundreds.
				n, fetches := count(), (rg[1]+chunk-1)/chunk/4+2
				if rg[0] > 100*chunk && n > 50+fetches {
					t.Errorf("read %d+%d took %d direct gets", rg[0], rg[1], n)
				}
			}
		})
	}
}

// TestSeekAtTheEdges reads at chunk boundaries of an object of exactly
// three full chunks, up to its end, and the empty range at its end.
func TestSeekAtTheEdges(t *testing.T) {
	t.Parallel()
	const chunk = 1024
	f := newFixture(t, objectstore.Config{ChunkSize: chunk}, nil)
	want := genBytes(0, 3*chunk)
	info, err := f.store.Put(ctx10(t), "alice", "application/octet-stream", bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := f.store.Open(ctx10(t), "alice", info.ID)
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := objectstore.NewJetStreamBlobs(f.nc, f.res.Media, objectstore.Config{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	for _, rg := range [][2]int64{{3 * chunk, 0}, {2 * chunk, chunk}, {2*chunk - 1, chunk + 1}, {3*chunk - 1, 1}, {chunk, 0}} {
		if got := read(t, obj, rg[0], rg[1]); !bytes.Equal(got, want[rg[0]:rg[0]+rg[1]]) {
			t.Errorf("read %d+%d: %d bytes, not the stored ones", rg[0], rg[1], len(got))
		}
		// The same through the blobs alone (the store answers an empty
		// range itself).
		if got := readBlob(t, blobs, info.ID, rg[0], rg[1]); !bytes.Equal(got, want[rg[0]:rg[0]+rg[1]]) {
			t.Errorf("blobs read %d+%d: %d bytes, not the stored ones", rg[0], rg[1], len(got))
		}
	}
}

// TestUnnumberedChunksAreReadFromTheStart: an object stored here before
// chunks were numbered (no Jc-Chunk header) cannot be seeked; reads from
// any offset are still exact.
func TestUnnumberedChunksAreReadFromTheStart(t *testing.T) {
	t.Parallel()
	const chunk = 1024
	f, blobs := blobsFixture(t, chunk)
	// The object as the earlier Put wrote it: full chunks under the
	// object's name, then its metadata.
	want := genBytes(0, 20*chunk+7)
	bucket := natsx.BucketMedia
	var chunks uint32
	for off := 0; off < len(want); off += chunk {
		if _, err := f.js.Publish(ctx10(t), "$O."+bucket+".C.legacy", want[off:min(off+chunk, len(want))]); err != nil {
			t.Fatal(err)
		}
		chunks++
	}
	sum := sha256.Sum256(want)
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: "legacy", Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunk}},
		Bucket:     bucket, NUID: "legacy", Size: uint64(len(want)), Chunks: chunks,
		Digest: "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:]),
	}
	data, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte("legacy")))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = data
	if _, err := f.js.PublishMsg(ctx10(t), m); err != nil {
		t.Fatal(err)
	}
	for _, rg := range [][2]int64{{0, int64(len(want))}, {chunk, 10}, {5*chunk + 3, 3 * chunk}, {int64(len(want)) - 1, 1}} {
		if got := readBlob(t, blobs, "legacy", rg[0], rg[1]); !bytes.Equal(got, want[rg[0]:rg[0]+rg[1]]) {
			t.Errorf("read %d+%d: %d bytes, not the stored ones", rg[0], rg[1], len(got))
		}
	}
}

// blobsFixture is a fixture with chunks of chunk bytes, and its Blobs.
func blobsFixture(t *testing.T, chunk int) (*fixture, objectstore.Blobs) {
	t.Helper()
	f := newFixture(t, objectstore.Config{ChunkSize: chunk}, nil)
	blobs, err := objectstore.NewJetStreamBlobs(f.nc, f.res.Media, objectstore.Config{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	return f, blobs
}

// readBlob reads n bytes of name from off through blobs alone.
func readBlob(t *testing.T, blobs objectstore.Blobs, name string, off, n int64) []byte {
	t.Helper()
	rd, err := blobs.Get(ctx10(t), name, off, n)
	if err != nil {
		t.Fatalf("blobs.Get(%s, %d, %d): %v", name, off, n, err)
	}
	defer rd.Close()
	got, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("blobs read %s %d+%d: %v", name, off, n, err)
	}
	return got
}

// shortReader yields at most n bytes a Read.
type shortReader struct {
	r io.Reader
	n int
}

func (s shortReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.n)]) }

// TestForeignObjectsAreReadFromTheStart: an object another tool wrote (the
// object store's own Put: chunks under a random NUID, as full as each read
// of its source was) cannot be seeked by chunk size; reads from any offset
// are still exact.
func TestForeignObjectsAreReadFromTheStart(t *testing.T) {
	t.Parallel()
	const chunk = 1024
	f, blobs := blobsFixture(t, chunk)
	want := genBytes(0, 20*chunk+7)
	meta := jetstream.ObjectMeta{Name: "foreign", Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunk}}
	// Reads of 700 bytes: every chunk holds 700, not 1,024.
	info, err := f.res.Media.Put(ctx10(t), meta, shortReader{bytes.NewReader(want), 700})
	if err != nil {
		t.Fatal(err)
	}
	if info.NUID == "foreign" || info.Chunks <= 21 {
		t.Fatalf("object store wrote %d chunks under %s; the test needs short chunks under a NUID of its own", info.Chunks, info.NUID)
	}
	for _, rg := range [][2]int64{{chunk, 10}, {5*chunk + 3, 3 * chunk}, {int64(len(want)) - 1, 1}} {
		if got := readBlob(t, blobs, "foreign", rg[0], rg[1]); !bytes.Equal(got, want[rg[0]:rg[0]+rg[1]]) {
			t.Errorf("read %d+%d: %d bytes, not the stored ones", rg[0], rg[1], len(got))
		}
	}
}

// BenchmarkRangeReadTail reads the last 100 bytes of a 32 MiB object
// (256 chunks of 128 KiB), as a player asking for bytes=-100 does.
func BenchmarkRangeReadTail(b *testing.B) {
	const size = 32 << 20
	f := newFixture(b, objectstore.Config{MaxSize: size}, nil)
	info := put(b, f.store, "alice", size)
	obj, err := f.store.Open(ctx10(b), "alice", info.ID)
	if err != nil {
		b.Fatal(err)
	}
	want := genBytes(size-100, 100)
	b.ReportAllocs()
	for b.Loop() {
		if got := read(b, obj, size-100, 100); !bytes.Equal(got, want) {
			b.Fatal("not the stored bytes")
		}
	}
}
