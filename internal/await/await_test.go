package await_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/await"
)

func TestTrueWaitsForTheCondition(t *testing.T) {
	var n atomic.Int32
	go func() {
		time.Sleep(50 * time.Millisecond)
		n.Store(1)
	}()
	await.True(t, 5*time.Second, "n is set", func() bool { return n.Load() == 1 })
}

// failing records a test's failure without ending the test calling it.
type failing struct {
	testing.TB
	failed bool
}

func (f *failing) Helper()               {}
func (f *failing) Fatalf(string, ...any) { f.failed = true; panic(f) }

func TestTrueFailsAfterTheTimeout(t *testing.T) {
	f := &failing{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != f {
				panic(r)
			}
		}()
		await.True(f, 30*time.Millisecond, "never", func() bool { return false })
	}()
	if !f.failed {
		t.Error("a condition that never held did not fail the test")
	}
}

func TestContextEndsAfterItsTimeAndWithTheTest(t *testing.T) {
	var ended context.Context
	t.Run("sub", func(t *testing.T) {
		ctx := await.Context(t, time.Hour)
		if ctx.Err() != nil {
			t.Fatalf("a new context is already over: %v", ctx.Err())
		}
		ended = ctx
		short := await.Context(t, 20*time.Millisecond)
		select {
		case <-short.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a 20 ms context did not end")
		}
	})
	if ended.Err() == nil {
		t.Error("a test's context outlived the test")
	}
}
