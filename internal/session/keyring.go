package session

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"sort"
	"sync"
	"time"
)

// SecretName is the signing-key Secret in the operator namespace.
const SecretName = "agentcred-session-keys"

// SecretDataKey is the data key of the signing-key Secret that holds the keyring.
const SecretDataKey = "keyring.json"

// Key is one HMAC signing key.
type Key struct {
	// ID is 8 hex characters, carried in every token it signs.
	ID     string `json:"id"`
	Secret []byte `json:"secret"`
	// CreatedAt: the key signs new tokens from PropagationDelay after this.
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt: after this no token signed with it verifies.
	ExpiresAt time.Time `json:"expiresAt"`
}

// PropagationDelay is how long a new key waits before it signs, so that
// every replica's informer has seen it before tokens signed with it arrive.
const PropagationDelay = time.Minute

func (k Key) idBytes() ([4]byte, error) {
	var out [4]byte
	b, err := hex.DecodeString(k.ID)
	if err != nil || len(b) != 4 {
		return out, errors.New("signing key ID must be 8 hex characters")
	}
	copy(out[:], b)
	return out, nil
}

// NewKey makes a signing key valid from now until expiresAt.
func NewKey(now, expiresAt time.Time) (Key, error) {
	var id [4]byte
	secret := make([]byte, 32)
	if _, err := rand.Read(id[:]); err != nil {
		return Key{}, err
	}
	if _, err := rand.Read(secret); err != nil {
		return Key{}, err
	}
	return Key{ID: hex.EncodeToString(id[:]), Secret: secret, CreatedAt: now.UTC().Truncate(time.Second), ExpiresAt: expiresAt.UTC().Truncate(time.Second)}, nil
}

// Keyring is the set of signing keys; every unexpired key verifies.
type Keyring struct {
	Keys []Key

	// macs pools keyed HMAC states per key ID, so verifying a token does
	// not set up HMAC-SHA256 from scratch.
	macsOnce sync.Once
	macs     map[string]*sync.Pool
}

func (r *Keyring) macPool(k Key) *sync.Pool {
	r.macsOnce.Do(func() {
		r.macs = make(map[string]*sync.Pool, len(r.Keys))
		for _, key := range r.Keys {
			secret := key.Secret
			r.macs[key.ID] = &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}
		}
	})
	return r.macs[k.ID]
}

// ParseKeyring reads the keyring from the signing-key Secret's data.
func ParseKeyring(data map[string][]byte) (*Keyring, error) {
	raw, ok := data[SecretDataKey]
	if !ok {
		return nil, fmt.Errorf("%s is missing", SecretDataKey)
	}
	var keys []Key
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, fmt.Errorf("%s is not a keyring", SecretDataKey)
	}
	for _, k := range keys {
		if _, err := k.idBytes(); err != nil || len(k.Secret) < 32 {
			return nil, fmt.Errorf("%s holds a malformed key", SecretDataKey)
		}
	}
	return &Keyring{Keys: keys}, nil
}

// Data encodes the keyring as the signing-key Secret's data.
func (r *Keyring) Data() map[string][]byte {
	raw, _ := json.Marshal(r.Keys)
	return map[string][]byte{SecretDataKey: raw}
}

func (r *Keyring) byID(id []byte, now time.Time) (Key, bool) {
	if r == nil {
		return Key{}, false
	}
	want := hex.EncodeToString(id)
	for _, k := range r.Keys {
		if k.ID == want && now.Before(k.ExpiresAt) {
			return k, true
		}
	}
	return Key{}, false
}

// SigningKey returns the key to sign with at now: the newest unexpired key
// that is past its propagation delay, or the newest one if none is.
func (r *Keyring) SigningKey(now time.Time) (Key, bool) {
	if r == nil {
		return Key{}, false
	}
	var best, newest *Key
	for i := range r.Keys {
		k := &r.Keys[i]
		if !now.Before(k.ExpiresAt) || now.Before(k.CreatedAt) {
			continue
		}
		if newest == nil || k.CreatedAt.After(newest.CreatedAt) {
			newest = k
		}
		if !now.Before(k.CreatedAt.Add(PropagationDelay)) && (best == nil || k.CreatedAt.After(best.CreatedAt)) {
			best = k
		}
	}
	if best == nil {
		best = newest
	}
	if best == nil {
		return Key{}, false
	}
	return *best, true
}

// Rotate returns the keyring as it should be at now: expired keys dropped,
// and a new key added when the newest is older than every. A key signs for
// `every` and verifies for `every + maxTTL` more, so every token it signed
// outlives no key. It reports whether anything changed.
func Rotate(r *Keyring, now time.Time, every, maxTTL time.Duration) (*Keyring, bool, error) {
	out := &Keyring{}
	changed := false
	var newest time.Time
	if r != nil {
		for _, k := range r.Keys {
			if !now.Before(k.ExpiresAt) {
				changed = true
				continue
			}
			out.Keys = append(out.Keys, k)
			if k.CreatedAt.After(newest) {
				newest = k.CreatedAt
			}
		}
	}
	if len(out.Keys) == 0 || !now.Before(newest.Add(every)) {
		k, err := NewKey(now, now.Add(PropagationDelay+every+maxTTL+time.Hour))
		if err != nil {
			return nil, false, err
		}
		out.Keys = append(out.Keys, k)
		changed = true
	}
	sort.Slice(out.Keys, func(i, j int) bool { return out.Keys[i].CreatedAt.Before(out.Keys[j].CreatedAt) })
	return out, changed, nil
}

// verifyMAC checks mac over payload with k in constant time, using a pooled
// HMAC state when k belongs to the keyring.
func (r *Keyring) verifyMAC(k Key, payload, mac []byte) bool {
	pool := r.macPool(k)
	if pool == nil {
		return hmac.Equal(mac, sign(k.Secret, payload))
	}
	h := pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(credentialPrefix))
	h.Write(payload)
	var sum [sha256.Size]byte
	ok := hmac.Equal(mac, h.Sum(sum[:0]))
	pool.Put(h)
	return ok
}
