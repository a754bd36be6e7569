//go:build !linux

package gateway

// poller is Linux's (poller_linux.go); elsewhere a session waits for its
// next bytes in its reader goroutine.
type poller struct{}

func newPoller() (*poller, error)    { return nil, nil }
func (p *poller) run() error         { return nil }
func (p *poller) close()             {}
func (p *poller) park(*session) bool { return false }
func (p *poller) forget(*session)    {}
