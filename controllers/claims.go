package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// refusal is one identity a credential may not use.
type refusal struct {
	reason, message string
}

// claimIdentities makes sure the credential's namespace holds the
// IdentityClaim of every identity the credential names, creating claims for
// unclaimed identities, and records the credential as a user of each claim
// it holds. It returns the identities the credential may not use (claimed
// elsewhere, not assigned, or over the namespace's claim limit) together
// with any error: an error about one identity never hides the refusal of
// another, so the caller can always revoke.
func (r *AgentCredentialReconciler) claimIdentities(ctx context.Context, cred *authv1alpha1.AgentCredential) ([]refusal, error) {
	var held []*authv1alpha1.IdentityClaim
	var refused []refusal
	var errs []error
	for _, id := range identityindex.Identities(cred) {
		claim, holding, err := r.claim(ctx, cred, id)
		switch {
		case err != nil:
			errs = append(errs, err)
		case holding == tenancy.Ours:
			held = append(held, claim)
		case holding == tenancy.Elsewhere:
			refused = append(refused, refusal{tenancy.ConflictReason(id), tenancy.Refusal(id)})
		case holding == tenancy.Unclaimed:
			refused = append(refused, refusal{authv1alpha1.ReasonIdentityNotAssigned, tenancy.NotAssigned(id, cred.Namespace)})
		case holding == tenancy.OverLimit:
			refused = append(refused, refusal{authv1alpha1.ReasonClaimLimitReached, fmt.Sprintf(
				"%s is unclaimed, but this namespace already holds %d IdentityClaims (--max-claims-per-namespace); "+
					"a cluster admin can release unused ones or raise the limit", id, r.MaxClaimsPerNamespace)})
		}
	}
	errs = append(errs, r.recordClaimUse(ctx, cred.Namespace, cred.Name, held))
	return refused, errors.Join(errs...)
}

// claim finds or makes the claim on id for the credential's namespace. The
// cache may say "ours" (a claim moved or deleted re-triggers this
// credential once the cache has seen it); anything else is confirmed with
// the API server, and a new claim is one Create, so the API server settles
// races.
func (r *AgentCredentialReconciler) claim(ctx context.Context, cred *authv1alpha1.AgentCredential, id tenancy.Identity) (*authv1alpha1.IdentityClaim, tenancy.Holding, error) {
	key := client.ObjectKey{Name: tenancy.ClaimName(id)}
	claim := &authv1alpha1.IdentityClaim{}
	err := r.Get(ctx, key, claim)
	switch {
	case err == nil && tenancy.HoldingOf(&claim.Spec, id, cred.Namespace) == tenancy.Ours:
		return claim, tenancy.Ours, nil
	case err != nil && !apierrors.IsNotFound(err):
		return nil, 0, err
	case err == nil || r.IdentityClaims == tenancy.Preassigned:
		claim = &authv1alpha1.IdentityClaim{}
		err := r.APIReader.Get(ctx, key, claim)
		if err == nil {
			return claim, tenancy.HoldingOf(&claim.Spec, id, cred.Namespace), nil
		}
		if !apierrors.IsNotFound(err) || r.IdentityClaims == tenancy.Preassigned {
			return nil, tenancy.Unclaimed, client.IgnoreNotFound(err)
		}
	}
	// Unclaimed. The first live credential naming the identity goes first;
	// the cache can only make this one wait, never grant it anything.
	first, err := r.mayClaim(ctx, cred, id)
	if err != nil || !first {
		return nil, tenancy.Elsewhere, err
	}
	if full, err := r.claimLimitReached(ctx, cred.Namespace); err != nil || full {
		return nil, tenancy.OverLimit, err
	}
	claim = r.newClaim(cred, id, key.Name)
	if err := r.Create(ctx, claim); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, 0, err
		}
		claim = &authv1alpha1.IdentityClaim{}
		if err := r.APIReader.Get(ctx, key, claim); err != nil {
			return nil, 0, err
		}
		return claim, tenancy.HoldingOf(&claim.Spec, id, cred.Namespace), nil
	}
	// No event: the claim object is the record, and an event per new
	// identity was a third of the claim's measured cost (docs/benchmarks.md).
	log.FromContext(ctx).Info("Claimed identity", "kind", string(id.Kind), "claim", key.Name)
	return claim, tenancy.Ours, nil
}

