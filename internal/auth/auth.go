// Package auth mints and verifies jetchat access tokens: JWTs whose subject
// is the user id and whose "dev" claim is the device id. A single operator
// signs with an HS256 secret (generated into the data folder when none is
// configured); an external identity provider can sign with Ed25519 (EdDSA)
// or RS256 keys whose public halves are configured here.
package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/jetchat/jetchat/internal/ident"
)

// DefaultDevice is the device of a token that names none.
const DefaultDevice = "default"

// SecretFile is the name of the generated HS256 secret in the data folder.
const SecretFile = "jwt-hs256.key"

// Errors returned by Verify (wrapped).
var (
	ErrMissing = errors.New("missing token")
	ErrInvalid = errors.New("invalid token")
)

// Claims are the verified contents of a token.
type Claims struct {
	User   string
	Device string
	Expiry time.Time
}

type tokenClaims struct {
	jwt.RegisteredClaims
	Device string `json:"dev,omitempty"`
}

// Keys verifies tokens. The zero value accepts nothing.
type Keys struct {
	secret  []byte
	ed      []ed25519.PublicKey
	rsa     []*rsa.PublicKey
	methods []string
}

// NewKeys builds a verifier from an HS256 secret (may be nil) and PEM files
// holding Ed25519 or RSA public keys.
func NewKeys(secret []byte, publicKeyFiles []string) (*Keys, error) {
	k := &Keys{secret: secret}
	if len(secret) > 0 {
		if len(secret) < 32 {
			return nil, fmt.Errorf("the HS256 secret must be at least 32 bytes, got %d", len(secret))
		}
		k.methods = append(k.methods, jwt.SigningMethodHS256.Alg())
	}
	for _, f := range publicKeyFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read public key: %w", err)
		}
		if err := k.addPEM(data); err != nil {
			return nil, fmt.Errorf("public key %s: %w", f, err)
		}
	}
	if len(k.ed) > 0 {
		k.methods = append(k.methods, jwt.SigningMethodEdDSA.Alg())
	}
	if len(k.rsa) > 0 {
		k.methods = append(k.methods, jwt.SigningMethodRS256.Alg())
	}
	if len(k.methods) == 0 {
		return nil, errors.New("no token signing key configured")
	}
	return k, nil
}

func (k *Keys) addPEM(data []byte) error {
	found := false
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			if r, err2 := x509.ParsePKCS1PublicKey(block.Bytes); err2 == nil {
				pub = r
			} else {
				return fmt.Errorf("not a PKIX or PKCS#1 public key: %w", err)
			}
		}
		switch p := pub.(type) {
		case ed25519.PublicKey:
			k.ed = append(k.ed, p)
		case *rsa.PublicKey:
			if p.N.BitLen() < 2048 {
				return fmt.Errorf("RSA key of %d bits is too small (2048 at least)", p.N.BitLen())
			}
			k.rsa = append(k.rsa, p)
		default:
			return fmt.Errorf("unsupported key type %T (want Ed25519 or RSA)", pub)
		}
		found = true
	}
	if !found {
		return errors.New("no PEM public key found")
	}
	return nil
}

// Verify checks a token's signature, algorithm and expiry (exp is required)
// and the ids it carries. It returns an error wrapping ErrMissing or
// ErrInvalid.
func (k *Keys) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrMissing
	}
	var tc tokenClaims
	_, err := jwt.ParseWithClaims(token, &tc, k.keyFunc,
		jwt.WithValidMethods(k.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(5*time.Second),
	)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := ident.User(tc.Subject); err != nil {
		return Claims{}, fmt.Errorf("%w: sub: %v", ErrInvalid, err)
	}
	dev := tc.Device
	if dev == "" {
		dev = DefaultDevice
	}
	if err := ident.Device(dev); err != nil {
		return Claims{}, fmt.Errorf("%w: dev: %v", ErrInvalid, err)
	}
	return Claims{User: tc.Subject, Device: dev, Expiry: tc.ExpiresAt.Time}, nil
}

func (k *Keys) keyFunc(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case jwt.SigningMethodHS256.Alg():
		return k.secret, nil
	case jwt.SigningMethodEdDSA.Alg():
		set := jwt.VerificationKeySet{}
		for _, p := range k.ed {
			set.Keys = append(set.Keys, p)
		}
		return set, nil
	case jwt.SigningMethodRS256.Alg():
		set := jwt.VerificationKeySet{}
		for _, p := range k.rsa {
			set.Keys = append(set.Keys, p)
		}
		return set, nil
	}
	return nil, fmt.Errorf("unexpected algorithm %s", t.Method.Alg())
}

// Mint signs an HS256 token for user and device that expires after ttl.
func Mint(secret []byte, user, device string, ttl time.Duration, now time.Time) (string, error) {
	if err := ident.User(user); err != nil {
		return "", err
	}
	if device == "" {
		device = DefaultDevice
	}
	if err := ident.Device(device); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", errors.New("ttl must be positive")
	}
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Device: device,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

// LoadOrCreateSecret returns the HS256 secret kept in dir, creating dir and a
// new random secret when there is none.
func LoadOrCreateSecret(dir string) ([]byte, error) {
	path := filepath.Join(dir, SecretFile)
	if data, err := os.ReadFile(path); err == nil {
		return decodeSecret(strings.TrimSpace(string(data)))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read token secret: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	enc := base64.RawURLEncoding.EncodeToString(secret)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		// Another process created it first: use theirs.
		return LoadOrCreateSecret(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("create token secret: %w", err)
	}
	if _, err := f.WriteString(enc + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write token secret: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return secret, f.Close()
}

// ParseSecret reads a configured secret: base64 (standard or URL, padded or
// not) of at least 32 bytes, or else the raw string itself.
func ParseSecret(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	if b, err := decodeSecret(s); err == nil && len(b) >= 32 {
		return b, nil
	}
	if len(s) < 32 {
		return nil, fmt.Errorf("the token secret must be at least 32 bytes")
	}
	return []byte(s), nil
}

func decodeSecret(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("token secret file is not base64")
}
