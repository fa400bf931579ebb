package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// Namespaces are read (as metadata only) for their environment label.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// namespaceEnvironment returns the auth.agrenting.io/environment label of
// namespace ("" when unlabelled or gone), from the metadata-only cache.
func namespaceEnvironment(ctx context.Context, c client.Reader, namespace string) (string, error) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := c.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("reading namespace %s: %w", namespace, err)
	}
	return ns.Labels[authv1alpha1.NamespaceEnvironmentLabel], nil
}

// environmentAllowed applies the namespace's environment policy. A refused
// credential loses its key (its hash Secret) and reports
// Ready=False/EnvironmentNotAllowed with a Warning event.
func (r *AgentCredentialReconciler) environmentAllowed(ctx context.Context, cred *authv1alpha1.AgentCredential) (bool, error) {
	nsEnv, err := namespaceEnvironment(ctx, r.Client, cred.Namespace)
	if err != nil {
		return false, err
	}
	if tenancy.EnvironmentAllowed(nsEnv, string(cred.Environment())) {
		return true, nil
	}
	if err := r.deleteHashSecret(ctx, cred.Namespace, cred.Name); err != nil {
		return false, err
	}
	r.reportConflict(cred, authv1alpha1.ReasonEnvironmentNotAllowed, tenancy.EnvironmentRefusal(cred.Namespace)+"; no key is issued")
	s := &cred.Status
	s.KeyID, s.PreviousKeyID, s.PreviousKeyExpiresAt, s.NextRotationTime = "", "", nil, nil
	r.Metrics.forget(cred)
	return false, nil
}

// requestsForNamespace enqueues every credential of a namespace whose
// environment label changed.
func (r *AgentCredentialReconciler) requestsForNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	list := &authv1alpha1.AgentCredentialList{}
	if err := r.List(ctx, list, client.InNamespace(o.GetName())); err != nil {
		log.FromContext(ctx).Error(err, "Listing the credentials of a namespace", "namespace", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// environmentLabelChanged passes namespace updates that change the
// environment label (creations and deletions carry no credential to act on).
func environmentLabelChanged() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		DeleteFunc: func(event.DeleteEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetLabels()[authv1alpha1.NamespaceEnvironmentLabel] != e.ObjectNew.GetLabels()[authv1alpha1.NamespaceEnvironmentLabel]
		},
	}
}