// mayClaim applies tenancy.MayClaim to the live credentials naming id, each
// ranked by whether the operator's hash record shows a key issued to it for
// id (tenants can write their credentials' status, not hash Secrets). A
// credential of another namespace that could not create the claim (over
// its namespace's claim limit, or its environment refused there) is not
// ranked: otherwise it would hold the identity for nobody, with no claim
// for an admin to see.
func (r *AgentCredentialReconciler) mayClaim(ctx context.Context, cred *authv1alpha1.AgentCredential, id tenancy.Identity) (bool, error) {
	creds, err := identityindex.CredentialsNeeding(ctx, r.Client, tenancy.ClaimName(id))
	if err != nil {
		return false, err
	}
	me := identityindex.ClaimantOf(cred)
	others := make([]tenancy.Claimant, 0, len(creds))
	limits := map[string]*namespaceLimits{}
	for i := range creds {
		c := identityindex.ClaimantOf(&creds[i])
		hash, err := r.getHashSecret(ctx, &creds[i])
		if err != nil {
			return false, err
		}
		c.HoldsKey = hash.record != nil && recordNames(hash.record, id)
		if c.Namespace == me.Namespace && c.Name == me.Name {
			me.HoldsKey = c.HoldsKey
		}
		if c.Namespace != me.Namespace {
			if c.Refused, err = r.refusedClaimant(ctx, &creds[i], limits); err != nil {
				return false, err
			}
		}
		others = append(others, c)
	}
	return tenancy.MayClaim(me, others), nil
}

// namespaceLimits is what refusedClaimant needs of a namespace, read once
// per ranking.
type namespaceLimits struct {
	// full: the namespace holds MaxClaimsPerNamespace claims.
	full bool
	// cutoff is the last credential within --max-credentials-per-namespace
	// (comesFirst order); nil when none is beyond the bound.
	cutoff *authv1alpha1.AgentCredential
}

// refusedClaimant reports whether cred could not create a claim if it went
// first: its namespace is over the claim limit, cred is beyond the
// namespace's credential limit (it gets no key, so it claims nothing), or
// its environment is not allowed in its namespace. limits memoizes the
// namespaces' limits.
func (r *AgentCredentialReconciler) refusedClaimant(ctx context.Context, cred *authv1alpha1.AgentCredential, limits map[string]*namespaceLimits) (bool, error) {
	l := limits[cred.Namespace]
	if l == nil {
		var err error
		if l, err = r.limitsOf(ctx, cred.Namespace); err != nil {
			return false, err
		}
		limits[cred.Namespace] = l
	}
	if l.full || (l.cutoff != nil && comesFirst(l.cutoff, cred)) {
		return true, nil
	}
	allowed, err := identityindex.EnvironmentAllowed(ctx, r.Client, cred)
	return !allowed, err
}

// limitsOf reads namespace's claim count and credential bound from the cache.
func (r *AgentCredentialReconciler) limitsOf(ctx context.Context, namespace string) (*namespaceLimits, error) {
	full, err := r.claimLimitReached(ctx, namespace)
	if err != nil {
		return nil, err
	}
	l := &namespaceLimits{full: full}
	limit := r.MaxCredentialsPerNamespace
	if limit <= 0 {
		return l, nil
	}
	list := &authv1alpha1.AgentCredentialList{}
	if err := r.List(ctx, list, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	live := make([]*authv1alpha1.AgentCredential, 0, len(list.Items))
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			live = append(live, &list.Items[i])
		}
	}
	if len(live) > limit {
		slices.SortFunc(live, compareCredentials)
		l.cutoff = live[limit-1]
	}
	return l, nil
}

// recordNames reports whether a hash record was issued for id.
func recordNames(rec *hashsecret.Record, id tenancy.Identity) bool {
	if id.Kind == authv1alpha1.UserIdentity {
		return rec.User != "" && id.Same(tenancy.User(rec.User))
	}
	for _, a := range rec.AgentIDs {
		if id.Same(tenancy.Agent(a)) {
			return true
		}
	}
	return false
}

// claimLimitReached reports whether namespace holds MaxClaimsPerNamespace
// claims already (0: no limit), counted in the cache.
func (r *AgentCredentialReconciler) claimLimitReached(ctx context.Context, namespace string) (bool, error) {
	if r.MaxClaimsPerNamespace <= 0 {
		return false, nil
	}
	list := &authv1alpha1.IdentityClaimList{}
	if err := r.List(ctx, list, client.MatchingFields{identityindex.ClaimsByNamespace: namespace}, client.UnsafeDisableDeepCopy); err != nil {
		return false, err
	}
	return len(list.Items) >= r.MaxClaimsPerNamespace, nil
}

// newClaim is the claim on id for cred's namespace, with cred already
// recorded as its user: creating it is the only request a new identity costs.
func (r *AgentCredentialReconciler) newClaim(cred *authv1alpha1.AgentCredential, id tenancy.Identity, name string) *authv1alpha1.IdentityClaim {
	return &authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				authv1alpha1.ManagedByLabel:           authv1alpha1.ManagedByValue,
				authv1alpha1.CredentialLabel:          cred.Name,
				authv1alpha1.CredentialNamespaceLabel: cred.Namespace,
			},
		},
		Spec:   authv1alpha1.IdentityClaimSpec{Kind: id.Kind, Value: id.Value, Namespace: cred.Namespace},
		Status: authv1alpha1.IdentityClaimStatus{Credentials: []string{cred.Name}, LastUsedTime: timePtr(r.Clock.Now())},
	}
}

