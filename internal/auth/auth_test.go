package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func writePEM(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMintAndVerify(t *testing.T) {
	t.Parallel()
	secret, err := LoadOrCreateSecret(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewKeys(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Mint(secret, "alice", "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := keys.Verify(tok)
	if err != nil || c.User != "alice" || c.Device != DefaultDevice {
		t.Fatalf("Verify = %+v, %v; want alice/default", c, err)
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("fedcba9876543210fedcba9876543210")
	keys, _ := NewKeys(secret, nil)
	now := time.Now()
	expired, _ := Mint(secret, "alice", "phone", time.Second, now.Add(-time.Hour))
	badSig, _ := Mint(other, "alice", "phone", time.Hour, now)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice"}).SignedString(secret)
	badSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "a.b", "exp": now.Add(time.Hour).Unix()}).SignedString(secret)
	badDev, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "a", "dev": "x y", "exp": now.Add(time.Hour).Unix()}).SignedString(secret)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	tests := map[string]string{
		"expired": expired, "bad signature": badSig, "no exp": noExp, "bad sub": badSub,
		"bad dev": badDev, "alg none": none, "garbage": "not.a.jwt", "empty": "",
	}
	for name, tok := range tests {
		if _, err := keys.Verify(tok); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrMissing) {
			t.Errorf("Verify(%s) error = %v, want ErrInvalid or ErrMissing", name, err)
		}
	}
}

func TestPublicKeys(t *testing.T) {
	t.Parallel()
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	rsaPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewKeys(nil, []string{writePEM(t, edPub), writePEM(t, &rsaPriv.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	edTok, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "bob", "dev": "laptop", "exp": exp}).SignedString(edPriv)
	rsTok, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "carol", "exp": exp}).SignedString(rsaPriv)
	if c, err := keys.Verify(edTok); err != nil || c.User != "bob" || c.Device != "laptop" {
		t.Errorf("Verify(EdDSA) = %+v, %v", c, err)
	}
	if c, err := keys.Verify(rsTok); err != nil || c.User != "carol" {
		t.Errorf("Verify(RS256) = %+v, %v", c, err)
	}
	// With no HS256 secret configured, an HS256 token must fail even if it
	// is signed with the RSA public key bytes (algorithm confusion).
	der, _ := x509.MarshalPKIXPublicKey(&rsaPriv.PublicKey)
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "eve", "exp": exp}).SignedString(der)
	if _, err := keys.Verify(confused); !errors.Is(err, ErrInvalid) {
		t.Errorf("Verify(HS256 with public key as secret) error = %v, want ErrInvalid", err)
	}
}

func TestLoadOrCreateSecretIsStable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateSecret(dir)
	if err != nil || string(a) != string(b) || len(a) != 32 {
		t.Errorf("second LoadOrCreateSecret = %x, %v; want %x", b, err, a)
	}
	st, _ := os.Stat(filepath.Join(dir, SecretFile))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode = %v, want 0600", st.Mode().Perm())
	}
}
