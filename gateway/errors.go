package gateway

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/jetchat/jetchat/internal/wire"
)

// codeOf maps a component error to a protocol error code (wire.CodeOf).
func codeOf(err error) string { return wire.CodeOf(err) }

// statusOf is the HTTP status of a code.
func statusOf(code string) int {
	switch code {
	case wire.CodeBadRequest:
		return http.StatusBadRequest
	case wire.CodeUnauthorized:
		return http.StatusUnauthorized
	case wire.CodeForbidden:
		return http.StatusForbidden
	case wire.CodeNotFound:
		return http.StatusNotFound
	case wire.CodeConflict:
		return http.StatusConflict
	case wire.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case wire.CodeRateLimited:
		return http.StatusTooManyRequests
	case wire.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// publicMessage is the client-safe text of err (wire.PublicMessage).
func publicMessage(code string, err error) string { return wire.PublicMessage(code, err) }

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers an HTTP request with the JSON error body of the protocol.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := codeOf(err)
	s.writeCode(w, code, publicMessage(code, err))
	if code == wire.CodeInternal {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	}
}

func (s *Server) writeCode(w http.ResponseWriter, code, message string) {
	s.m.Errors.WithLabelValues(code).Inc()
	writeJSON(w, statusOf(code), errorBody{Error: errorDetail{Code: code, Message: message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("write response", "err", err)
	}
}
