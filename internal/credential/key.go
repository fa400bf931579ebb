// Package credential owns the format of agentcred's keys: how they are
// generated, how a string is checked to be one, and how it is hashed and named
// for storage and logs. It knows nothing about Kubernetes.
//
// A key is a prefix, 43 base62 characters of randomness (256 bits) and a
// 6-character base62 CRC32 of everything before it, in the style of GitHub's
// tokens: secret scanners recognise the prefix, and a typo fails the checksum
// without any lookup. Sandbox keys carry `test_` after the kind's prefix
// (`ak_test_`, `ap_test_`, as Stripe's `sk_test_`), so a sandbox key is
// recognisable at a glance; base62 has no `_`, so no live key looks like one.
package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Kind is the kind of credential a key is, told by its prefix.
type Kind uint8

const (
	// Unknown is not a credential of ours.
	Unknown Kind = iota
	// APIKey is an agent's API key, prefix `ak_`.
	APIKey
	// UserToken is a user API token acting for one of several agents, prefix `ap_`.
	UserToken
	// Session is a session token minted by POST /auth/authenticate, prefix `as_`.
	Session
)

// Prefixes of the three kinds of credential.
const (
	APIKeyPrefix    = "ak_"
	UserTokenPrefix = "ap_"
	SessionPrefix   = "as_"
	// APIKeySandboxPrefix and UserTokenSandboxPrefix start sandbox keys.
	APIKeySandboxPrefix    = "ak_test_"
	UserTokenSandboxPrefix = "ap_test_"
)

// sandboxMarker follows the kind's prefix in a sandbox key.
const sandboxMarker = "test_"

// Environment says whether a key is for production (live) or for testing
// (sandbox).
type Environment uint8

const (
	// Live keys are the default.
	Live Environment = iota
	// Sandbox keys are for testing; gateways can refuse them.
	Sandbox
)

// String is "live" or "sandbox", as headers, labels and the API spell it.
func (e Environment) String() string {
	if e == Sandbox {
		return "sandbox"
	}
	return "live"
}

