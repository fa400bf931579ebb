package controllers

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
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
	"github.com/agrenting/agentcred/internal/rollout"
)

// SecretCacheSelector limits the manager's Secret cache to the Secrets
// agentcred creates. The operator never caches (or needs RBAC to list)
// anything else's Secrets beyond a direct get of a name it is asked to use.
func SecretCacheSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue})
}

// CacheOptions returns the cache options the controller needs. Cached
// objects drop their managedFields, which the controller never reads (it
// writes with updates and merge patches) and which are often the largest
// part of a small object. Secrets outside the operator namespace are
// cached as metadata only (stripAgentSecret): any tenant can put our label
// on its own Secrets, so their data must not land in the manager's memory.
// AgentCredentials and workloads, whose size their tenants choose, keep
// only what the controller reads (trimCredential, rollout.Trim).
func CacheOptions(operatorNamespace string) cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: SecretCacheSelector(), Transform: stripAgentSecret(operatorNamespace)},
			// Credentials: what the steady-state reconcile reads (trimCredential).
			&authv1alpha1.AgentCredential{}: {Transform: trimCredential},
			// Restart targets: only the fields rollout.Assess reads.
			&appsv1.Deployment{}:  {Transform: rollout.Trim},
			&appsv1.StatefulSet{}: {Transform: rollout.Trim},
			&appsv1.DaemonSet{}:   {Transform: rollout.Trim},
		},
	}
}

// stripAgentSecret reduces a Secret outside the operator namespace to what
// the controller's watches need — name, UID, resourceVersion, owner
// references and agentcred's own labels — dropping data, annotations, other
// labels and managedFields. A tenant labelling a thousand 1 MiB Secrets
// costs the manager their names, not their contents; the controller reads
// an agent Secret's content from the API server when it needs it. Hash and
// session-key Secrets live in the operator namespace, where tenants cannot
// write, and are kept whole.
func stripAgentSecret(operatorNamespace string) toolscache.TransformFunc {
	return func(obj interface{}) (interface{}, error) {
		s, ok := obj.(*corev1.Secret)
		if !ok || s.Namespace == operatorNamespace {
			return cache.TransformStripManagedFields()(obj)
		}
		labels := map[string]string{}
		for _, k := range []string{authv1alpha1.ManagedByLabel, authv1alpha1.CredentialLabel, authv1alpha1.CredentialNamespaceLabel, authv1alpha1.SecretRoleLabel} {
			if v, ok := s.Labels[k]; ok {
				labels[k] = v
			}
		}
		return &corev1.Secret{
			TypeMeta: s.TypeMeta,
			ObjectMeta: metav1.ObjectMeta{
				Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion,
				Generation: s.Generation, CreationTimestamp: s.CreationTimestamp, DeletionTimestamp: s.DeletionTimestamp,
				OwnerReferences: s.OwnerReferences, Labels: labels,
			},
			Type: s.Type,
		}, nil
	}
}

// SetupOptions tune the controller.
type SetupOptions struct {
	// MaxConcurrentReconciles is how many credentials reconcile at once.
	MaxConcurrentReconciles int
}