// recordClaimUse lists the credential namespace/name in the status of each
// claim in held and removes it from every other claim that lists it, so a
// claim knows when it stopped being used. In the steady state every claim
// is right already and this reads only the cache.
func (r *AgentCredentialReconciler) recordClaimUse(ctx context.Context, namespace, name string, held []*authv1alpha1.IdentityClaim) error {
	keep := map[string]bool{}
	for _, claim := range held {
		keep[claim.Name] = true
		if slices.Contains(claim.Status.Credentials, name) || len(claim.Status.Credentials) >= maxRecordedUsers {
			continue // recorded, or enough recorded to show it is in use
		}
		err := r.updateClaimUsers(ctx, claim, append(slices.Clone(claim.Status.Credentials), name))
		if apierrors.IsNotFound(err) {
			// Deleted since the cache said it was ours: claim it afresh.
			return fmt.Errorf("IdentityClaim %s was deleted; claiming again", claim.Name)
		}
		if err != nil {
			return err
		}
	}
	listed, err := identityindex.ClaimsUsedBy(ctx, r.Client, namespace, name)
	if err != nil {
		return err
	}
	for i := range listed {
		claim := &listed[i]
		if keep[claim.Name] {
			continue
		}
		users := slices.DeleteFunc(slices.Clone(claim.Status.Credentials), func(n string) bool { return n == name })
		if err := r.updateClaimUsers(ctx, claim, users); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// updateClaimUsers writes a claim's users and the time they changed. The
// update carries the read's resourceVersion: two credentials recording
// themselves at once conflict, and the loser retries with a fresh read.
func (r *AgentCredentialReconciler) updateClaimUsers(ctx context.Context, claim *authv1alpha1.IdentityClaim, users []string) error {
	c := claim.DeepCopy()
	c.Status.Credentials = tenancy.SortedNames(users)
	c.Status.LastUsedTime = timePtr(r.Clock.Now())
	return r.Update(ctx, c)
}

// maxRecordedUsers bounds status.credentials (the schema allows 1000): the
// list is advisory — one entry is enough to keep a claim in use — so a
// namespace naming one identity from thousands of credentials never makes
// its reconciles fail.
const maxRecordedUsers = 1000

// revokeForRefusedIdentities keeps a credential without a usable key: it
// revokes any key it had (the hash Secret goes), clears the key from its
// status and reports why, naming the identities but never who holds them.
func (r *AgentCredentialReconciler) revokeForRefusedIdentities(ctx context.Context, cred *authv1alpha1.AgentCredential, refused []refusal) error {
	messages := make([]string, 0, len(refused))
	for _, f := range refused {
		messages = append(messages, f.message)
	}
	return r.withholdKey(ctx, cred, refused[0].reason, strings.Join(messages, "; "))
}

// withholdKey revokes cred's key (its hash Secret) and reports why it has
// none: Ready=False with reason, a Warning event when the reason is new.
func (r *AgentCredentialReconciler) withholdKey(ctx context.Context, cred *authv1alpha1.AgentCredential, reason, message string) error {
	if err := r.deleteHashSecret(ctx, cred.Namespace, cred.Name); err != nil {
		return err
	}
	r.reportConflict(cred, reason, message+"; no key is issued")
	s := &cred.Status
	s.KeyID, s.PreviousKeyID, s.PreviousKeyExpiresAt, s.NextRotationTime = "", "", nil, nil
	r.Metrics.forget(cred)
	return nil
}

// reportConflict sets Ready=False with reason and, when the reason is new,
// emits a Warning event.
func (r *AgentCredentialReconciler) reportConflict(cred *authv1alpha1.AgentCredential, reason, message string) {
	if c := meta.FindStatusCondition(cred.Status.Conditions, authv1alpha1.ReadyCondition); c == nil || c.Reason != reason {
		r.Recorder.Eventf(cred, nil, corev1.EventTypeWarning, EventConflict, "Block", message)
	}
	setReady(cred, metav1.ConditionFalse, reason, message)
}

// requestsForSharedIdentities maps a credential to every other credential
// naming one of its identities: a credential appearing or going away may let
// the next one claim an unclaimed identity.
func (r *AgentCredentialReconciler) requestsForSharedIdentities(ctx context.Context, cred *authv1alpha1.AgentCredential) []reconcile.Request {
	var reqs []reconcile.Request
	for _, id := range identityindex.Identities(cred) {
		reqs = append(reqs, r.requestsForClaim(ctx, tenancy.ClaimName(id), cred)...)
	}
	return reqs
}

// requestsForClaim maps an IdentityClaim name to the credentials that need
// it, except skip.
func (r *AgentCredentialReconciler) requestsForClaim(ctx context.Context, claimName string, skip *authv1alpha1.AgentCredential) []reconcile.Request {
	creds, err := identityindex.CredentialsNeeding(ctx, r.Client, claimName)
	if err != nil {
		log.FromContext(ctx).Error(err, "Could not map an identity to its credentials", "claim", claimName)
		return nil
	}
	var reqs []reconcile.Request
	for i := range creds {
		c := &creds[i]
		if skip != nil && c.Namespace == skip.Namespace && c.Name == skip.Name {
			continue
		}
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(c)})
	}
	return reqs
}
