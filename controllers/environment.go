package controllers

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// Namespaces are read (as metadata only) for their environment label.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// environmentAllowed applies the namespace's environment policy. A refused
// credential loses its key (its hash Secret) and reports
// Ready=False/EnvironmentNotAllowed with a Warning event.
func (r *AgentCredentialReconciler) environmentAllowed(ctx context.Context, cred *authv1alpha1.AgentCredential) (bool, error) {
	if ok, err := identityindex.EnvironmentAllowed(ctx, r.Client, cred); err != nil || ok {
		return ok, err
	}
	return false, r.withholdKey(ctx, cred, authv1alpha1.ReasonEnvironmentNotAllowed, tenancy.EnvironmentRefusal(cred.Namespace))
}

// requestsForNamespace enqueues every credential of a namespace whose
// environment label changed.
func (r *AgentCredentialReconciler) requestsForNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	return r.requestsForCredentials(ctx, client.InNamespace(o.GetName()))
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
