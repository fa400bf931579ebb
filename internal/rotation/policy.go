// Package rotation decides, as pure functions of values, what should happen
// to a credential's key: whether the key in the agent Secret is the one the
// hash Secret vouches for, whether a rotation is due and why, and how the
// hash record changes when a key is staged, promoted or expires. The
// controller performs the writes these functions describe.
package rotation

import (
	"slices"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
)

// Reason says why a new key is issued.
type Reason string

// Reasons for a new key. They are also the `reason` label of
// agentcred_rotations_total and are stored in the hash record while staged.
const (
	None Reason = ""
	// Issue is the first key of a credential.
	Issue Reason = "Issue"
	// Scheduled is the periodic rotation; the old key keeps working for the grace period.
	Scheduled Reason = "Scheduled"
	// Requested is a rotation asked for with the rotate annotation; the old key is revoked at once.
	Requested Reason = "Requested"
	// Reissue replaces a key that was lost or damaged in the agent Secret; the old key is revoked at once.
	Reissue Reason = "Reissue"
	// Renew replaces a key that expired (spec.expiresAt) after the expiry
	// was moved into the future: the expired key never comes back.
	Renew Reason = "Renew"
)

// Action is what the reconciler must do about the agent Secret's key before
// it considers the schedule.
type Action int

const (
	// Keep: the agent Secret holds the current key.
	Keep Action = iota
	// FinishRotation: the agent Secret holds the staged key of an interrupted
	// rotation; promote it.
	FinishRotation
	// RebuildRecord: the agent Secret holds the key the status names, and the
	// hash record is missing, damaged or from an earlier credential of the
	// same name (never over an intact record, never to a retired key);
	// rewrite the record from the key (Rebuild).
	RebuildRecord
	// IssueKey: there is no key yet, or the agent Secret lost or damaged it;
	// issue a new one and revoke whatever was there.
	IssueKey
)

// AgentKey is what the controller found in the agent Secret.
type AgentKey struct {
	// Present is false when the Secret or its key entry is missing.
	Present bool
	// Valid is true when the key parses as the credential's kind.
	Valid  bool
	Digest credential.Digest
}

// Inspect reads a key string found in the agent Secret: valid only if it
// is a well-formed key of the credential's kind and environment (a live key
// in a sandbox credential's Secret is drift, and is reissued).
func Inspect(key string, present bool, want credential.Kind, env credential.Environment) AgentKey {
	if !present {
		return AgentKey{}
	}
	kind, err := credential.Parse(key)
	if err != nil || kind != want || credential.EnvironmentOf(key) != env {
		return AgentKey{Present: true}
	}
	return AgentKey{Present: true, Valid: true, Digest: credential.DigestOf(key)}
}

// Assess decides what to do about the agent Secret's key, given the hash
// record (nil when missing, damaged or from another incarnation of the
// credential), the keyIDs that must never become current again (Retired)
// and the keyID the status last reported. The status is tenant-writable:
// it may name the key to rebuild a record that is gone, never replace a
// record that is intact, nor bring back a retired key.
func Assess(agent AgentKey, rec *hashsecret.Record, retired []string, statusKeyID string) (Action, Reason) {
	// (If statements rather than a switch: Go's coverage blocks start after
	// a case expression, so mutation testing would call it uncovered.)
	if agent.Valid && rec != nil && agent.Digest.Equal(rec.Current.Digest) {
		return Keep, None
	}
	if agent.Valid && rec != nil && rec.Pending != nil && agent.Digest.Equal(rec.Pending.Digest) {
		return FinishRotation, None
	}
	if agent.Valid && rec == nil && statusKeyID != "" && agent.Digest.KeyID() == statusKeyID && !slices.Contains(retired, statusKeyID) {
		return RebuildRecord, None
	}
	if statusKeyID == "" {
		// No key was ever reported: whatever record exists is from an issue
		// that did not finish.
		return IssueKey, Issue
	}
	return IssueKey, Reissue
}

