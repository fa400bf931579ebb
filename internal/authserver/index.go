// Package authserver is the auth HTTP endpoint: it answers "is this
// request's credential valid, and for which agent?" from an in-memory index
// of hash Secrets, mints session tokens and serves Kubernetes TokenReview.
// It knows HTTP and its index, not how keys are made.
package authserver

import (
	"strings"
	"sync"
	"time"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
)

// Entry is what the index knows of one credential: its identity and the
// digests that authenticate. Entries are immutable once indexed.
type Entry struct {
	// Credential is namespace/name of the AgentCredential.
	Credential string
	// Kind is the kind of key the credential issues (APIKey or UserToken).
	Kind     credential.Kind
	AgentIDs []string
	User     string
	// SessionTTL caps sessions minted from this credential (0: no cap).
	SessionTTL time.Duration
	// ExpiresAt is the credential's hard expiry (zero: none).
	ExpiresAt time.Time
	// Environment of the credential's keys and sessions.
	Environment credential.Environment

	Current           credential.Digest
	Pending           *credential.Digest
	Previous          *credential.Digest
	PreviousExpiresAt time.Time
}

// HasAgent reports whether the credential may act as agentID (lower-case).
func (e *Entry) HasAgent(agentID string) bool {
	for _, a := range e.AgentIDs {
		if a == agentID {
			return true
		}
	}
	return false
}

// Expired reports whether the credential's hard expiry has passed at now.
func (e *Entry) Expired(now time.Time) bool {
	return !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt)
}

// accepts reports whether d authenticates for this entry at now, by the
// same rule as the hash record it came from.
func (e *Entry) accepts(d credential.Digest, now time.Time) bool {
	return hashsecret.Accepts(d, e.Current, e.Pending, e.Previous, e.PreviousExpiresAt, now)
}

// EntryFromRecord converts a hash record into an index entry.
func EntryFromRecord(rec *hashsecret.Record) *Entry {
	e := &Entry{
		Credential: rec.Credential,
		Kind:       credential.APIKey,
		User:       rec.User,
		SessionTTL: rec.SessionTTL,
		ExpiresAt:  rec.ExpiresAt,
		Current:    rec.Current.Digest,
	}
	if rec.Environment == "sandbox" {
		e.Environment = credential.Sandbox
	}
	if rec.Type == string(authv1alpha1.UserTokenType) {
		e.Kind = credential.UserToken
	}
	e.AgentIDs = make([]string, len(rec.AgentIDs))
	for i, a := range rec.AgentIDs {
		e.AgentIDs[i] = strings.ToLower(a)
	}
	if p := rec.Pending; p != nil {
		d := p.Digest
		e.Pending = &d
	}
	if p := rec.Previous; p != nil {
		d := p.Digest
		e.Previous, e.PreviousExpiresAt = &d, p.ExpiresAt
	}
	return e
}

// Index maps key digests and credential names to entries. Lookups take a
// read lock and one map access, so they cost the same at 1,000 or 100,000
// credentials.
type Index struct {
	mu           sync.RWMutex
	byDigest     map[credential.Digest]*Entry
	byCredential map[string]*Entry
	synced       bool
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{byDigest: map[credential.Digest]*Entry{}, byCredential: map[string]*Entry{}}
}

// Lookup returns the entry whose accepted digests at now include d.
func (x *Index) Lookup(d credential.Digest, now time.Time) (*Entry, bool) {
	x.mu.RLock()
	e, ok := x.byDigest[d]
	x.mu.RUnlock()
	if !ok || !e.accepts(d, now) {
		return nil, false
	}
	return e, true
}

// ByCredential returns the entry of namespace/name.
func (x *Index) ByCredential(name string) (*Entry, bool) {
	x.mu.RLock()
	e, ok := x.byCredential[name]
	x.mu.RUnlock()
	return e, ok
}

// Put adds or replaces the entry of e.Credential.
func (x *Index) Put(e *Entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(e.Credential)
	x.byCredential[e.Credential] = e
	x.byDigest[e.Current] = e
	if e.Pending != nil {
		x.byDigest[*e.Pending] = e
	}
	if e.Previous != nil {
		x.byDigest[*e.Previous] = e
	}
}

// Remove drops the entry of credential namespace/name.
func (x *Index) Remove(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(name)
}

func (x *Index) removeLocked(name string) {
	old, ok := x.byCredential[name]
	if !ok {
		return
	}
	delete(x.byCredential, name)
	for _, d := range []*credential.Digest{&old.Current, old.Pending, old.Previous} {
		if d != nil && x.byDigest[*d] == old {
			delete(x.byDigest, *d)
		}
	}
}

// Len is the number of indexed credentials.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byCredential)
}

// MarkSynced records that the index holds every hash Secret that existed
// when it started; /readyz fails until then.
func (x *Index) MarkSynced() {
	x.mu.Lock()
	x.synced = true
	x.mu.Unlock()
}

// Synced reports whether MarkSynced was called.
func (x *Index) Synced() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.synced
}
