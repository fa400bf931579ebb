package controllers

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/agentindex"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// checkTenancy blocks a credential naming an agent ID that another namespace
// owns: it gets Ready=False/AgentIDConflict and no usable key (its hash
// Secret is removed), even if the admission webhook was bypassed.
func (r *AgentCredentialReconciler) checkTenancy(ctx context.Context, cred *authv1alpha1.AgentCredential) (bool, error) {
	claims, err := agentindex.ListClaims(ctx, r.Client, cred.AgentIDs())
	if err != nil {
		return false, err
	}
	conflicts := tenancy.Conflicts(agentindex.ClaimOf(cred), claims)
	if len(conflicts) == 0 {
		return false, nil
	}
	if err := r.deleteHashSecret(ctx, cred.Namespace, cred.Name); err != nil {
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
	claims, err := agentindex.ListClaims(ctx, r.Client, cred.AgentIDs())
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
