// Package hashsecret owns the layout of the hash Secret: the record the
// controller writes into the operator namespace for each credential, and the
// auth endpoint reads to verify keys. It holds digests and metadata, never a
// key. It knows nothing about Kubernetes clients; it maps a Record to and from
// a Secret's data.
package hashsecret

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
)

// Keys of the hash Secret's data.
const (
	KeyCredential          = "credential" // namespace/name
	KeyUID                 = "credential-uid"
	KeyType                = "type"
	KeyAgentIDs            = "agent-ids" // newline-separated
	KeyUser                = "user"
	KeySessionTTL          = "session-ttl"
	KeyExpiresAt           = "expires-at"  // the credential's hard expiry
	KeyEnvironment         = "environment" // "sandbox"; absent for live
	KeyCurrentDigest       = "current.sha256"
	KeyCurrentKeyID        = "current.key-id"
	KeyCurrentIssuedAt     = "current.issued-at"
	KeyPreviousDigest      = "previous.sha256"
	KeyPreviousKeyID       = "previous.key-id"
	KeyPreviousExpiresAt   = "previous.expires-at"
	KeyPendingDigest       = "pending.sha256"
	KeyPendingKeyID        = "pending.key-id"
	KeyPendingReason       = "pending.reason"
	KeyPendingStartedAt    = "pending.started-at"
	KeyPendingExpiresAt    = "pending.expires-at" // the hard expiry a renewal sets
	KeyRotationCount       = "rotation-count"
	KeyLastRotationRequest = "last-rotation-request"
	// KeyRetiredKeyIDs lists the keyIDs of keys the credential has retired,
	// newline-separated, oldest first; absent when none (and in records
	// written before it existed).
	KeyRetiredKeyIDs = "retired.key-ids"
)

// MaxRetired bounds Record.Retired: the newest MaxRetired retired keyIDs
// are kept.
const MaxRetired = 16

// NamePrefix starts the name of every hash Secret.
const NamePrefix = "agentcred-hash-"

// Name returns the deterministic name of the hash Secret of the credential
// namespace/name. Hashing keeps it a valid, fixed-length name whatever the
// lengths of the namespace and name, and free of collisions in practice.
func Name(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return NamePrefix + hex.EncodeToString(sum[:16])
}

// Entry is one key's digest with the times that bound it.
type Entry struct {
	Digest credential.Digest
	// IssuedAt is when the current key was issued (current only).
	IssuedAt time.Time
	// ExpiresAt is when a previous key stops authenticating (previous), or
	// the hard expiry a renewing pending key gives the record (pending).
	ExpiresAt time.Time
	// Reason says why a pending key is being issued (pending only).
	Reason string
	// StartedAt is when a pending key was staged (pending only).
	StartedAt time.Time
}

// Record is the content of a hash Secret.
type Record struct {
	// Credential is "namespace/name" of the AgentCredential.
	Credential string
	UID        string
	Type       string
	AgentIDs   []string
	User       string
	SessionTTL time.Duration
	// Environment is "sandbox" for sandbox credentials, "" for live ones.
	Environment string
	// ExpiresAt is the credential's hard expiry (zero: none). From then on
	// no key of it authenticates.
	ExpiresAt time.Time

	// Current is the key in the agent Secret.
	Current Entry
	// Previous is the key a scheduled rotation replaced, valid until ExpiresAt.
	Previous *Entry
	// Pending is a key staged before it is written to the agent Secret, so
	// that a crash between the two writes never leaves the agent Secret
	// holding a key the endpoint rejects. It is accepted like Current.
	Pending *Entry

	RotationCount       int64
	LastRotationRequest string

	// Retired are the keyIDs of keys this credential has replaced since it
	// was first issued (at most MaxRetired, oldest first): a record rebuilt
	// from the agent Secret must never make one of them current again.
	Retired []string
}

// Retire adds keyIDs to Retired, each once ("" is no key), dropping the
// oldest beyond MaxRetired. It never changes a Retired slice shared with
// another record.
func (r *Record) Retire(keyIDs ...string) {
	out := slices.Clone(r.Retired)
	for _, id := range keyIDs {
		if id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	r.Retired = out[max(0, len(out)-MaxRetired):]
}

// IsRetired reports whether keyID is in Retired.
func (r *Record) IsRetired(keyID string) bool {
	return slices.Contains(r.Retired, keyID)
}

// Expired reports whether the credential's hard expiry has passed at now.
func (r *Record) Expired(now time.Time) bool {
	return !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt)
}

