package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/ident"
	"github.com/jetchat/jetchat/internal/wire"
)

// maxPrivacyBody caps the body of PUT /v1/privacy.
const maxPrivacyBody = 4 << 10

// presenceRoutes registers the presence endpoints:
//
//	GET /v1/presence/{user}
//	    200 {"user":"bob","online":false,"last_seen":1700000000000}: the
//	    user's presence as the caller may see it. last_seen (ms) is omitted
//	    while the user is online, and when the user hides it from others.
//	    An invalid user id: 400. A user never seen: offline, no last_seen.
//
//	PUT /v1/privacy {"last_seen":"everyone"|"nobody"}
//	    200 {"last_seen":"nobody"}: who may see the caller's last-seen
//	    ("everyone" by default; with "nobody" others still see online but
//	    never last_seen, the user itself still sees its own). Another value,
//	    or a malformed body: 400.
//
// The setting lives at /v1/privacy rather than under /v1/presence/ so that
// it can never be mistaken for the presence of a user with that id. Without
// a presence component on the node both answer 503.
func (s *Server) presenceRoutes() {
	s.mux.HandleFunc("GET /v1/presence/{user}", s.authed(s.withPresence(s.handleGetPresence)))
	s.mux.HandleFunc("PUT /v1/privacy", s.authed(s.withPresence(s.handleSetPrivacy)))
}

// withPresence answers 503 when this node has no presence component, and
// bounds the request's storage calls.
func (s *Server) withPresence(h func(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims)) func(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	return func(w http.ResponseWriter, r *http.Request, c auth.Claims) {
		if s.presence == nil {
			s.writeCode(w, wire.CodeUnavailable, "presence is not available on this node")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		h(ctx, w, r, c)
	}
}

// handleGetPresence serves GET /v1/presence/{user}.
func (s *Server) handleGetPresence(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims) {
	user := r.PathValue("user")
	if err := ident.User(user); err != nil {
		s.writeCode(w, wire.CodeBadRequest, err.Error())
		return
	}
	st, err := s.presence.Get(ctx, c.User, user)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	st.User = user
	writeJSON(w, http.StatusOK, st)
}

type privacyJSON struct {
	LastSeen string `json:"last_seen"`
}

// handleSetPrivacy serves PUT /v1/privacy.
func (s *Server) handleSetPrivacy(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims) {
	var req privacyJSON
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPrivacyBody))
	if err := dec.Decode(&req); err != nil {
		var maxErr *http.MaxBytesError
		switch {
		case errors.As(err, &maxErr):
			s.writeCode(w, wire.CodeTooLarge, "request body too large")
		case errors.Is(err, io.EOF):
			s.writeCode(w, wire.CodeBadRequest, `a JSON body is required: {"last_seen":"everyone"} or {"last_seen":"nobody"}`)
		default:
			s.writeCode(w, wire.CodeBadRequest, `malformed JSON body; send {"last_seen":"everyone"} or {"last_seen":"nobody"}`)
		}
		return
	}
	if req.LastSeen != "everyone" && req.LastSeen != "nobody" {
		s.writeCode(w, wire.CodeBadRequest, `last_seen must be "everyone" or "nobody"`)
		return
	}
	if err := s.presence.SetLastSeenPrivacy(ctx, c.User, req.LastSeen); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}
