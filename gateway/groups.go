package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/ident"
	"github.com/jetchat/jetchat/internal/wire"
)

// maxGroupBody caps the JSON body of the groups endpoints: a full list of
// 1024 longest user ids is about 68 KB, so a bigger body is not a request for
// a valid group (a list past the size limit still gets its 413 from Groups).
const maxGroupBody = 256 << 10

// groupsRoutes registers the groups endpoints.
func (s *Server) groupsRoutes() {
	s.mux.HandleFunc("POST /v1/groups", s.authed(s.withGroups(s.handleCreateGroup)))
	s.mux.HandleFunc("GET /v1/groups", s.authed(s.withGroups(s.handleListGroups)))
	s.mux.HandleFunc("GET /v1/groups/{id}", s.authed(s.withGroups(s.handleGetGroup)))
	s.mux.HandleFunc("POST /v1/groups/{id}/members", s.authed(s.withGroups(s.handleAddMembers)))
	s.mux.HandleFunc("DELETE /v1/groups/{id}/members/{user}", s.authed(s.withGroups(s.handleRemoveMember)))
}

// withGroups answers 503 when this node has no groups component, and bounds
// the request's storage calls.
func (s *Server) withGroups(h func(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims)) func(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	return func(w http.ResponseWriter, r *http.Request, c auth.Claims) {
		if s.groups == nil {
			s.writeCode(w, wire.CodeUnavailable, "groups are not available on this node")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		h(ctx, w, r, c)
	}
}

type createGroupRequest struct {
	Name    string   `json:"name"`
	Members []string `json:"members"`
}

type addMembersRequest struct {
	Users []string `json:"users"`
}

// handleCreateGroup serves POST /v1/groups {"name","members"}: 201 and the
// group.
func (s *Server) handleCreateGroup(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims) {
	var req createGroupRequest
	if !s.decodeGroupBody(w, r, &req) {
		return
	}
	g, err := s.groups.Create(ctx, c.User, req.Name, req.Members)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, groupJSON(g))
}

// handleListGroups serves GET /v1/groups: {"groups":[...]}.
func (s *Server) handleListGroups(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims) {
	gs, err := s.groups.List(ctx, c.User)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]*chat.Group, len(gs))
	for i := range gs {
		out[i] = groupJSON(&gs[i])
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": out})
}

// handleGetGroup serves GET /v1/groups/{id}, for members.
func (s *Server) handleGetGroup(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims) {
	id, ok := s.groupID(w, r)
	if !ok {
		return
	}
	g, err := s.groups.Get(ctx, c.User, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, groupJSON(g))
}

// handleAddMembers serves POST /v1/groups/{id}/members {"users"}: admins
// only; 200 and the group.
func (s *Server) handleAddMembers(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims) {
	id, ok := s.groupID(w, r)
	if !ok {
		return
	}
	var req addMembersRequest
	if !s.decodeGroupBody(w, r, &req) {
		return
	}
	if len(req.Users) == 0 {
		s.writeCode(w, wire.CodeBadRequest, `name the users to add: {"users":["..."]}`)
		return
	}
	g, err := s.groups.AddMembers(ctx, c.User, id, req.Users)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, groupJSON(g))
}

// handleRemoveMember serves DELETE /v1/groups/{id}/members/{user}: an admin
// removes a member, or a member leaves; 204.
func (s *Server) handleRemoveMember(ctx context.Context, w http.ResponseWriter, r *http.Request, c auth.Claims) {
	id, ok := s.groupID(w, r)
	if !ok {
		return
	}
	user := r.PathValue("user")
	if err := ident.User(user); err != nil {
		s.writeCode(w, wire.CodeBadRequest, err.Error())
		return
	}
	if err := s.groups.RemoveMember(ctx, c.User, id, user); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// groupID returns the {id} of the path; a malformed one cannot name a group
// and is answered 404 like an unknown one.
func (s *Server) groupID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !ident.ValidToken(id) {
		s.writeCode(w, wire.CodeNotFound, "no such group")
		return "", false
	}
	return id, true
}

// decodeGroupBody decodes a request's JSON object body into v, answering
// 400 (or 413 past maxGroupBody) when it cannot. Unknown fields are ignored.
func (s *Server) decodeGroupBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxGroupBody))
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	if err == nil {
		return true
	}
	var maxErr *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var msg string
	switch {
	case errors.As(err, &maxErr):
		s.writeCode(w, wire.CodeTooLarge, fmt.Sprintf("request body over %d bytes", maxGroupBody))
		return false
	case errors.Is(err, io.EOF):
		msg = "a JSON object body is required"
	case errors.As(err, &typeErr) && typeErr.Field != "":
		msg = fmt.Sprintf("malformed JSON body: field %q has the wrong type (name is a string; members and users are lists of strings)", typeErr.Field)
	case errors.As(err, &typeErr):
		msg = "malformed JSON body: a JSON object is required"
	default:
		msg = "malformed JSON body: " + err.Error()
	}
	s.writeCode(w, wire.CodeBadRequest, msg)
	return false
}

// groupJSON returns g with a non-nil member list, so that it encodes as
// "members":[] rather than null.
func groupJSON(g *chat.Group) *chat.Group {
	if g.Members == nil {
		c := *g
		c.Members = []chat.Member{}
		return &c
	}
	return g
}
