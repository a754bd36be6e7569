package objectstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natsx"
)

// Blobs is the byte storage under a Store: the one seam to replace to move
// media to an S3-compatible store. Access records, ids, limits, hashing and
// type checks stay in the Store; Blobs only moves bytes by name. Names are
// media ids (see ValidID).
type Blobs interface {
	// Put stores everything r yields, to EOF, under name. When r fails or
	// Put fails, nothing is left under name. Put must not read r whole
	// into memory. The Store aborts an upload by making r fail, so Put
	// must keep cleaning up after ctx ends.
	Put(ctx context.Context, name, contentType string, r io.Reader) error
	// Get streams length bytes of name from offset, holding a bounded
	// amount of memory whatever the object's size. The reader lives until
	// Close or until ctx ends. A missing name is ErrBlobNotFound.
	Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)
	// Delete removes name entirely; a missing name is not an error.
	Delete(ctx context.Context, name string) error
}

// jsBlobs keeps blobs in a JetStream object store, in its format (so that
// `nats object ls|info|get` work): an object is a series of chunk messages
// on $O.<bucket>.C.<nuid> plus a metadata message on
// $O.<bucket>.M.<base64(name)>.
//
// Writes do not use the object store's Put: that one picks a random NUID,
// which a node that dies mid-upload takes with it, stranding the chunks on
// a subject nobody knows. Here the NUID is the object's name, so the
// chunks of any upload, finished or not, can always be purged by name; and
// at most putWindow chunks are unacknowledged at a time.
//
// Reads do not use the object store's Get either: that one feeds a push
// consumer whose flow-control window grows to 32 MiB, all of which a slow
// download would hold in the gateway. Here reads are batched direct gets
// of the chunk subject: no consumer, at most readAhead chunks in memory.
type jsBlobs struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	obs     jetstream.ObjectStore
	chunk   int
	timeout time.Duration // bounds one request, one publish acknowledgement
	fetches chan struct{} // a slot per batch read in flight

	mu     sync.Mutex
	stream jetstream.Stream // the object store's stream, looked up once
	bucket string
}

const (
	// readAhead is how many chunks one batch read asks for.
	readAhead = 4
	// putWindow is how many chunks of one upload may await their
	// acknowledgement.
	putWindow = 8
)

// NewJetStreamBlobs returns Blobs that keep media in obs and read it over
// nc, with cfg's ChunkSize, MaxFetches and OpTimeout (which bounds each
// request to JetStream).
func NewJetStreamBlobs(nc *nats.Conn, obs jetstream.ObjectStore, cfg Config) (Blobs, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.OpTimeout))
	if err != nil {
		return nil, fmt.Errorf("objectstore: %w", err)
	}
	return &jsBlobs{
		nc: nc, js: js, obs: obs,
		chunk:   cfg.ChunkSize,
		timeout: cfg.OpTimeout,
		fetches: make(chan struct{}, cfg.MaxFetches),
	}, nil
}

func chunkSubject(bucket, nuid string) string { return "$O." + bucket + ".C." + nuid }

func metaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

