package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

// ReasonCredentialLimitReached: the credential's namespace holds more
// AgentCredentials than --max-credentials-per-namespace, and this one is
// beyond the bound; it gets no key.
const ReasonCredentialLimitReached = "CredentialLimitReached"

// DefaultMaxCredentialsPerNamespace is the default of
// --max-credentials-per-namespace.
const DefaultMaxCredentialsPerNamespace = 1000

// comesFirst orders a namespace's credentials for the bound: the older
// first (creationTimestamp), then by name. The order never changes while
// both exist, so a credential within the bound stays within it.
func comesFirst(a, b *authv1alpha1.AgentCredential) bool {
	return compareCredentials(a, b) < 0
}

func compareCredentials(a, b *authv1alpha1.AgentCredential) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// withinCredentialLimit applies --max-credentials-per-namespace: when
// MaxCredentialsPerNamespace credentials of the namespace that are not
// being deleted come before cred (comesFirst), cred gets no key — its hash
// Secret is deleted (or never written), Ready=False with reason
// CredentialLimitReached and a Warning event. Counted in the cache.
func (r *AgentCredentialReconciler) withinCredentialLimit(ctx context.Context, cred *authv1alpha1.AgentCredential) (bool, error) {
	if r.MaxCredentialsPerNamespace <= 0 {
		return true, nil
	}
	list := &authv1alpha1.AgentCredentialList{}
	if err := r.List(ctx, list, client.InNamespace(cred.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return false, err
	}
	ahead := 0
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID != cred.UID && o.DeletionTimestamp.IsZero() && comesFirst(o, cred) {
			ahead++
		}
	}
	if ahead < r.MaxCredentialsPerNamespace {
		return true, nil
	}
	return false, r.withholdKey(ctx, cred, ReasonCredentialLimitReached, fmt.Sprintf(
		"namespace %s holds more than %d AgentCredentials (--max-credentials-per-namespace) and this one is among the newest; "+
			"delete unused credentials, or ask a cluster admin to raise the limit", cred.Namespace, r.MaxCredentialsPerNamespace))
}

// credentialLimitHandler re-reconciles the credentials at the edge of a
// namespace's bound when a credential appears, starts being deleted or goes:
// the one that a creation pushed beyond the bound loses its key, and the one
// a deletion brought within it gets one. Only those two are enqueued, so a
// namespace far over the bound costs one reconcile per change, not one per
// credential.
func (r *AgentCredentialReconciler) credentialLimitHandler() handler.EventHandler {
	enqueue := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range r.requestsAtCredentialLimit(ctx, o.GetNamespace()) {
			q.Add(req)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero() {
				enqueue(ctx, e.ObjectNew, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
	}
}

// requestsAtCredentialLimit names the credentials of namespace at the last
// place within the bound and the first beyond it.
func (r *AgentCredentialReconciler) requestsAtCredentialLimit(ctx context.Context, namespace string) []reconcile.Request {
	limit := r.MaxCredentialsPerNamespace
	if limit <= 0 {
		return nil
	}
	list := &authv1alpha1.AgentCredentialList{}
	if err := r.List(ctx, list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "Listing the credentials of a namespace for --max-credentials-per-namespace", "namespace", namespace)
		return nil
	}
	live := make([]*authv1alpha1.AgentCredential, 0, len(list.Items))
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp.IsZero() {
			live = append(live, &list.Items[i])
		}
	}
	if len(live) < limit {
		return nil
	}
	slices.SortFunc(live, compareCredentials)
	var reqs []reconcile.Request
	for _, i := range []int{limit - 1, limit} {
		if i < len(live) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(live[i])})
		}
	}
	return reqs
}
