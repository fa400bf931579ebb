package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

// SecretCacheSelector limits the manager's Secret cache to the Secrets
// agentcred creates. The operator never caches (or needs RBAC to list)
// anything else's Secrets beyond a direct get of a name it is asked to use.
func SecretCacheSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue})
}

// CacheOptions returns the cache options the controller needs.
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: SecretCacheSelector()},
		},
	}
}

// SetupOptions tune the controller.
type SetupOptions struct {
	// MaxConcurrentReconciles is how many credentials reconcile at once.
	MaxConcurrentReconciles int
}

// SetupWithManager registers the controller and its watches. The manager's
// cache must have the agent-ID index (agentindex.Register).
func (r *AgentCredentialReconciler) SetupWithManager(mgr ctrl.Manager, opts SetupOptions) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("agentcredential").
		For(&authv1alpha1.AgentCredential{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{},
			predicate.AnnotationChangedPredicate{},
			deletionChanged(),
		))).
		Owns(&corev1.Secret{}).
		// Hash Secrets live in another namespace, so they carry labels instead of
		// an owner reference; any change to one (or an orphan) is reconciled.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(credentialForHashSecret),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
				return o.GetNamespace() == r.OperatorNamespace && o.GetLabels()[authv1alpha1.SecretRoleLabel] == RoleKeyHash
			}))).
		// A credential appearing or going away may settle who owns an agent ID.
		Watches(&authv1alpha1.AgentCredential{}, r.sharedAgentIDHandler()).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: opts.MaxConcurrentReconciles,
			RateLimiter:             workqueue.DefaultTypedControllerRateLimiter[reconcile.Request](),
		}).
		Complete(r)
}

func credentialForHashSecret(_ context.Context, o client.Object) []reconcile.Request {
	l := o.GetLabels()
	ns, name := l[authv1alpha1.CredentialNamespaceLabel], l[authv1alpha1.CredentialLabel]
	if ns == "" || name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}}}
}

// deletionChanged passes the update that starts a deletion. (Adding our own
// finalizer does not need another reconcile: the one that added it goes on.)
func deletionChanged() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
	}}
}

// sharedAgentIDHandler enqueues the other credentials naming the agent IDs
// of a credential that was created, deleted or changed its agents.
func (r *AgentCredentialReconciler) sharedAgentIDHandler() handler.EventHandler {
	enqueue := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if cred, ok := o.(*authv1alpha1.AgentCredential); ok {
			for _, req := range r.requestsForSharedAgentIDs(ctx, cred) {
				q.Add(req)
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() || !e.ObjectNew.GetDeletionTimestamp().IsZero() {
				enqueue(ctx, e.ObjectOld, q)
				enqueue(ctx, e.ObjectNew, q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
	}
}