// Put reads r one chunk at a time and publishes each chunk as it is read,
// every chunk full but the last and numbered (hdrChunk, for seeks),
// keeping putWindow chunk buffers; the metadata message, published last,
// makes the object visible. On any failure it waits for the chunks in
// flight and purges the object's subjects.
func (b *jsBlobs) Put(ctx context.Context, name, contentType string, r io.Reader) error {
	st, bucket, err := b.objStream(ctx)
	if err != nil {
		return err
	}
	subj := chunkSubject(bucket, name)
	var (
		bufs   [putWindow][]byte
		futs   [putWindow]jetstream.PubAckFuture
		h      = sha256.New()
		size   uint64
		chunks uint32
	)
	// settle waits for the acknowledgement of the chunk in slot i.
	settle := func(i int) error {
		f := futs[i]
		futs[i] = nil
		if f == nil {
			return nil
		}
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return fmt.Errorf("store chunk of %s: %w", name, err)
		}
	}
	fail := func(err error) error {
		// No chunk may land after the purge: wait for them all first
		// (each ends with its acknowledgement or its timeout).
		for i := range futs {
			settle(i)
		}
		if perr := b.purge(ctx, st, subj, metaSubject(bucket, name)); perr != nil {
			return errors.Join(err, perr)
		}
		return err
	}
	for i := 0; ; i = (i + 1) % putWindow {
		if err := settle(i); err != nil {
			return fail(err)
		}
		if bufs[i] == nil {
			bufs[i] = make([]byte, b.chunk)
		}
		n, rerr := io.ReadFull(r, bufs[i])
		if n > 0 {
			h.Write(bufs[i][:n])
			m := &nats.Msg{Subject: subj, Data: bufs[i][:n], Header: nats.Header{hdrChunk: {strconv.FormatUint(uint64(chunks), 10)}}}
			f, err := b.js.PublishMsgAsync(m)
			if err != nil {
				return fail(fmt.Errorf("store chunk of %s: %w", name, err))
			}
			futs[i] = f
			size += uint64(n)
			chunks++
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fail(rerr)
		}
	}
	for i := range futs {
		if err := settle(i); err != nil {
			return fail(err)
		}
	}
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{
			Name:    name,
			Headers: nats.Header{"Content-Type": []string{contentType}},
			Opts:    &jetstream.ObjectMetaOptions{ChunkSize: uint32(b.chunk)},
		},
		Bucket: bucket,
		NUID:   name,
		Size:   size,
		Chunks: chunks,
		Digest: jetstream.GetObjectDigestValue(h),
	}
	m := nats.NewMsg(metaSubject(bucket, name))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	if m.Data, err = json.Marshal(info); err != nil {
		return fail(err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	defer cancel()
	if _, err := b.js.PublishMsg(pctx, m); err != nil {
		return fail(fmt.Errorf("store metadata of %s: %w", name, err))
	}
	return nil
}

// purge removes every message of subjects. It runs even when ctx was
// cancelled: cleaning up is what is left to do then.
func (b *jsBlobs) purge(ctx context.Context, st jetstream.Stream, subjects ...string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	defer cancel()
	for _, subj := range subjects {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return fmt.Errorf("purge %s: %w", subj, err)
		}
	}
	return nil
}

// Get reads the object by batched direct gets of its chunk subject. The
// object store has no ranged reads: a read from an offset past the first
// chunk finds the chunk that holds it (seek) when the object was written
// here (numbered chunks, every one full but the last); for anything else
// the chunks before offset are fetched and dropped, a batch at a time.
func (b *jsBlobs) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	ictx, cancel := context.WithTimeout(ctx, b.timeout)
	info, err := b.info(ictx, name)
	cancel()
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrBlobNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get object %s: %w", name, err)
	}
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, fmt.Errorf("object %s is a link", name)
	}
	if offset+length > int64(info.Size) {
		return nil, fmt.Errorf("object %s has %d bytes, not %d+%d", name, info.Size, offset, length)
	}
	chunk := b.chunk
	if info.Opts != nil && info.Opts.ChunkSize > 0 {
		chunk = int(info.Opts.ChunkSize)
	}
	cr := &chunkReader{
		ctx:     ctx,
		b:       b,
		stream:  "OBJ_" + info.Bucket,
		subject: chunkSubject(info.Bucket, info.NUID),
		seq:     1,
		skip:    offset,
		left:    length,
		maxb:    readAhead * chunk,
	}
	if k := uint64(offset / int64(chunk)); k > 0 && length > 0 && info.NUID == name && k < uint64(info.Chunks) &&
		uint64(chunk)*uint64(info.Chunks-1) < info.Size && info.Size <= uint64(chunk)*uint64(info.Chunks) {
		// A seek that fails (an object stored before chunks were numbered,
		// a replica that lags) leaves the read to start at the first chunk.
		if seq, err := b.seek(ctx, cr.stream, cr.subject, k, uint64(info.Chunks)); err == nil {
			cr.seq, cr.skip = seq, offset-int64(k)*int64(chunk)
		} else if ctx.Err() != nil {
			return nil, fmt.Errorf("read object %s from %d: %w", name, offset, ctx.Err())
		}
	}
	if offset == 0 && length == int64(info.Size) {
		// A whole read checks the bytes against the stored digest.
		cr.digest, cr.want = sha256.New(), info.Digest
	}
	return cr, nil
}

// hdrChunk numbers a chunk of an object written here (0, 1, ...): what a
// seek reads. The object store's own readers ignore chunk headers.
const hdrChunk = "Jc-Chunk"

// maxProbes bounds the direct gets of one seek.
const maxProbes = 64

