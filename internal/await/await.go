// Package await is for tests: it waits for a condition that something
// running in the background makes true.
package await

import (
	"context"
	"testing"
	"time"
)

// True polls cond until it holds, and fails the test when it still does
// not after timeout.
func True(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Step bounds one step of a test: a call that hangs fails within it.
const Step = 10 * time.Second

// Whole bounds a whole test's sequence of steps. It is generous, because a
// test is not a timing: on a slow or busy machine many steps may together
// take more than one Step while none of them hangs.
const Whole = 2 * time.Minute

// Context returns a context that ends after d, or when the test ends: the
// bound of a test's call (Step), or of a whole test's steps (Whole).
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