// SetupWithManager registers the controller and its watches. The manager's
// cache must have the identity indexes (identityindex.Register).
func (r *AgentCredentialReconciler) SetupWithManager(mgr ctrl.Manager, opts SetupOptions) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &authv1alpha1.AgentCredential{}, restartTargetIndexName, restartTargetIndex); err != nil {
		return err
	}
	workloads := handler.EnqueueRequestsFromMapFunc(r.requestsForWorkload)
	return ctrl.NewControllerManagedBy(mgr).
		Named("agentcredential").
		For(&authv1alpha1.AgentCredential{}, builder.WithPredicates(predicate.Or(
			predicate.GenerationChangedPredicate{},
			predicate.AnnotationChangedPredicate{},
			deletionChanged(),
		))).
		// Changes to and deletions of agent Secrets are drift to repair. Their
		// creation is the controller's own doing (the reconcile that created
		// one goes on), and reacting to it would only race the cache.
		Owns(&corev1.Secret{}, builder.WithPredicates(notCreate())).
		// Hash Secrets live in another namespace, so they carry labels instead of
		// an owner reference: any change or deletion is reconciled, and a
		// creation only when no credential claims it (an orphan).
		Watches(&corev1.Secret{}, handler.TypedFuncs[client.Object, reconcile.Request]{
			CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				for _, req := range credentialForHashSecret(ctx, e.Object) {
					if err := r.Get(ctx, req.NamespacedName, &authv1alpha1.AgentCredential{}); apierrors.IsNotFound(err) {
						q.Add(req)
					}
				}
			},
			UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				for _, req := range credentialForHashSecret(ctx, e.ObjectNew) {
					q.Add(req)
				}
			},
			DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				for _, req := range credentialForHashSecret(ctx, e.Object) {
					q.Add(req)
				}
			},
		}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.OperatorNamespace && o.GetLabels()[authv1alpha1.SecretRoleLabel] == authv1alpha1.SecretRoleKeyHash
		}))).
		// A credential appearing or going away may let another claim an
		// unclaimed identity.
		Watches(&authv1alpha1.AgentCredential{}, r.sharedIdentityHandler()).
		// ... and may move another across --max-credentials-per-namespace.
		Watches(&authv1alpha1.AgentCredential{}, r.credentialLimitHandler()).
		// A claim made, moved or deleted (by an admin, or on release)
		// changes who may use its identity. Updates of the users we record
		// change nothing for a credential.
		Watches(&authv1alpha1.IdentityClaim{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.requestsForClaim(ctx, o.GetName(), nil)
		}), builder.WithPredicates(claimMoved())).
		// A restart target's rollout progressing (or the target appearing)
		// may end the previous key's extended grace.
		Watches(&appsv1.Deployment{}, workloads).
		Watches(&appsv1.StatefulSet{}, workloads).
		Watches(&appsv1.DaemonSet{}, workloads).
		// A namespace labelled (or unlabelled) sandbox changes which of its
		// credentials may hold keys. Namespaces are cached as metadata only.
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.requestsForNamespace),
			builder.WithPredicates(environmentLabelChanged())).
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

// claimMoved passes every create and delete of a claim but only the updates
// that change its spec (an admin moving it to another namespace).
func claimMoved() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		old, ok1 := e.ObjectOld.(*authv1alpha1.IdentityClaim)
		cur, ok2 := e.ObjectNew.(*authv1alpha1.IdentityClaim)
		return !ok1 || !ok2 || old.Spec != cur.Spec
	}}
}

func notCreate() predicate.Funcs {
	return predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }}
}

// deletionChanged passes the update that starts a deletion. (Adding our own
// finalizer does not need another reconcile: the one that added it goes on.)
func deletionChanged() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
	}}
}

// sharedIdentityHandler enqueues the other credentials naming the
// identities of a credential that was created, deleted or changed its agents.
func (r *AgentCredentialReconciler) sharedIdentityHandler() handler.EventHandler {
	enqueue := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if cred, ok := o.(*authv1alpha1.AgentCredential); ok {
			for _, req := range r.requestsForSharedIdentities(ctx, cred) {
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

// NewReconciler builds the reconciler from a manager: its cache-backed
// client, its direct reader, its scheme and its event recorder.
func NewReconciler(mgr ctrl.Manager, clk clock.PassiveClock, operatorNamespace string, metrics *Metrics) *AgentCredentialReconciler {
	return &AgentCredentialReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Scheme:            mgr.GetScheme(),
		Clock:             clk,
		Recorder:          mgr.GetEventRecorder("agentcred"),
		OperatorNamespace: operatorNamespace,
		Metrics:           metrics,
	}
}