// Retired lists the keyIDs a rebuilt record must never make current, from
// what is left of an unusable hash record (hashsecret.Salvage; nil when
// there is none): the keys it retired and, when it is not this
// credential's (own false: another UID or name), every key it holds.
func Retired(left *hashsecret.Record, own bool) []string {
	if left == nil {
		return nil
	}
	out := slices.Clone(left.Retired)
	if !own {
		out = append(out, keyIDOf(left.Current.Digest))
		if left.Previous != nil {
			out = append(out, keyIDOf(left.Previous.Digest))
		}
		if left.Pending != nil {
			out = append(out, keyIDOf(left.Pending.Digest))
		}
	}
	return out
}

// keyIDOf is d's keyID, or "" for no digest.
func keyIDOf(d credential.Digest) string {
	if d.IsZero() {
		return ""
	}
	return d.KeyID()
}

// Rebuild is the record rewritten around digest, the key in the agent
// Secret, when the hash record is missing, damaged or left from an earlier
// credential of the same name (Assess said RebuildRecord). fresh is a new
// record of the credential (identity and spec expiry, no key); left is what
// could be read of a damaged record of this same credential (nil when
// there is none); retired stays retired. The issue time, rotation count
// and last answered request come from left, never from the tenant-writable
// status; with nothing left the key counts as issued now, and request (the
// rotate annotation as it stands) as answered. A left record that had
// expired stays expired: only a renewal's new key may outlive it.
func Rebuild(fresh hashsecret.Record, left *hashsecret.Record, retired []string, digest credential.Digest, request string, now time.Time) hashsecret.Record {
	rec := fresh
	rec.Current = hashsecret.Entry{Digest: digest, IssuedAt: now.UTC().Truncate(time.Second)}
	rec.Previous, rec.Pending = nil, nil
	rec.RotationCount, rec.LastRotationRequest = 0, request
	rec.Retired = nil
	rec.Retire(retired...)
	if left == nil {
		return rec
	}
	if left.Current.Digest.Equal(digest) && !left.Current.IssuedAt.IsZero() {
		rec.Current.IssuedAt = left.Current.IssuedAt
	}
	rec.RotationCount, rec.LastRotationRequest = left.RotationCount, left.LastRotationRequest
	if left.Expired(now) {
		rec.ExpiresAt = left.ExpiresAt
	}
	return rec
}

// NextRotation is when a key issued at issuedAt falls due.
func NextRotation(issuedAt time.Time, period time.Duration) time.Time {
	return issuedAt.Add(period)
}

// OnSchedule reports whether a rotation is scheduled for the current key: a
// credential whose hard expiry comes first is never rotated on schedule.
func OnSchedule(rec *hashsecret.Record, period time.Duration) bool {
	return rec.ExpiresAt.IsZero() || NextRotation(rec.Current.IssuedAt, period).Before(rec.ExpiresAt)
}

// Due reports whether the current key must be rotated now, and why. A
// rotate-annotation value not yet acted on wins over the schedule. An
// expired credential is never rotated (Renewal decides about it).
func Due(rec *hashsecret.Record, period time.Duration, request string, now time.Time) Reason {
	if rec.Expired(now) {
		return None
	}
	if request != "" && request != rec.LastRotationRequest {
		return Requested
	}
	if OnSchedule(rec, period) && !now.Before(NextRotation(rec.Current.IssuedAt, period)) {
		return Scheduled
	}
	return None
}

// Renewal reports whether an expired credential needs a new key because
// spec.expiresAt (want, zero for none) now lies in the future. The expired
// key itself is never made valid again.
func Renewal(rec *hashsecret.Record, want, now time.Time) bool {
	return rec.Expired(now) && (want.IsZero() || now.Before(want))
}

// WithExpiry returns rec with the hard expiry want (zero: none), and
// whether it changed. An expired record keeps its expiry: only a new key
// (Renewal) may outlive it. Moving the expiry earlier, even into the past,
// applies at once.
func WithExpiry(rec hashsecret.Record, want, now time.Time) (hashsecret.Record, bool) {
	if rec.Expired(now) || rec.ExpiresAt.Equal(want) {
		return rec, false
	}
	rec.ExpiresAt = want
	return rec, true
}

// GraceDeadline is when the previous key of a scheduled rotation at
// rotatedAt stops authenticating: after grace, or while a restart target is
// still rolling out, after maxGrace (when that is longer).
func GraceDeadline(rotatedAt time.Time, grace, maxGrace time.Duration, rolling bool) time.Time {
	if rolling {
		return rotatedAt.Add(max(grace, maxGrace))
	}
	return rotatedAt.Add(grace)
}

