// Package tenancy decides who may use an identity — an agent ID or a user —
// in a cluster shared by namespaces. An identity belongs to the namespace
// named by its IdentityClaim; the first namespace to use an unclaimed
// identity claims it (its oldest live credential goes first, so upgrades and
// re-claims are deterministic); a claim nobody in its namespace has used for
// a hold period may be released. These are pure decisions: the controller
// and the admission webhook act on them.
package tenancy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

// Identity is an agent ID or a user that a credential names.
type Identity struct {
	Kind authv1alpha1.IdentityKind
	// Value is the agent ID (lower-cased) or the user as the credential names it.
	Value string
}

// Agent is the identity of an agent ID; UUIDs are compared lower-cased, so
// an upper-case spelling is the same agent.
func Agent(id string) Identity {
	return Identity{Kind: authv1alpha1.AgentIdentity, Value: strings.ToLower(id)}
}

// User is the identity of a user.
func User(user string) Identity {
	return Identity{Kind: authv1alpha1.UserIdentity, Value: user}
}

// IdentitiesOf lists the identities a credential names: its agent IDs, then
// its user (if any), each once.
func IdentitiesOf(agentIDs []string, user string) []Identity {
	out := make([]Identity, 0, len(agentIDs)+1)
	seen := map[string]bool{}
	for _, a := range agentIDs {
		id := Agent(a)
		if !seen[id.Value] {
			seen[id.Value] = true
			out = append(out, id)
		}
	}
	if user != "" {
		out = append(out, User(user))
	}
	return out
}

// CanonicalUser is the form in which users are compared: Unicode
// NFKC_Casefold (NFKC, full case folding, NFKC again), so that
// "Alice@Example.com", a full-width "ａlice", "STRASSE"/"straße" or a final
// sigma cannot pass for a different user than their folded form in systems
// downstream that fold case or compatibility characters.
func CanonicalUser(user string) string {
	return norm.NFKC.String(cases.Fold().String(norm.NFKC.String(user)))
}

// key is the identity's canonical form.
func (id Identity) key() string {
	if id.Kind == authv1alpha1.UserIdentity {
		return CanonicalUser(id.Value)
	}
	return strings.ToLower(id.Value)
}

// Same reports whether two identities are one.
func (id Identity) Same(other Identity) bool {
	return id.Kind == other.Kind && id.key() == other.key()
}

// ClaimName is the name of the IdentityClaim for id: agent-<uuid> or
// user-<first 40 hex characters of SHA-256 of the canonical user>.
func ClaimName(id Identity) string {
	if id.Kind == authv1alpha1.UserIdentity {
		sum := sha256.Sum256([]byte(CanonicalUser(id.Value)))
		return authv1alpha1.UserClaimPrefix + hex.EncodeToString(sum[:])[:40]
	}
	return authv1alpha1.AgentClaimPrefix + strings.ToLower(id.Value)
}

// String names the identity for messages: its own credential's value, never
// anything about who holds it.
func (id Identity) String() string {
	if id.Kind == authv1alpha1.UserIdentity {
		return fmt.Sprintf("user %q", id.Value)
	}
	return "agent ID " + id.Value
}

// Holding says what a claim means for a namespace that wants an identity.
type Holding int

const (
	// Unclaimed: there is no claim on the identity.
	Unclaimed Holding = iota
	// Ours: the claim binds the identity to the namespace.
	Ours
	// Elsewhere: the claim binds it to another namespace, or the claim does
	// not describe the identity it is named for (a hand-made claim with a
	// wrong name); either way it grants nothing.
	Elsewhere
	// OverLimit: the identity is unclaimed, but the namespace holds as many
	// claims as it may make (--max-claims-per-namespace). The controller
	// decides this; HoldingOf never returns it.
	OverLimit
)

// HoldingOf judges the claim found under ClaimName(id) (nil when none) for a
// credential in namespace.
func HoldingOf(claim *authv1alpha1.IdentityClaimSpec, id Identity, namespace string) Holding {
	if claim == nil {
		return Unclaimed
	}
	if !id.Same(Identity{Kind: claim.Kind, Value: claim.Value}) || claim.Namespace != namespace {
		return Elsewhere
	}
	return Ours
}

// Claimant is a credential that names an identity.
type Claimant struct {
	Namespace string
	Name      string
	Created   time.Time
	// Deleting credentials (deletionTimestamp set) claim nothing.
	Deleting bool
	// HoldsKey: the operator's own record (the hash Secret, which tenants
	// cannot write) shows a key issued to this credential for the
	// identity. Never taken from the credential's status, which its
	// namespace can write.
	HoldsKey bool
	// Refused: this credential could not create the claim if it went first
	// (its namespace holds --max-claims-per-namespace claims, or its
	// environment is not allowed there). It is left out of the ranking, so
	// it cannot hold an identity for nobody, with no claim an admin could
	// see or move.
	Refused bool
}

