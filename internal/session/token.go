// Package session owns session tokens (`as_…`): stateless, HMAC-SHA256
// signed, bound to one agent and to the key that minted them, and the
// keyring of signing keys they are signed with. It knows nothing about
// Kubernetes or HTTP.
//
// A token is "as_" followed by the unpadded base64url encoding of
//
//	version(1) | signing key id(4) | issued-at(8) | expires-at(8) |
//	agent UUID(16) | minting keyID(6) | len(credential)(2) | credential |
//	HMAC-SHA256("as_" | all of the above)(32)
package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
)

var strictEncoding = base64.RawURLEncoding.Strict()

// credentialPrefix is signed along with the payload.
const credentialPrefix = credential.SessionPrefix

// Errors from Parse. They never include the token.
var (
	ErrMalformed    = errors.New("malformed session token")
	ErrUnknownKey   = errors.New("session token signed with an unknown key")
	ErrBadSignature = errors.New("session token signature mismatch")
	ErrExpired      = errors.New("session token expired")
)

// Claims are what a session token asserts.
type Claims struct {
	// AgentID is the agent the session acts as (a lower-case UUID).
	AgentID string
	// KeyID is the keyID of the API key or user token that minted it; the
	// session dies when that key stops being the credential's current key.
	KeyID string
	// Credential is namespace/name of the AgentCredential of that key.
	Credential string
	IssuedAt   time.Time
	ExpiresAt  time.Time
}

// Mint signs claims with key and returns the token.
func Mint(c Claims, key Key) (string, error) {
	agent, err := parseUUID(c.AgentID)
	if err != nil {
		return "", err
	}
	keyID, err := hex.DecodeString(c.KeyID)
	if err != nil || len(keyID) != 6 {
		return "", errors.New("keyID must be 12 hex characters")
	}
	if len(c.Credential) == 0 || len(c.Credential) > maxCredLen {
		return "", errors.New("credential must be namespace/name")
	}
	kid, err := key.idBytes()
	if err != nil {
		return "", err
	}
	buf := make([]byte, 0, fixedLen+len(c.Credential)+macLen)
	buf = append(buf, version)
	buf = append(buf, kid[:]...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(c.IssuedAt.Unix()))
	buf = binary.BigEndian.AppendUint64(buf, uint64(c.ExpiresAt.Unix()))
	buf = append(buf, agent[:]...)
	buf = append(buf, keyID...)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(c.Credential)))
	buf = append(buf, c.Credential...)
	buf = append(buf, sign(key.Secret, buf)...)
	return credential.SessionPrefix + base64.RawURLEncoding.EncodeToString(buf), nil
}

func sign(secret, payload []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(credential.SessionPrefix))
	m.Write(payload)
	return m.Sum(nil)
}

// Parse checks a token's format and signature against keyring and its
// expiry against now. A correctly signed but expired token returns its
// claims with ErrExpired, so callers can say so.
func Parse(token string, keyring *Keyring, now time.Time) (Claims, error) {
	if len(token) > MaxTokenLen || !strings.HasPrefix(token, credential.SessionPrefix) {
		return Claims{}, ErrMalformed
	}
	body := token[prefixLen:]
	for i := 0; i < len(body); i++ {
		// The decoder would skip CR and LF; only the canonical form verifies.
		if !isBase64URL(body[i]) {
			return Claims{}, ErrMalformed
		}
	}
	var encoded [MaxTokenLen]byte
	m := copy(encoded[:], body) // a stack copy: converting the string would allocate
	var raw [maxRawLen]byte
	n, err := strictEncoding.Decode(raw[:], encoded[:m])
	if err != nil || n < fixedLen+macLen {
		return Claims{}, ErrMalformed
	}
	b := raw[:n]
	if b[0] != version {
		return Claims{}, ErrMalformed
	}
	credLen := int(binary.BigEndian.Uint16(b[fixedLen-2 : fixedLen]))
	if credLen == 0 || fixedLen+credLen+macLen != n {
		return Claims{}, ErrMalformed
	}
	payload, mac := b[:n-macLen], b[n-macLen:]
	key, ok := keyring.byID(b[1:5], now)
	if !ok {
		return Claims{}, ErrUnknownKey
	}
	if !keyring.verifyMAC(key, payload, mac) {
		return Claims{}, ErrBadSignature
	}
	c := Claims{
		IssuedAt:   time.Unix(int64(binary.BigEndian.Uint64(b[5:13])), 0).UTC(),
		ExpiresAt:  time.Unix(int64(binary.BigEndian.Uint64(b[13:21])), 0).UTC(),
		AgentID:    formatUUID(b[21:37]),
		KeyID:      hex.EncodeToString(b[37:43]),
		Credential: string(b[fixedLen : fixedLen+credLen]),
	}
	if !now.Before(c.ExpiresAt) {
		return c, ErrExpired
	}
	return c, nil
}

func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func parseUUID(s string) ([16]byte, error) {
	var out [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return out, fmt.Errorf("agent ID must be a UUID")
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(out[:], []byte(h)); err != nil {
		return out, fmt.Errorf("agent ID must be a UUID")
	}
	return out, nil
}

func formatUUID(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
