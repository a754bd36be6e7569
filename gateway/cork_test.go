package gateway

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// deadlineConn counts the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	sets int
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.sets++
	return c.Conn.SetWriteDeadline(t)
}

// TestCorkConnSetsEachWriteDeadlineOnce: gorilla sets the write deadline
// before every frame; the connection passes on only a deadline that is not
// already in force, and the deadline in force still applies.
func TestCorkConnSetsEachWriteDeadlineOnce(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { // the peer reads everything
		buf := make([]byte, 64)
		for {
			if _, err := b.Read(buf); err != nil {
				return
			}
		}
	}()
	dc := &deadlineConn{Conn: a}
	c := &corkConn{Conn: dc}

	past := time.Now().Add(-time.Second)
	for range 3 {
		if err := c.SetWriteDeadline(past); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write past the deadline: %v, want a timeout", err)
		}
	}
	if dc.sets != 1 {
		t.Errorf("the same deadline three times reached the connection %d times, want once", dc.sets)
	}
	future := time.Now().Add(time.Minute)
	c.SetWriteDeadline(future)
	c.SetWriteDeadline(future)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("write before the deadline: %v", err)
	}
	if dc.sets != 2 {
		t.Errorf("a new deadline, twice: %d settings in all, want 2", dc.sets)
	}
	// SetDeadline goes around SetWriteDeadline, and is recorded too.
	c.SetDeadline(past)
	c.SetWriteDeadline(future)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("write after the deadline was set back to the future: %v", err)
	}
	if dc.sets != 3 {
		t.Errorf("after SetDeadline: %d settings in all, want 3", dc.sets)
	}
}