// WithGraceDeadline returns rec with its previous key's expiry set to
// deadline, and whether it changed.
func WithGraceDeadline(rec hashsecret.Record, deadline time.Time) (hashsecret.Record, bool) {
	if rec.Previous == nil || rec.Previous.ExpiresAt.Equal(deadline) {
		return rec, false
	}
	p := *rec.Previous
	p.ExpiresAt = deadline
	rec.Previous = &p
	return rec, true
}

// NeedsStaging reports whether a new key must be staged (accepted by the
// endpoint) before it is written to the agent Secret. A first issue needs no
// staging: nothing has to keep working, and if the process dies before the
// agent Secret is written, the next reconcile simply issues again. Every
// other rotation stages, so that an interruption neither breaks the key in
// the agent Secret nor counts a rotation twice.
func NeedsStaging(agent AgentKey, reason Reason) bool {
	return agent.Valid || reason != Issue
}

// Stage returns rec with a new key staged as pending. The staged key is
// accepted by the endpoint before it is written to the agent Secret (unless
// the record has expired). expiresAt is the hard expiry a renewal (reason
// Renew) gives the record when the key is promoted.
func Stage(rec hashsecret.Record, digest credential.Digest, reason Reason, now, expiresAt time.Time) hashsecret.Record {
	// Times are kept to the second: that is what the hash Secret and the status store.
	rec.Pending = &hashsecret.Entry{Digest: digest, Reason: string(reason), StartedAt: now.UTC().Truncate(time.Second)}
	if reason == Renew {
		rec.Pending.ExpiresAt = expiresAt
	}
	return rec
}

// Promote returns rec with its pending key made current. A scheduled
// rotation keeps the old key valid for grace; every other reason revokes it
// (and any earlier key still in grace) at once. Any key issued for a reason
// other than the schedule satisfies an outstanding rotate request.
func Promote(rec hashsecret.Record, grace time.Duration, request string) hashsecret.Record {
	p := rec.Pending
	if p == nil {
		return rec
	}
	old := rec.Current
	// The replaced key, and one still in grace, never become current again.
	if rec.Previous != nil {
		rec.Retire(keyIDOf(rec.Previous.Digest))
	}
	rec.Retire(keyIDOf(old.Digest))
	reason := Reason(p.Reason)
	rec.Current = hashsecret.Entry{Digest: p.Digest, IssuedAt: p.StartedAt}
	rec.Previous = nil
	if reason == Scheduled && grace > 0 && !old.Digest.IsZero() {
		rec.Previous = &hashsecret.Entry{Digest: old.Digest, ExpiresAt: p.StartedAt.Add(grace)}
	}
	if reason != Issue {
		rec.RotationCount++
	}
	if reason != Scheduled {
		rec.LastRotationRequest = request
	}
	if reason == Renew {
		rec.ExpiresAt = p.ExpiresAt
	}
	rec.Pending = nil
	return rec
}

// Prune returns rec without a previous key that has expired at now, and
// whether it changed.
func Prune(rec hashsecret.Record, now time.Time) (hashsecret.Record, bool) {
	if rec.Previous != nil && !now.Before(rec.Previous.ExpiresAt) {
		rec.Previous = nil
		return rec, true
	}
	return rec, false
}

// RequeueAfter is how long until the record next needs attention: the next
// scheduled rotation, the end of the previous key's grace or the hard
// expiry, whichever is first; zero when nothing is ahead (an expired record).
func RequeueAfter(rec *hashsecret.Record, period time.Duration, now time.Time) time.Duration {
	var next time.Time
	earliest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if rec.Expired(now) {
		return 0
	}
	if OnSchedule(rec, period) {
		earliest(NextRotation(rec.Current.IssuedAt, period))
	}
	if rec.Previous != nil {
		earliest(rec.Previous.ExpiresAt)
	}
	if !rec.ExpiresAt.IsZero() {
		earliest(rec.ExpiresAt)
	}
	if d := next.Sub(now); d > 0 {
		return d
	}
	// Already due: come back soon rather than spin.
	return time.Second
}
