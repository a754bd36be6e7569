package objectstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"strings"
)

// sniffLen is how many leading bytes http.DetectContentType looks at.
const sniffLen = 512

// upload reads an upload body for the object store: it hashes and counts
// the bytes as they pass, fails once more than max bytes arrive, and fails
// once ctx ends. Its first error sticks, so that the Store can tell why the
// object store gave up.
type upload struct {
	ctx  context.Context
	r    io.Reader // the body, limited to max+1 bytes
	max  int64
	n    int64
	hash hash.Hash
	err  error
}

func newUpload(ctx context.Context, body io.Reader, max int64) *upload {
	return &upload{ctx: ctx, r: io.LimitReader(body, max+1), max: max, hash: sha256.New()}
}

func (u *upload) Read(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	if err := u.ctx.Err(); err != nil {
		u.err = fmt.Errorf("%w: %w", ErrInterrupted, err)
		return 0, u.err
	}
	n, err := u.r.Read(p)
	u.n += int64(n)
	if u.n > u.max {
		u.err = fmt.Errorf("%w of %d bytes", ErrTooLarge, u.max)
		return 0, u.err
	}
	u.hash.Write(p[:n])
	switch {
	case err == nil, err == io.EOF:
		return n, err
	case isTooLarge(err):
		u.err = fmt.Errorf("%w of %d bytes", ErrTooLarge, u.max)
	default:
		u.err = fmt.Errorf("%w: %w", ErrInterrupted, err)
	}
	return n, u.err
}

// isTooLarge recognises a body cut off by http.MaxBytesReader in front of
// the Store (with a lower limit than the Store's).
func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// sum is the hex SHA-256 of the bytes read so far.
func (u *upload) sum() string { return fmt.Sprintf("%x", u.hash.Sum(nil)) }

// parseType validates a Content-Type header and returns it normalised
// (lower-case type and parameter names).
func parseType(contentType string) (string, error) {
	if strings.TrimSpace(contentType) == "" {
		return "", ErrContentType
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrContentType, err)
	}
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok || typ == "" || sub == "" || typ == "*" || sub == "*" {
		return "", ErrContentType
	}
	out := mime.FormatMediaType(mt, params)
	if out == "" || len(out) > 255 {
		return "", ErrContentType
	}
	return out, nil
}

// sniffedImages are the image types http.DetectContentType recognises.
var sniffedImages = map[string]bool{
	"image/x-icon": true, "image/bmp": true, "image/gif": true,
	"image/webp": true, "image/png": true, "image/jpeg": true,
}

// checkType compares a declared image type with the sniffed first bytes:
// an image type the sniffer knows must be what the bytes are; one it does
// not know (image/heic, image/tiff...) must not be bytes it recognises as
// something else (an HTML page sent as image/heic). Other types are taken
// as declared: they are served with nosniff, so a browser never runs them
// as something else.
func checkType(declared string, head []byte) error {
	mt, _, _ := mime.ParseMediaType(declared)
	if !strings.HasPrefix(mt, "image/") {
		return nil
	}
	sniffed, _, _ := mime.ParseMediaType(http.DetectContentType(head))
	if mt == "image/jpg" || mt == "image/pjpeg" {
		mt = "image/jpeg"
	}
	if sniffed == mt {
		return nil
	}
	if !sniffedImages[mt] && sniffed == "application/octet-stream" {
		return nil
	}
	return fmt.Errorf("%w: declared %s, the bytes look like %s", ErrTypeMismatch, mt, sniffed)
}
