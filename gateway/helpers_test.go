package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/await"
)

// next waits for the next frame of c.
func next(t *testing.T, c *client.Conn) *client.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for a frame: %v", err)
	}
	return f
}

// nextMessage waits for the next frame and requires a message.
func nextMessage(t *testing.T, c *client.Conn) *client.Message {
	t.Helper()
	f := next(t, c)
	if f.Message == nil {
		t.Fatalf("got %s frame %s, want a message", f.Type, f.Raw)
	}
	return f.Message
}

// nextReceipt waits for the next frame and requires a receipt.
func nextReceipt(t *testing.T, c *client.Conn) *client.Receipt {
	t.Helper()
	f := next(t, c)
	if f.Receipt == nil {
		t.Fatalf("got %s frame %s, want a receipt", f.Type, f.Raw)
	}
	return f.Receipt
}

// quiet checks that c receives nothing for d.
func quiet(t *testing.T, c *client.Conn, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if f, err := c.Next(ctx); err == nil {
		t.Fatalf("got unexpected %s frame %s", f.Type, f.Raw)
	}
}

func send(t *testing.T, c *client.Conn, to, body string) client.Sent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Send(ctx, to, body)
	if err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
	return s
}

// ctx10 bounds one step of a test (await.Step); testCtx a whole test's
// steps (await.Whole).
func ctx10(t *testing.T) context.Context   { return await.Context(t, await.Step) }
func testCtx(t *testing.T) context.Context { return await.Context(t, await.Whole) }