// seek returns the stream sequence of chunk k (from 0) of an object of n
// chunks on subject. The chunks are the subject's only messages, in order,
// but other objects' chunks may lie between them; each carries its number
// (hdrChunk). A direct get of the first chunk at or after a sequence thus
// says which chunk lies there. Chunk k lies at k or more sequences past
// chunk 0; each probe guesses its sequence from the chunks found so far (the
// density of the object's chunks in the stream), every other probe halves
// the range left, and each narrows it, so a seek takes one probe when the
// chunks are contiguous and a few dozen at worst.
//
// The number is read from the chunk itself, not inferred from what a
// replica holds after it (Nats-Num-Pending), so a replica that lags can
// make a seek fail but never find the wrong chunk.
func (b *jsBlobs) seek(ctx context.Context, stream, subject string, k, n uint64) (uint64, error) {
	type found struct{ seq, idx uint64 }
	probe := func(at uint64) (f found, ok bool, err error) {
		// A probe reads a chunk: it takes a fetch slot like a batch.
		select {
		case b.fetches <- struct{}{}:
			defer func() { <-b.fetches }()
		case <-ctx.Done():
			return found{}, false, ctx.Err()
		}
		pctx, cancel := context.WithTimeout(ctx, b.timeout)
		defer cancel()
		var num string
		res, err := natsx.GetBatch(pctx, b.nc, stream, natsx.BatchRequest{Subject: subject, Seq: at, Batch: 1}, func(m *nats.Msg) error {
			num = m.Header.Get(hdrChunk)
			return nil
		})
		if err != nil || res.Count == 0 {
			return found{}, false, err
		}
		idx, err := strconv.ParseUint(num, 10, 64)
		if err != nil || idx >= n {
			return found{}, false, fmt.Errorf("chunk at %d is numbered %q, of %d", res.Last, num, n)
		}
		return found{res.Last, idx}, true, nil
	}
	first, ok, err := probe(1)
	if err == nil && (!ok || first.idx != 0) {
		err = fmt.Errorf("the first chunk is missing")
	}
	if err != nil {
		return 0, fmt.Errorf("seek chunk %d: %w", k, err)
	}
	// Chunk k is at a sequence in [lo, hi]; below and above are the
	// nearest chunks found on either side (above.idx 0: none yet).
	lo, hi := first.seq+k, uint64(math.MaxUint64)
	below, above := first, found{}
	i := 0
	for ; i < maxProbes && lo <= hi; i++ {
		var at uint64
		switch {
		case i%2 == 1 && hi != math.MaxUint64:
			at = lo + (hi-lo)/2
		case above.idx != 0:
			at = below.seq + uint64(float64(k-below.idx)*float64(above.seq-below.seq)/float64(above.idx-below.idx))
		case below.idx != 0:
			at = below.seq + uint64(float64(k-below.idx)*float64(below.seq-first.seq)/float64(below.idx))
		default:
			at = lo
		}
		at = min(max(at, lo), hi)
		f, ok, err := probe(at)
		switch {
		case err != nil:
			return 0, fmt.Errorf("seek chunk %d: %w", k, err)
		case !ok: // no chunk at or after at
			hi = at - 1
		case f.idx == k:
			return f.seq, nil
		case f.idx < k: // chunks f.idx+1..k come after f.seq
			below, lo = f, f.seq+(k-f.idx)
		default: // chunks k..f.idx-1 come before at
			above, hi = f, at-(f.idx-k)
		}
	}
	return 0, fmt.Errorf("seek chunk %d of %d: not found after %d probes", k, n, i+1)
}

// Delete purges the object's chunks and its metadata message, so a removed
// object leaves nothing in the stream. It works on an upload that never
// finished (no metadata) as well.
func (b *jsBlobs) Delete(ctx context.Context, name string) error {
	st, bucket, err := b.objStream(ctx)
	if err != nil {
		return err
	}
	subjects := []string{chunkSubject(bucket, name), metaSubject(bucket, name)}
	// An object written by other tools keeps its chunks under a random NUID.
	info, err := b.obs.GetInfo(ctx, name, jetstream.GetObjectInfoShowDeleted())
	switch {
	case err == nil && info.NUID != "" && info.NUID != name:
		subjects = append(subjects, chunkSubject(bucket, info.NUID))
	case err != nil && !errors.Is(err, jetstream.ErrObjectNotFound):
		return fmt.Errorf("delete object %s: %w", name, err)
	}
	// Chunks first: without its metadata an object is already invisible,
	// and a failure part way leaves it to the next attempt.
	return b.purge(ctx, st, subjects...)
}