// EnvironmentOf tells the environment of a key by its prefix alone.
func EnvironmentOf(s string) Environment {
	if len(s) >= sandboxPrefixLen && s[prefixLen:sandboxPrefixLen] == sandboxMarker {
		return Sandbox
	}
	return Live
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Errors returned by Parse. They never include the input.
var (
	ErrUnknownPrefix = errors.New("not an agentcred key: unknown prefix")
	ErrMalformed     = errors.New("malformed key")
	ErrChecksum      = errors.New("key checksum mismatch")
)

// String returns the prefix-free name of the kind, for logs and metrics.
func (k Kind) String() string {
	switch k {
	case APIKey:
		return "api_key"
	case UserToken:
		return "user_token"
	case Session:
		return "session"
	default:
		return "unknown"
	}
}

// Prefix returns the key prefix of the kind.
func (k Kind) Prefix() string {
	switch k {
	case APIKey:
		return APIKeyPrefix
	case UserToken:
		return UserTokenPrefix
	case Session:
		return SessionPrefix
	default:
		return ""
	}
}

// KindOf tells the kind of a credential string by its prefix alone.
func KindOf(s string) Kind {
	if len(s) < prefixLen {
		return Unknown
	}
	switch s[:prefixLen] {
	case APIKeyPrefix:
		return APIKey
	case UserTokenPrefix:
		return UserToken
	case SessionPrefix:
		return Session
	default:
		return Unknown
	}
}

// Generate makes a new live key of kind APIKey or UserToken from crypto/rand.
func Generate(kind Kind) (string, error) {
	return generate(kind, Live, rand.Reader)
}

// GenerateIn makes a new key of kind APIKey or UserToken for env.
func GenerateIn(kind Kind, env Environment) (string, error) {
	return generate(kind, env, rand.Reader)
}

func generate(kind Kind, env Environment, random io.Reader) (string, error) {
	if kind != APIKey && kind != UserToken {
		return "", fmt.Errorf("cannot generate a key of kind %s", kind)
	}
	buf := make([]byte, 0, SandboxKeyLen)
	buf = append(buf, kind.Prefix()...)
	if env == Sandbox {
		buf = append(buf, sandboxMarker...)
	}
	body := len(buf) + randomLen
	// Rejection sampling keeps every base62 digit uniform: bytes >= 248
	// (4*62) would bias the low digits.
	var pool [64]byte
	for len(buf) < body {
		if _, err := io.ReadFull(random, pool[:]); err != nil {
			return "", fmt.Errorf("reading randomness: %w", err)
		}
		for _, b := range pool {
			if b >= 248 {
				continue
			}
			buf = append(buf, base62[b%62])
			if len(buf) == body {
				break
			}
		}
	}
	buf = appendChecksum(buf, crc32.ChecksumIEEE(buf))
	return string(buf), nil
}

// appendChecksum appends sum as exactly checksumLen base62 digits.
func appendChecksum(buf []byte, sum uint32) []byte {
	var digits [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		digits[i] = base62[sum%62]
		sum /= 62
	}
	return append(buf, digits[:]...)
}

// Parse checks that s is a well-formed API key or user token, live or
// sandbox, with a valid checksum and returns its kind (EnvironmentOf tells
// its environment). Session tokens have their own format and are not
// accepted here. Parse does not allocate.
func Parse(s string) (Kind, error) {
	kind := KindOf(s)
	if kind != APIKey && kind != UserToken {
		return Unknown, ErrUnknownPrefix
	}
	start := prefixLen
	if EnvironmentOf(s) == Sandbox {
		start = sandboxPrefixLen
	}
	if len(s) != start+randomLen+checksumLen {
		return Unknown, ErrMalformed
	}
	for i := start; i < len(s); i++ {
		if !isBase62(s[i]) {
			return Unknown, ErrMalformed
		}
	}
	body := s[:start+randomLen]
	sum := crcString(body)
	var want [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		want[i] = base62[sum%62]
		sum /= 62
	}
	if string(want[:]) != s[start+randomLen:] {
		return Unknown, ErrChecksum
	}
	return kind, nil
}

// crcString is crc32.ChecksumIEEE for a string without copying it to a
// []byte, which would allocate on the auth endpoint's hot path.
func crcString(s string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = crc32.IEEETable[byte(crc)^s[i]] ^ (crc >> 8)
	}
	return ^crc
}

func isBase62(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
}

// Digest is the SHA-256 of a key: what agentcred stores instead of the key.
type Digest [sha256.Size]byte

// DigestOf returns the SHA-256 of a key. Keys of ordinary length are
// copied to the stack first, so hashing one does not allocate.
func DigestOf(key string) Digest {
	if len(key) <= 64 {
		var buf [64]byte
		n := copy(buf[:], key)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(key))
}

// Hex returns the digest in lower-case hex, the form stored in hash Secrets.
func (d Digest) Hex() string {
	return hex.EncodeToString(d[:])
}

// KeyID returns the first 12 hex characters of the digest: safe to show,
// log and print, and enough to tell keys apart.
func (d Digest) KeyID() string {
	return hex.EncodeToString(d[:KeyIDLen/2])
}

// IsZero reports whether the digest is unset.
func (d Digest) IsZero() bool {
	return d == Digest{}
}

// Equal compares two digests in constant time.
func (d Digest) Equal(other Digest) bool {
	return subtle.ConstantTimeCompare(d[:], other[:]) == 1
}

// ParseDigestHex reads a digest written by Hex.
func ParseDigestHex(s string) (Digest, error) {
	var d Digest
	if len(s) != hex.EncodedLen(len(d)) {
		return Digest{}, fmt.Errorf("digest must be %d hex characters, got %d", hex.EncodedLen(len(d)), len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return Digest{}, errors.New("digest is not hex")
	}
	return d, nil
}

// KeyID returns the keyID of a key: KeyID of its digest.
func KeyID(key string) string {
	return DigestOf(key).KeyID()
}
