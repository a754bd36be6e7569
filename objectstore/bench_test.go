package objectstore_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/objectstore"
)

// The benchmarks run the Store against an embedded nats-server in the same
// process (file storage, interval sync), so both share the machine's cores.
//
//	go test ./objectstore/ -run '^$' -bench . -benchtime=10x

var benchSizes = []int64{1 << 20, 50 << 20}

func BenchmarkPut(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			f := newFixture(b, objectstore.Config{MaxSize: 64 << 20}, nil)
			ctx := context.Background()
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				info, err := f.store.Put(ctx, "alice", "video/mp4", newGen(size))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				// Keep the stream small between rounds.
				if err := f.res.Media.Delete(ctx, info.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func BenchmarkGet(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			f := newFixture(b, objectstore.Config{MaxSize: 64 << 20}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			info := put(b, f.store, "alice", size)
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				download(b, ctx, f.store, info.ID, size)
			}
		})
	}
}

// BenchmarkGetConcurrent downloads one object by 100 clients at once; each
// iteration is one round of 100 downloads.
func BenchmarkGetConcurrent(b *testing.B) {
	const clients = 100
	const size = 1 << 20
	f := newFixture(b, objectstore.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	info := put(b, f.store, "alice", size)
	b.SetBytes(clients * size)
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() { download(b, ctx, f.store, info.ID, size) })
		}
		wg.Wait()
	}
}

func download(b *testing.B, ctx context.Context, s *objectstore.Store, id string, size int64) {
	obj, err := s.Open(ctx, "alice", id)
	if err != nil {
		b.Error(err)
		return
	}
	rd, err := obj.NewReader(ctx, 0, size)
	if err != nil {
		b.Error(err)
		return
	}
	defer rd.Close()
	if n, err := io.Copy(io.Discard, rd); err != nil || n != size {
		b.Errorf("download: %d bytes, %v", n, err)
	}
}
