// Package rotation decides, as pure functions of values, what should happen
// to a credential's key: whether the key in the agent Secret is the one the
// hash Secret vouches for, whether a rotation is due and why, and how the
// hash record changes when a key is staged, promoted or expires. The
// controller performs the writes these functions describe.
package rotation

import (
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
	// RebuildRecord: the agent Secret holds the key the status names, but the
	// hash record is missing, damaged or edited; rewrite the record from the key.
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
// credential) and the keyID the status last reported.
func Assess(agent AgentKey, rec *hashsecret.Record, statusKeyID string) (Action, Reason) {
	// (If statements rather than a switch: Go's coverage blocks start after
	// a case expression, so mutation testing would call it uncovered.)
	if agent.Valid && rec != nil && agent.Digest.Equal(rec.Current.Digest) {
		return Keep, None
	}
	if agent.Valid && rec != nil && rec.Pending != nil && agent.Digest.Equal(rec.Pending.Digest) {
		return FinishRotation, None
	}
	if agent.Valid && statusKeyID != "" && agent.Digest.KeyID() == statusKeyID {
		return RebuildRecord, None
	}
	if statusKeyID == "" {
		// No key was ever reported: whatever record exists is from an issue
		// that did not finish.
		return IssueKey, Issue
	}
	return IssueKey, Reissue
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
