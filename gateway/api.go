package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/ident"
	"github.com/jetchat/jetchat/internal/wire"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// maxHistoryLimit is the largest page of GET /v1/messages.
const maxHistoryLimit = 200

// handleHistory serves GET /v1/messages?with=USER (or group=ID).
func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	q := r.URL.Query()
	hq := chat.HistoryQuery{With: q.Get("with"), Group: q.Get("group"), Before: q.Get("before"), Limit: 50}
	switch {
	case hq.With != "" && hq.Group != "":
		s.writeCode(w, wire.CodeBadRequest, "give either with or group, not both")
		return
	case hq.With == "" && hq.Group == "":
		s.writeCode(w, wire.CodeBadRequest, "give with=USER or group=ID")
		return
	case hq.With != "":
		if err := ident.User(hq.With); err != nil {
			s.writeCode(w, wire.CodeBadRequest, err.Error())
			return
		}
	case !ident.ValidToken(hq.Group):
		s.writeCode(w, wire.CodeBadRequest, "invalid group id")
		return
	}
	if hq.Before != "" && !ident.ValidToken(hq.Before) {
		s.writeCode(w, wire.CodeBadRequest, "invalid before id")
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxHistoryLimit {
			s.writeCode(w, wire.CodeBadRequest, "limit must be a number from 1 to 200")
			return
		}
		hq.Limit = n
	}
	msgs, err := s.delivery.History(r.Context(), c.User, hq)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if msgs == nil {
		msgs = chat.History{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs})
}

// handleStatus serves GET /v1/messages/{id}: the status per recipient, for
// the sender only.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	id := r.PathValue("id")
	if !ident.ValidToken(id) {
		s.writeCode(w, wire.CodeNotFound, "no such message")
		return
	}
	st, err := s.delivery.Status(r.Context(), c.User, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