// before orders claimants: a credential holding a key for the identity
// first (the namespace using it keeps it, and a credential that merely
// added the identity to its spec later cannot jump ahead by its age), then
// by creation time, then by namespace, so that there is always exactly one
// first namespace (which credential within it does not matter: the claim is
// the namespace's).
func before(a, b Claimant) bool {
	if a.HoldsKey != b.HoldsKey {
		return a.HoldsKey
	}
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Namespace < b.Namespace
}

// MayClaim reports whether me may create the claim on an unclaimed identity,
// given the other credentials naming it (me may be among them): only when
// the first live credential naming it — one holding a key for it, else the
// oldest — is in me's namespace. Others that are refused (Refused) or being
// deleted are not ranked: they could never create the claim. This is the rule for first use, for the
// migration of credentials made before claims existed (today's owner holds
// the key and keeps the identity), and for re-claims after an admin deleted
// a claim in use (the namespace using it gets it back).
func MayClaim(me Claimant, others []Claimant) bool {
	first := me
	for _, o := range others {
		if !o.Deleting && !o.Refused && before(o, first) {
			first = o
		}
	}
	return first.Namespace == me.Namespace
}

// ConflictReason is the Ready reason for an identity claimed elsewhere.
func ConflictReason(id Identity) string {
	if id.Kind == authv1alpha1.UserIdentity {
		return authv1alpha1.ReasonUserConflict
	}
	return authv1alpha1.ReasonAgentIDConflict
}

// Refusal explains that id belongs to another namespace without saying which
// one, or which credential: tenants must not learn who holds an identity.
func Refusal(id Identity) string {
	return fmt.Sprintf("%s is claimed by another namespace (IdentityClaim %s); only a cluster admin can reassign it", id, ClaimName(id))
}

// NotAssigned says what a cluster admin must create before a credential in
// namespace may use id, when claims are preassigned.
func NotAssigned(id Identity, namespace string) string {
	return fmt.Sprintf("%s is not assigned to this namespace: a cluster admin must create IdentityClaim %s with spec {kind: %s, value: %q, namespace: %s}",
		id, ClaimName(id), id.Kind, id.Value, namespace)
}

// Use is what decides whether a claim may be released.
type Use struct {
	// Managed claims were created by agentcred on first use and still bind
	// the namespace they were created for (a claim an admin moved is the
	// admin's).
	Managed bool
	// InUse: some credential in the claim's namespace uses the identity.
	InUse bool
	// LastUsed is when a credential last started or stopped using it
	// (zero when never recorded); Created is the claim's creation time.
	LastUsed, Created time.Time
}

// ReleaseAfter says whether a claim may be released now, given the hold
// period, and otherwise how long until it may be (0: never by itself).
func ReleaseAfter(u Use, hold time.Duration, now time.Time) (bool, time.Duration) {
	if !u.Managed || u.InUse {
		return false, 0
	}
	since := u.LastUsed
	if since.IsZero() {
		since = u.Created
	}
	if wait := since.Add(hold).Sub(now); wait > 0 {
		return false, wait
	}
	return true, 0
}

// SortedNames returns names sorted and without duplicates.
func SortedNames(names []string) []string {
	out := append([]string(nil), names...)
	sort.Strings(out)
	j := 0
	for i, n := range out {
		if i == 0 || n != out[j-1] {
			out[j] = n
			j++
		}
	}
	return out[:j]
}

// Mode says how identities get their claims.
type Mode string

const (
	// FirstUse: the first namespace to use an unclaimed identity claims it
	// (--identity-claims=auto, the default).
	FirstUse Mode = "auto"
	// Preassigned: only claims a cluster admin created may be used
	// (--identity-claims=preassigned).
	Preassigned Mode = "preassigned"
)

// ParseMode reads the --identity-claims flag.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case FirstUse, Preassigned:
		return m, nil
	}
	return "", fmt.Errorf("unknown identity-claim mode %q: want %s or %s", s, FirstUse, Preassigned)
}

// EnvironmentAllowed reports whether a credential of environment env may
// have a key in a namespace whose auth.agrenting.io/environment label is
// namespaceEnv: a namespace labelled sandbox admits only sandbox
// credentials. Any other value, or none, sets no rule.
func EnvironmentAllowed(namespaceEnv, env string) bool {
	return namespaceEnv != "sandbox" || env == "sandbox"
}

// EnvironmentRefusal is the message for a credential EnvironmentAllowed
// refuses. It names the field to change.
func EnvironmentRefusal(namespace string) string {
	return fmt.Sprintf("namespace %s is labelled auth.agrenting.io/environment=sandbox and admits only sandbox credentials: set spec.environment: sandbox", namespace)
}
