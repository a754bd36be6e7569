package gateway

import (
	"sync"
	"testing"
	"time"
)

// TestRunnerKeepsGoroutinesBriefly: a task never waits for a busy one; a
// finished task's goroutine takes the next task; idle goroutines end after
// runnerKeep, and at once when stopped.
func TestRunnerKeepsGoroutinesBriefly(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	r := newRunner(stop, &wg)

	// A task blocked does not hold up the next.
	release := make(chan struct{})
	ran := make(chan struct{})
	r.run(func() { <-release })
	r.run(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a task waited for a busy one")
	}
	close(release)

	// The two goroutines now wait for tasks: a hand-over succeeds.
	handed := 0
	for deadline := time.Now().Add(5 * time.Second); handed < 2 && time.Now().Before(deadline); {
		done := make(chan struct{})
		select {
		case r.tasks <- func() { close(done) }:
			<-done
			handed++
		default:
			time.Sleep(time.Millisecond)
		}
	}
	if handed < 2 {
		t.Fatalf("%d tasks handed to waiting goroutines, want 2", handed)
	}

	// Left idle, they end after runnerKeep.
	ended := make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(runnerKeep + 5*time.Second):
		t.Fatal("idle runner goroutines did not end")
	}

	// Stopped, an idle goroutine ends at once.
	r.run(func() {})
	close(stop)
	ended = make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(runnerKeep / 2):
		t.Fatal("a stopped runner's goroutine did not end at once")
	}
}
