package registry

import "sync"

// Kind is what happened to a gateway.
type Kind int

const (
	// Joined: an incarnation entered the live set.
	Joined Kind = iota + 1
	// Left: an incarnation left the live set.
	Left
)

func (k Kind) String() string {
	switch k {
	case Joined:
		return "joined"
	case Left:
		return "left"
	}
	return "unknown"
}

// Event is a change of the live set.
type Event struct {
	Kind    Kind
	Gateway Gateway
	// Expired is set on a Left event when the gateway did not stop cleanly:
	// its entry expired, or a new incarnation replaced it. Gateway.Heartbeat
	// is then its last heartbeat; after a clean stop, the time of the stop.
	Expired bool
}

// Subscribe returns a channel of every change of the live set from now on,
// in order, and a function that ends the subscription (and closes the
// channel). Events queue up in memory while the receiver is busy; none is
// dropped. The channel is also closed when Run returns.
func (r *Registry) Subscribe() (<-chan Event, func()) {
	s := &subscription{ch: make(chan Event), wake: make(chan struct{}, 1), done: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		close(s.ch)
		return s.ch, func() {}
	}
	r.subs[s] = struct{}{}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		s.pump()
	}()
	return s.ch, func() {
		r.mu.Lock()
		delete(r.subs, s)
		r.mu.Unlock()
		s.stop()
	}
}

// pushLocked queues evs for every subscriber, with r.mu held by the change
// of the live set that made them: a Subscribe, which takes r.mu too, comes
// either before that change (and gets its events) or after it (and sees
// its result in State and Live instead).
func (r *Registry) pushLocked(evs []Event) {
	if len(evs) == 0 {
		return
	}
	for s := range r.subs {
		s.push(evs)
	}
}

// logEvents logs the changes of the live set.
func (r *Registry) logEvents(evs []Event) {
	for _, ev := range evs {
		r.log.Info("gateway "+ev.Kind.String(), "id", ev.Gateway.ID, "url", ev.Gateway.URL,
			"started", ev.Gateway.Started, "heartbeat", ev.Gateway.Heartbeat, "expired", ev.Expired)
	}
}

// closeSubs ends every subscription and waits for their pumps.
func (r *Registry) closeSubs() {
	r.mu.Lock()
	r.closed = true
	subs := r.subs
	r.subs = map[*subscription]struct{}{}
	r.mu.Unlock()
	for s := range subs {
		s.stop()
	}
	r.wg.Wait()
}

// subscription is one subscriber's unbounded queue and the goroutine that
// feeds its channel.
type subscription struct {
	ch   chan Event
	wake chan struct{}
	done chan struct{}
	once sync.Once

	mu sync.Mutex
	q  []Event
}

func (s *subscription) push(evs []Event) {
	s.mu.Lock()
	s.q = append(s.q, evs...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) stop() { s.once.Do(func() { close(s.done) }) }

func (s *subscription) pump() {
	defer close(s.ch)
	for {
		select {
		case <-s.done:
			return
		case <-s.wake:
		}
		s.mu.Lock()
		q := s.q
		s.q = nil
		s.mu.Unlock()
		for _, ev := range q {
			select {
			case s.ch <- ev:
			case <-s.done:
				return
			}
		}
	}
}
