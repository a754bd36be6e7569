package gateway

import (
	"errors"
	"net/http"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/ring"
)

// Router tells which gateway owns a user: the consistent-hash ring of the
// live gateways (*ring.Tracker).
type Router interface {
	// Owner returns the gateway that owns user; ok is false while no
	// gateway is known (the registry is not loaded yet).
	Owner(user string) (m ring.Member, ok bool)
	// Changed returns a channel that is closed at the next change of
	// ownership.
	Changed() <-chan struct{}
}

var _ Router = (*ring.Tracker)(nil)

// errMoved closes the session of a user that another gateway owns now.
var errMoved = errors.New("gateway: the user is owned by another gateway")

// CodeWrongGateway is the error code of a 421 answer: the WebSocket was
// opened at a gateway that does not own the user while ownership is
// enforced. The error body names the owner (docs/protocol.md).
const CodeWrongGateway = "wrong_gateway"

// misdirected is the error body of a 421: the protocol's error body with
// the owner's id and WebSocket URL added.
type misdirected struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Gateway string `json:"gateway"`
		URL     string `json:"url"`
	} `json:"error"`
}

// owner returns the gateway that owns user and whether it is this one.
// Without a router, or while the ring is empty, every user is this
// gateway's: routing fails open, since any gateway can serve any user.
func (s *Server) owner(user string) (ring.Member, bool) {
	if s.router == nil {
		return ring.Member{}, true
	}
	m, ok := s.router.Owner(user)
	if !ok || m.ID == s.cfg.ID {
		return m, true
	}
	return m, false
}

// handleRoute answers GET /v1/route: the gateway that owns the caller and
// its WebSocket URL.
func (s *Server) handleRoute(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	m, mine := s.owner(c.User)
	if mine || m.URL == "" {
		writeJSON(w, http.StatusOK, map[string]string{"gateway": s.cfg.ID, "url": s.selfURL(r)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"gateway": m.ID, "url": m.URL})
}

// selfURL is this gateway's WebSocket URL: PublicURL, or built from the
// request's Host.
func (s *Server) selfURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	return scheme + "://" + r.Host + "/v1/ws"
}

// owned wraps the WebSocket handler: when ownership is enforced, a user
// owned by another gateway is answered 421 naming the owner, before any
// upgrade.
func (s *Server) owned(h func(http.ResponseWriter, *http.Request, auth.Claims)) func(http.ResponseWriter, *http.Request, auth.Claims) {
	return func(w http.ResponseWriter, r *http.Request, c auth.Claims) {
		if !s.cfg.EnforceOwnership || s.router == nil {
			h(w, r, c)
			return
		}
		changed := s.router.Changed()
		if m, mine := s.owner(c.User); !mine {
			s.m.Errors.WithLabelValues(CodeWrongGateway).Inc()
			var body misdirected
			body.Error.Code = CodeWrongGateway
			body.Error.Message = "this gateway does not serve user " + c.User + "; connect to gateway " + m.ID
			body.Error.Gateway, body.Error.URL = m.ID, m.URL
			writeJSON(w, http.StatusMisdirectedRequest, body)
			return
		}
		h(w, r, c)
		// The ring may have changed while the session was being set up,
		// after the check above and before the session was listed for
		// routeLoop: check it again.
		select {
		case <-changed:
			s.closeMoved()
		default:
		}
	}
}

// routeLoop closes the sessions of users this gateway no longer owns after
// every change of the ring, until Shutdown. It runs only when ownership is
// enforced.
func (s *Server) routeLoop() {
	defer s.wg.Done()
	changed := s.router.Changed()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-changed:
		}
		// Take the next change's channel before reading the ring.
		changed = s.router.Changed()
		if n := s.closeMoved(); n > 0 {
			s.log.Info("closed the sessions of users another gateway owns now", "sessions", n)
		}
	}
}

// closeMoved closes, with CloseMoved (4002), every session of a user that
// another gateway owns, and returns how many. Their clients ask /v1/route
// again and reconnect to the owner, resuming from their stored positions.
func (s *Server) closeMoved() int {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return 0
	}
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	n := 0
	for _, ss := range sessions {
		if _, mine := s.owner(ss.user); !mine && !ss.isClosing() {
			ss.Close(errMoved)
			n++
		}
	}
	return n
}