// info returns the object's metadata. The object store reads it with a
// direct get, which a replica that lags the leader may answer: an object
// stored a moment ago (an upload at another gateway) is asked of the
// stream's leader before the answer is no.
func (b *jsBlobs) info(ctx context.Context, name string) (*jetstream.ObjectInfo, error) {
	info, err := b.obs.GetInfo(ctx, name)
	if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return info, err
	}
	st, bucket, err := b.objStream(ctx)
	if err != nil {
		return nil, err
	}
	m, err := natsx.LeaderLast(ctx, b.nc, st.CachedInfo().Config.Name, metaSubject(bucket, name))
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", name, err)
	}
	if m == nil {
		return nil, jetstream.ErrObjectNotFound
	}
	var li jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &li); err != nil {
		return nil, fmt.Errorf("object %s: metadata: %w", name, err)
	}
	if li.Deleted {
		return nil, jetstream.ErrObjectNotFound
	}
	return &li, nil
}

// objStream returns the object store's stream and bucket name.
func (b *jsBlobs) objStream(ctx context.Context) (jetstream.Stream, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stream != nil {
		return b.stream, b.bucket, nil
	}
	st, err := b.obs.Status(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("object store status: %w", err)
	}
	s, err := b.js.Stream(ctx, "OBJ_"+st.Bucket())
	if err != nil {
		return nil, "", fmt.Errorf("object store stream: %w", err)
	}
	b.stream, b.bucket = s, st.Bucket()
	return s, b.bucket, nil
}

// chunkReader serves a byte range of an object from its chunk messages,
// fetched readAhead chunks at a time.
type chunkReader struct {
	ctx     context.Context
	b       *jsBlobs
	stream  string
	subject string
	seq     uint64   // next stream sequence to ask from
	chunks  [][]byte // fetched, not yet served
	cur     []byte   // the chunk being served
	skip    int64    // bytes still to drop before the range
	left    int64    // bytes of the range still to serve
	maxb    int      // bytes one batch asks for
	digest  hash.Hash
	want    string // stored digest, for whole reads
	err     error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		r.err = r.verify()
		if r.err == nil {
			r.err = io.EOF
		}
		r.chunks, r.cur = nil, nil
		return 0, r.err
	}
	for len(r.cur) == 0 {
		if len(r.chunks) == 0 {
			if err := r.fetch(); err != nil {
				r.err = err
				return 0, err
			}
		}
		r.cur, r.chunks = r.chunks[0], r.chunks[1:]
		if r.skip > 0 {
			n := min(r.skip, int64(len(r.cur)))
			r.cur, r.skip = r.cur[n:], r.skip-n
		}
	}
	n := copy(p[:min(int64(len(p)), r.left)], r.cur)
	r.cur, r.left = r.cur[n:], r.left-int64(n)
	if r.digest != nil {
		r.digest.Write(p[:n])
	}
	return n, nil
}

// fetch reads the next batch of chunks.
func (r *chunkReader) fetch() error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	select {
	case r.b.fetches <- struct{}{}:
		defer func() { <-r.b.fetches }()
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.b.timeout)
	defer cancel()
	req := natsx.BatchRequest{Subject: r.subject, Seq: r.seq, Batch: readAhead, MaxBytes: r.maxb}
	res, err := natsx.GetBatch(ctx, r.b.nc, r.stream, req, func(m *nats.Msg) error {
		r.chunks = append(r.chunks, m.Data)
		return nil
	})
	if err != nil {
		return err
	}
	if res.Count > 0 {
		r.seq = res.Last + 1
		return nil
	}
	// A replica that lags the leader may have answered: ask the leader.
	m, err := natsx.LeaderNext(ctx, r.b.nc, r.stream, r.subject, r.seq)
	if err != nil {
		return err
	}
	if m == nil {
		return fmt.Errorf("object ended %d bytes early (removed while read?): %w", r.left, io.ErrUnexpectedEOF)
	}
	r.chunks = append(r.chunks, m.Data)
	r.seq = m.Seq + 1
	return nil
}

// verify compares a whole read with the stored digest.
func (r *chunkReader) verify() error {
	if r.digest == nil || r.want == "" {
		return nil
	}
	want, err := jetstream.DecodeObjectDigest(r.want)
	if err != nil {
		return err
	}
	if string(r.digest.Sum(nil)) != string(want) {
		return jetstream.ErrDigestMismatch
	}
	return nil
}

// Close drops what is buffered; no request is outstanding between Reads.
func (r *chunkReader) Close() error {
	r.chunks, r.cur = nil, nil
	if r.err == nil {
		r.err = errors.New("read after close")
	}
	return nil
}
