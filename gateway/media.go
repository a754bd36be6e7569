package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/wire"
)

// mediaRoutes registers the media endpoints.
func (s *Server) mediaRoutes() {
	s.mux.HandleFunc("POST /v1/media", s.authed(s.handleMediaUpload))
	// A GET pattern also serves HEAD.
	s.mux.HandleFunc("GET /v1/media/{id}", s.authed(s.handleMediaDownload))
}

// mediaLimits is implemented by media stores that publish their limits
// (objectstore.Store does). The gateway then refuses an upload whose
// declared length is over the limit before reading it, cuts a streamed one
// off at the limit, and gives uploads and downloads their own deadlines in
// place of the HTTP server's (a 100 MiB video takes a while on a phone).
type mediaLimits interface {
	MaxSize() int64
	UploadTimeout() time.Duration
	DownloadTimeout() time.Duration
}

func (s *Server) handleMediaUpload(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	if s.media == nil {
		s.writeCode(w, wire.CodeUnavailable, "media is not available on this node")
		return
	}
	ct := r.Header.Get("Content-Type")
	if strings.TrimSpace(ct) == "" {
		s.writeCode(w, wire.CodeBadRequest, "a Content-Type header naming the media type is required")
		return
	}
	body := r.Body
	if lim, ok := s.media.(mediaLimits); ok {
		max := lim.MaxSize()
		if r.ContentLength > max {
			s.writeCode(w, wire.CodeTooLarge, "the upload exceeds the media size limit of "+strconv.FormatInt(max, 10)+" bytes")
			return
		}
		// MaxBytesReader also makes the server close the connection after
		// answering, rather than read the rest of an oversized body.
		body = http.MaxBytesReader(w, r.Body, max)
		if t := lim.UploadTimeout(); t > 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(t))
		}
	}
	info, err := s.media.Put(r.Context(), c.User, ct, body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, info)
}

func (s *Server) handleMediaDownload(w http.ResponseWriter, r *http.Request, c auth.Claims) {
	if s.media == nil {
		s.writeCode(w, wire.CodeUnavailable, "media is not available on this node")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	obj, err := s.media.Open(ctx, c.User, r.PathValue("id"))
	cancel()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	info := obj.Info()
	etag := `"` + info.SHA256 + `"`
	h := w.Header()
	if etagMatch(r.Header.Get("If-None-Match"), etag) {
		h.Set("ETag", etag)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	status, offset, length, crange := http.StatusOK, int64(0), info.Size, ""
	if rh := r.Header.Get("Range"); rh != "" && ifRange(r.Header.Get("If-Range"), etag) {
		start, n, ok, satisfiable := parseRange(rh, info.Size)
		switch {
		case ok && !satisfiable:
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(info.Size, 10))
			s.m.Errors.WithLabelValues(wire.CodeBadRequest).Inc()
			writeJSON(w, http.StatusRequestedRangeNotSatisfiable, errorBody{Error: errorDetail{
				Code: wire.CodeBadRequest, Message: "the range is outside the media (" + strconv.FormatInt(info.Size, 10) + " bytes)"}})
			return
		case ok:
			status, offset, length = http.StatusPartialContent, start, n
			crange = "bytes " + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(start+n-1, 10) + "/" + strconv.FormatInt(info.Size, 10)
		}
	}
	var rd io.ReadCloser
	if r.Method != http.MethodHead {
		if lim, ok := s.media.(mediaLimits); ok && lim.DownloadTimeout() > 0 {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(lim.DownloadTimeout()))
		}
		if rd, err = obj.NewReader(r.Context(), offset, length); err != nil {
			s.writeError(w, r, err)
			return
		}
		defer rd.Close()
	}
	h.Set("Content-Type", info.MIME)
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	if crange != "" {
		h.Set("Content-Range", crange)
	}
	// The bytes under an id never change; only those allowed may fetch them.
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	// Never let a browser reinterpret an upload (say, as HTML).
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	w.WriteHeader(status)
	if rd == nil {
		return
	}
	if _, err := io.Copy(w, rd); err != nil && !errors.Is(err, context.Canceled) {
		// The status is sent; a body shorter than Content-Length tells the
		// client that the download broke.
		s.log.Debug("media download cut short", "media_id", info.ID, "user_id", c.User, "err", err)
	}
}

// parseRange reads a Range header against an object of size bytes. ok is
// false when the header is to be ignored (malformed, not bytes, or several
// ranges: the whole object is served). Otherwise satisfiable tells whether
// the range overlaps the object, and start and n are its clamped bounds.
func parseRange(h string, size int64) (start, n int64, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found {
		return 0, 0, false, false
	}
	spec = strings.TrimSpace(spec)
	if strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix: the last N bytes
		suffix, err := strconv.ParseInt(last, 10, 64)
		if err != nil || suffix < 0 {
			return 0, 0, false, false
		}
		if suffix == 0 || size == 0 {
			return 0, 0, true, false
		}
		suffix = min(suffix, size)
		return size - suffix, suffix, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 {
		return 0, 0, false, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false, false
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, 0, true, false
	}
	return a, b - a + 1, true, true
}

// etagMatch reports whether an If-None-Match header names etag (weak
// comparison, as RFC 9110 asks for If-None-Match) or is "*".
func etagMatch(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// ifRange reports whether a Range may be honoured under an If-Range header:
// absent, or naming the current (strong) entity tag. A date form is not
// trusted (the ETag is what identifies the bytes), so the whole object is
// sent.
func ifRange(header, etag string) bool {
	return header == "" || strings.TrimSpace(header) == etag
}