// Accepts reports whether digest authenticates at now.
func (r *Record) Accepts(d credential.Digest, now time.Time) bool {
	var pending, previous *credential.Digest
	var previousExpiresAt time.Time
	if r.Pending != nil {
		pending = &r.Pending.Digest
	}
	if r.Previous != nil {
		previous, previousExpiresAt = &r.Previous.Digest, r.Previous.ExpiresAt
	}
	return Accepts(d, r.Current.Digest, pending, previous, previousExpiresAt, now)
}

// Accepts is the one rule for which digests authenticate a credential at
// now: the current one, a pending (staged) one, and the previous one until
// it expires. The auth endpoint's index and the controller's tests both use
// it. Every comparison runs, in constant time, so timing says nothing about
// which digest matched.
func Accepts(d, current credential.Digest, pending, previous *credential.Digest, previousExpiresAt, now time.Time) bool {
	ok := d.Equal(current)
	if pending != nil && d.Equal(*pending) {
		ok = true
	}
	if previous != nil && d.Equal(*previous) && now.Before(previousExpiresAt) {
		ok = true
	}
	return ok
}

// Data encodes the record as a Secret's data.
func (r *Record) Data() map[string][]byte {
	d := map[string][]byte{
		KeyCredential:      []byte(r.Credential),
		KeyUID:             []byte(r.UID),
		KeyType:            []byte(r.Type),
		KeyAgentIDs:        []byte(strings.Join(r.AgentIDs, "\n")),
		KeyCurrentDigest:   []byte(r.Current.Digest.Hex()),
		KeyCurrentKeyID:    []byte(r.Current.Digest.KeyID()),
		KeyCurrentIssuedAt: []byte(formatTime(r.Current.IssuedAt)),
		KeyRotationCount:   []byte(strconv.FormatInt(r.RotationCount, 10)),
	}
	if r.User != "" {
		d[KeyUser] = []byte(r.User)
	}
	if r.SessionTTL > 0 {
		d[KeySessionTTL] = []byte(r.SessionTTL.String())
	}
	if r.Environment != "" {
		d[KeyEnvironment] = []byte(r.Environment)
	}
	if !r.ExpiresAt.IsZero() {
		d[KeyExpiresAt] = []byte(formatTime(r.ExpiresAt))
	}
	if r.LastRotationRequest != "" {
		d[KeyLastRotationRequest] = []byte(r.LastRotationRequest)
	}
	if len(r.Retired) > 0 {
		d[KeyRetiredKeyIDs] = []byte(strings.Join(r.Retired, "\n"))
	}
	if p := r.Previous; p != nil {
		d[KeyPreviousDigest] = []byte(p.Digest.Hex())
		d[KeyPreviousKeyID] = []byte(p.Digest.KeyID())
		d[KeyPreviousExpiresAt] = []byte(formatTime(p.ExpiresAt))
	}
	if p := r.Pending; p != nil {
		d[KeyPendingDigest] = []byte(p.Digest.Hex())
		d[KeyPendingKeyID] = []byte(p.Digest.KeyID())
		d[KeyPendingReason] = []byte(p.Reason)
		d[KeyPendingStartedAt] = []byte(formatTime(p.StartedAt))
		if !p.ExpiresAt.IsZero() {
			d[KeyPendingExpiresAt] = []byte(formatTime(p.ExpiresAt))
		}
	}
	return d
}

