package natsx

import (
	"net"
	"time"

	"github.com/nats-io/nats.go"
)

// StoreConnOptions are the options, beyond the node's own (server, name,
// credentials), of the delivery service's connection, which message stores
// go through. A message store must land while its send waits for it, or
// never: a send that gives up answers the client "unavailable", and the
// client's repeat, on this node or another, is stored anew once the message
// log's own duplicate window has passed. So this connection
//
//   - keeps no reconnect buffer: a store made while it reconnects fails at
//     once (and is retried within the send) instead of waiting in a buffer
//     to be stored whenever the connection comes back. What it had not
//     written when it dropped is dropped with it (nats.go starts a new
//     connection with empty buffers);
//   - notices a server that stopped answering within seconds (pings every
//     storePingInterval, two unanswered close it), not the default minutes;
//   - closes its TCP connections without lingering: bytes the server has
//     not acknowledged are discarded, not sent on after the close.
//
// A store whose outcome is still unknown when its send gives up is found
// by reading the log afterwards (delivery's send index does).
func StoreConnOptions() []nats.Option {
	return []nats.Option{
		nats.ReconnectBufSize(-1),
		nats.PingInterval(storePingInterval),
		nats.MaxPingsOutstanding(2),
		nats.SetCustomDialer(noLingerDialer{}),
	}
}

// storePingInterval is how often the connection pings its server.
const storePingInterval = 2 * time.Second

// noLingerDialer dials TCP connections that discard unsent bytes on close.
type noLingerDialer struct{}

func (noLingerDialer) Dial(network, address string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}
	c, err := d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetLinger(0); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}
