package gateway

import (
	"sync"
	"time"
)

// runnerKeep is how long a runner goroutine waits for another task after
// its last one before it ends.
const runnerKeep = time.Second

// runner runs the sessions' short tasks — a session's writer draining its
// queue, its worker running the frames read — on goroutines kept for
// runnerKeep after their last task. A goroutine started per task begins
// with the smallest stack and grows it (a copy) on every task, for the
// deep paths of writing a frame or storing a message; a kept goroutine has
// grown its stack already. Idle sessions still have none: the goroutines
// are shared by all sessions and outlive no burst by more than runnerKeep.
type runner struct {
	tasks chan func()
	stop  <-chan struct{}
	wg    *sync.WaitGroup // counts the runner's goroutines
}

func newRunner(stop <-chan struct{}, wg *sync.WaitGroup) *runner {
	return &runner{tasks: make(chan func()), stop: stop, wg: wg}
}

// run runs f on an idle runner goroutine, or on a new one when none is
// waiting. It never waits for f.
func (r *runner) run(f func()) {
	select {
	case r.tasks <- f:
	default:
		r.wg.Add(1)
		go r.work(f)
	}
}

// work runs f, then the tasks handed to it, until it has waited runnerKeep
// for one or stop is closed.
func (r *runner) work(f func()) {
	defer r.wg.Done()
	t := time.NewTimer(runnerKeep)
	defer t.Stop()
	for {
		f()
		t.Reset(runnerKeep)
		select {
		case f = <-r.tasks:
		case <-t.C:
			return
		case <-r.stop:
			return
		}
	}
}