// Parse decodes a Secret's data into a record. Any missing or inconsistent
// field is an error: the controller then rewrites the record from the agent
// Secret, and the auth endpoint ignores it.
func Parse(data map[string][]byte) (*Record, error) {
	r, errs := decode(data)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// Salvage decodes what can be read of damaged data, field by field: a
// field that does not parse is left zero (a damaged previous or pending
// entry keeps only its readable parts). The controller uses it to keep a
// damaged record's times and retired keys when it rebuilds the record; it
// never authenticates anything.
func Salvage(data map[string][]byte) *Record {
	r, _ := decode(data)
	return r
}

// decode reads every field it can and returns the problems found; a field
// with a problem is left zero.
func decode(data map[string][]byte) (*Record, []error) {
	r := &Record{
		Credential:          string(data[KeyCredential]),
		UID:                 string(data[KeyUID]),
		Type:                string(data[KeyType]),
		User:                string(data[KeyUser]),
		LastRotationRequest: string(data[KeyLastRotationRequest]),
		Environment:         string(data[KeyEnvironment]),
	}
	var errs []error
	if r.Credential == "" || strings.Count(r.Credential, "/") != 1 {
		errs = append(errs, fmt.Errorf("%s must be namespace/name", KeyCredential))
	}
	if r.UID == "" {
		errs = append(errs, fmt.Errorf("%s is missing", KeyUID))
	}
	if r.Environment != "" && r.Environment != "sandbox" {
		errs = append(errs, fmt.Errorf("%s must be sandbox or absent", KeyEnvironment))
	}
	if ids := strings.TrimSpace(string(data[KeyAgentIDs])); ids != "" {
		r.AgentIDs = strings.Split(ids, "\n")
	}
	if ttl, ok := data[KeySessionTTL]; ok {
		d, err := time.ParseDuration(string(ttl))
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s is not a duration", KeySessionTTL))
		} else {
			r.SessionTTL = d
		}
	}
	if n, ok := data[KeyRotationCount]; ok {
		c, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || c < 0 {
			errs = append(errs, fmt.Errorf("%s is not a count", KeyRotationCount))
		} else {
			r.RotationCount = c
		}
	}
	if ids, ok := data[KeyRetiredKeyIDs]; ok {
		for _, id := range strings.Split(string(ids), "\n") {
			if !isKeyID(id) {
				errs = append(errs, fmt.Errorf("%s holds something that is not a keyID", KeyRetiredKeyIDs))
				continue
			}
			r.Retired = append(r.Retired, id)
		}
	}
	var err error
	if _, ok := data[KeyExpiresAt]; ok {
		if r.ExpiresAt, err = parseTime(data, KeyExpiresAt); err != nil {
			errs = append(errs, err)
		}
	}
	if r.Current.Digest, err = parseDigest(data, KeyCurrentDigest, KeyCurrentKeyID); err != nil {
		errs = append(errs, err)
	}
	if r.Current.IssuedAt, err = parseTime(data, KeyCurrentIssuedAt); err != nil {
		errs = append(errs, err)
	}
	if _, ok := data[KeyPreviousDigest]; ok {
		p := &Entry{}
		if p.Digest, err = parseDigest(data, KeyPreviousDigest, KeyPreviousKeyID); err != nil {
			errs = append(errs, err)
		}
		if p.ExpiresAt, err = parseTime(data, KeyPreviousExpiresAt); err != nil {
			errs = append(errs, err)
		}
		r.Previous = p
	}
	if _, ok := data[KeyPendingDigest]; ok {
		p := &Entry{Reason: string(data[KeyPendingReason])}
		if p.Digest, err = parseDigest(data, KeyPendingDigest, KeyPendingKeyID); err != nil {
			errs = append(errs, err)
		}
		if p.StartedAt, err = parseTime(data, KeyPendingStartedAt); err != nil {
			errs = append(errs, err)
		}
		if _, ok := data[KeyPendingExpiresAt]; ok {
			if p.ExpiresAt, err = parseTime(data, KeyPendingExpiresAt); err != nil {
				errs = append(errs, err)
			}
		}
		r.Pending = p
	}
	return r, errs
}

// isKeyID reports whether s is a keyID as Digest.KeyID writes it.
func isKeyID(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == credential.KeyIDLen/2 && hex.EncodeToString(b) == s
}

func parseDigest(data map[string][]byte, digestKey, keyIDKey string) (credential.Digest, error) {
	d, err := credential.ParseDigestHex(string(data[digestKey]))
	if err != nil {
		return credential.Digest{}, fmt.Errorf("%s: %w", digestKey, err)
	}
	if got := string(data[keyIDKey]); got != d.KeyID() {
		return credential.Digest{}, fmt.Errorf("%s does not match %s", keyIDKey, digestKey)
	}
	return d, nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func parseTime(data map[string][]byte, key string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, string(data[key]))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s is not an RFC 3339 time", key)
	}
	return t, nil
}
