package controllers

import (
	"context"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// DefaultClaimHold is how long an unused claim stays with its namespace
// before it is released (--claim-hold): 30 days.
const DefaultClaimHold = 720 * time.Hour

// IdentityClaimReconciler keeps the users recorded on each IdentityClaim
// true and releases a claim agentcred made once no credential in its
// namespace has used it for Hold. Claims an admin made are never released
// by it.
type IdentityClaimReconciler struct {
	client.Client
	// APIReader confirms, around the cache, that a claim is really unused
	// before it is released.
	APIReader client.Reader
	Clock     clock.PassiveClock
	Hold      time.Duration
}

// Reconcile drops users that no longer use the claim and releases it when
// its hold has passed.
func (r *IdentityClaimReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	claim := &authv1alpha1.IdentityClaim{}
	if err := r.Get(ctx, req.NamespacedName, claim); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if err := r.dropStaleUsers(ctx, claim); err != nil {
		return ctrl.Result{}, err
	}
	release, wait := tenancy.ReleaseAfter(useOf(claim), r.Hold, r.Clock.Now())
	if !release {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	return ctrl.Result{}, r.release(ctx, claim)
}

func useOf(claim *authv1alpha1.IdentityClaim) tenancy.Use {
	u := tenancy.Use{
		// A claim agentcred made for one namespace and an admin moved to
		// another is the admin's now: never released automatically.
		Managed: claim.Labels[authv1alpha1.ManagedByLabel] == authv1alpha1.ManagedByValue &&
			claim.Labels[authv1alpha1.CredentialNamespaceLabel] == claim.Spec.Namespace,
		InUse:   len(claim.Status.Credentials) > 0,
		Created: claim.CreationTimestamp.Time,
	}
	if t := claim.Status.LastUsedTime; t != nil {
		u.LastUsed = t.Time
	}
	return u
}

// dropStaleUsers removes from the claim's users the credentials that no
// longer exist or no longer name its identity (the API server, not the
// cache, says so), for example when the operator was down as they went.
func (r *IdentityClaimReconciler) dropStaleUsers(ctx context.Context, claim *authv1alpha1.IdentityClaim) error {
	var stale []string
	for _, name := range claim.Status.Credentials {
		uses, err := r.uses(ctx, r.Client, claim, name)
		if err == nil && !uses {
			uses, err = r.uses(ctx, r.APIReader, claim, name)
		}
		if err != nil {
			return err
		}
		if !uses {
			stale = append(stale, name)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	c := claim.DeepCopy()
	c.Status.Credentials = slices.DeleteFunc(c.Status.Credentials, func(n string) bool { return slices.Contains(stale, n) })
	c.Status.LastUsedTime = timePtr(r.Clock.Now())
	if err := r.Update(ctx, c); err != nil {
		return err
	}
	*claim = *c
	return nil
}

// uses reports whether credential name in the claim's namespace names the
// claim's identity.
func (r *IdentityClaimReconciler) uses(ctx context.Context, reader client.Reader, claim *authv1alpha1.IdentityClaim, name string) (bool, error) {
	cred := &authv1alpha1.AgentCredential{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: claim.Spec.Namespace, Name: name}, cred); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return names(cred, claim.Name), nil
}

func names(cred *authv1alpha1.AgentCredential, claimName string) bool {
	for _, id := range identityindex.Identities(cred) {
		if tenancy.ClaimName(id) == claimName {
			return true
		}
	}
	return false
}

// release deletes the claim after the API server confirms that no
// credential in its namespace names its identity; the delete is
// conditional on the claim not having changed since it was read.
func (r *IdentityClaimReconciler) release(ctx context.Context, claim *authv1alpha1.IdentityClaim) error {
	creds := &authv1alpha1.AgentCredentialList{}
	if err := r.APIReader.List(ctx, creds, client.InNamespace(claim.Spec.Namespace)); err != nil {
		return err
	}
	for i := range creds.Items {
		if names(&creds.Items[i], claim.Name) {
			// In use after all (recreated while we looked): record it, so
			// the claim shows the truth and is not released.
			c := claim.DeepCopy()
			c.Status.Credentials = tenancy.SortedNames(append(c.Status.Credentials, creds.Items[i].Name))
			c.Status.LastUsedTime = timePtr(r.Clock.Now())
			return r.Update(ctx, c)
		}
	}
	uid, rv := claim.UID, claim.ResourceVersion
	err := r.Delete(ctx, claim, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	log.FromContext(ctx).Info("Released identity claim", "claim", claim.Name, "kind", string(claim.Spec.Kind), "namespace", claim.Spec.Namespace, "hold", r.Hold)
	return nil
}

// SetupWithManager registers the claim controller.
func (r *IdentityClaimReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("identityclaim").
		For(&authv1alpha1.IdentityClaim{}).
		Complete(r)
}
