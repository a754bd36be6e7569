//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller waits for the next bytes of idle sessions — those with nothing
// buffered to read — with one epoll instance for the whole gateway, so an
// idle session has no goroutine at all: its reader parks the session here
// and ends, and the poller starts a fresh reader when bytes (or the peer's
// close) arrive. The connection stays registered with Go's own poller too;
// this one only says when to read.
type poller struct {
	epfd int
	stop int // eventfd: its event ends run

	stopOnce sync.Once

	mu   sync.Mutex
	next uint32
	byID map[uint32]*session
	dead bool // run has failed: nothing parks
}

// newPoller returns a poller, or nil when the system refuses one (the
// sessions then wait for bytes in their readers, as on other systems).
func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0} // id 0: the stop event
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return &poller{epfd: epfd, stop: efd, byID: map[uint32]*session{}}, nil
}

// run wakes the sessions whose connections became readable, until close.
// If epoll fails, it wakes every parked session and refuses to park more
// (their readers wait as on other systems), and returns the error.
func (p *poller) run() error {
	defer unix.Close(p.epfd)
	defer unix.Close(p.stop)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			p.mu.Lock()
			p.dead = true
			parked := make([]*session, 0, len(p.byID))
			for _, ss := range p.byID {
				parked = append(parked, ss)
			}
			p.mu.Unlock()
			for _, ss := range parked {
				ss.wake()
			}
			return fmt.Errorf("epoll: %w", err)
		}
		for _, ev := range events[:n] {
			if ev.Fd == 0 {
				return nil
			}
			p.mu.Lock()
			ss := p.byID[uint32(ev.Fd)]
			p.mu.Unlock()
			if ss != nil {
				ss.wake()
			}
		}
	}
}

// close ends run (which then closes the descriptors); later calls do
// nothing.
func (p *poller) close() {
	p.stopOnce.Do(func() {
		one := [8]byte{1}
		unix.Write(p.stop, one[:])
	})
}

// park registers the session's connection to wake the session when it
// becomes readable. It reports false when it cannot (then the caller waits
// for bytes itself). Only a session's reader parks it, under parkMu.
func (p *poller) park(ss *session) bool {
	sc, ok := ss.cork.Conn.(syscall.Conn)
	if !ok {
		return false // not a plain socket (a test's pipe, TLS)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return false
	}
	if ss.pollID == 0 {
		for {
			p.next++
			if _, used := p.byID[p.next]; p.next != 0 && !used {
				break
			}
		}
		ss.pollID = p.next
		p.byID[ss.pollID] = ss
	}
	p.mu.Unlock()
	var cerr error
	// Control keeps the descriptor open (not reused by another
	// connection) while the registration changes. Level-triggered: bytes
	// that came before it wake the session at once.
	err = raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(ss.pollID)}
		op := unix.EPOLL_CTL_MOD
		if !ss.armed {
			op = unix.EPOLL_CTL_ADD
		}
		cerr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		if cerr == nil {
			ss.armed = true
		}
	})
	return err == nil && cerr == nil
}

// forget drops an ended session. Its connection is closed, which removed it
// from the epoll set.
func (p *poller) forget(ss *session) {
	p.mu.Lock()
	if ss.pollID != 0 {
		delete(p.byID, ss.pollID)
	}
	p.mu.Unlock()
}
