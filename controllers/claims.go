package controllers

import (
	"context"
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
// it holds. It returns the identities the credential may not use: claimed
// elsewhere or, with preassigned claims, not assigned.
func (r *AgentCredentialReconciler) claimIdentities(ctx context.Context, cred *authv1alpha1.AgentCredential) ([]refusal, error) {
	var held []*authv1alpha1.IdentityClaim
	var refused []refusal
	for _, id := range identityindex.Identities(cred) {
		claim, holding, err := r.claim(ctx, cred, id)
		if err != nil {
			return nil, err
		}
		switch holding {
		case tenancy.Ours:
			held = append(held, claim)
		case tenancy.Elsewhere:
			refused = append(refused, refusal{tenancy.ConflictReason(id), tenancy.Refusal(id)})
		case tenancy.Unclaimed:
			refused = append(refused, refusal{authv1alpha1.ReasonIdentityNotAssigned, tenancy.NotAssigned(id, cred.Namespace)})
		}
	}
	return refused, r.recordClaimUse(ctx, cred.Namespace, cred.Name, held)
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
	// Unclaimed. The oldest live credential naming the identity goes first;
	// the cache can only make this one wait, never grant it anything.
	claimants, err := identityindex.Claimants(ctx, r.Client, id)
	if err != nil {
		return nil, 0, err
	}
	if !tenancy.MayClaim(identityindex.ClaimantOf(cred), claimants) {
		return nil, tenancy.Elsewhere, nil
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
		if !slices.Contains(claim.Status.Credentials, name) {
			if err := r.updateClaimUsers(ctx, claim, append(slices.Clone(claim.Status.Credentials), name)); err != nil {
				return err
			}
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
		if err := r.updateClaimUsers(ctx, claim, users); err != nil {
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
	return client.IgnoreNotFound(r.Update(ctx, c))
}

// revokeForRefusedIdentities keeps a credential without a usable key: it
// revokes any key it had (the hash Secret goes), clears the key from its
// status and reports why, naming the identities but never who holds them.
func (r *AgentCredentialReconciler) revokeForRefusedIdentities(ctx context.Context, cred *authv1alpha1.AgentCredential, refused []refusal) error {
	if err := r.deleteHashSecret(ctx, cred.Namespace, cred.Name); err != nil {
		return err
	}
	messages := make([]string, 0, len(refused))
	for _, f := range refused {
		messages = append(messages, f.message)
	}
	r.reportConflict(cred, refused[0].reason, strings.Join(messages, "; ")+"; no key is issued")
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
