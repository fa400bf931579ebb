package controllers

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// AgentIDIndex indexes AgentCredentials by every agent ID they name.
const AgentIDIndex = "agentcred.agentIDs"

// IndexAgentIDs is the indexer function for AgentIDIndex.
func IndexAgentIDs(o client.Object) []string {
	return o.(*authv1alpha1.AgentCredential).AgentIDs()
}

// ClaimOf describes cred's claim on its agent IDs.
func ClaimOf(cred *authv1alpha1.AgentCredential) tenancy.Claim {
	return tenancy.Claim{
		Namespace: cred.Namespace,
		Name:      cred.Name,
		Created:   cred.CreationTimestamp.Time,
		AgentIDs:  cred.AgentIDs(),
		Deleting:  !cred.DeletionTimestamp.IsZero(),
		Issued:    cred.Status.KeyID != "",
	}
}

// ListClaims returns the claims of every credential naming any of agentIDs,
// read through the AgentIDIndex.
func ListClaims(ctx context.Context, c client.Reader, agentIDs []string) ([]tenancy.Claim, error) {
	var claims []tenancy.Claim
	seen := map[string]bool{}
	for _, id := range agentIDs {
		list := &authv1alpha1.AgentCredentialList{}
		if err := c.List(ctx, list, client.MatchingFields{AgentIDIndex: id}); err != nil {
			return nil, fmt.Errorf("listing credentials naming agent %s: %w", id, err)
		}
		for i := range list.Items {
			item := &list.Items[i]
			if k := item.Namespace + "/" + item.Name; !seen[k] {
				seen[k] = true
				claims = append(claims, ClaimOf(item))
			}
		}
	}
	return claims, nil
}

// checkTenancy blocks a credential naming an agent ID that another namespace
// owns: it gets Ready=False/AgentIDConflict and no usable key (its hash
// Secret is removed), even if the admission webhook was bypassed.
func (r *AgentCredentialReconciler) checkTenancy(ctx context.Context, cred *authv1alpha1.AgentCredential) (bool, error) {
	claims, err := ListClaims(ctx, r.Client, cred.AgentIDs())
	if err != nil {
		return false, err
	}
	conflicts := tenancy.Conflicts(ClaimOf(cred), claims)
	if len(conflicts) == 0 {
		return false, nil
	}
	if err := r.deleteHashSecret(ctx, cred.Namespace, cred.Name, ""); err != nil {
		return false, err
	}
	parts := make([]string, 0, len(conflicts))
	for _, c := range conflicts {
		parts = append(parts, fmt.Sprintf("agent ID %s belongs to namespace %s (AgentCredential %s)", c.AgentID, strings.SplitN(c.Owner, "/", 2)[0], c.Owner))
	}
	r.reportConflict(cred, authv1alpha1.ReasonAgentIDConflict, strings.Join(parts, "; ")+"; no key is issued")
	s := &cred.Status
	s.KeyID, s.PreviousKeyID, s.PreviousKeyExpiresAt, s.NextRotationTime = "", "", nil, nil
	r.Metrics.forget(cred)
	return true, nil
}

// reportConflict sets Ready=False with reason and, when the reason is new,
// emits a Warning event.
func (r *AgentCredentialReconciler) reportConflict(cred *authv1alpha1.AgentCredential, reason, message string) {
	if c := meta.FindStatusCondition(cred.Status.Conditions, authv1alpha1.ReadyCondition); c == nil || c.Reason != reason {
		r.Recorder.Eventf(cred, nil, "Warning", EventConflict, "Block", message)
	}
	setReady(cred, "False", reason, message)
}

// requestsForSharedAgentIDs maps a credential to every other credential that
// names one of its agent IDs, so that deleting the owner of an agent ID lets
// the next claimant in.
func (r *AgentCredentialReconciler) requestsForSharedAgentIDs(ctx context.Context, cred *authv1alpha1.AgentCredential) []reconcile.Request {
	claims, err := ListClaims(ctx, r.Client, cred.AgentIDs())
	if err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, c := range claims {
		if c.Namespace == cred.Namespace && c.Name == cred.Name {
			continue
		}
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: c.Namespace, Name: c.Name}})
	}
	return reqs
}
