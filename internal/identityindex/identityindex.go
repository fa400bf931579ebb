// Package identityindex connects the tenancy rules to Kubernetes objects: it
// indexes AgentCredentials by the IdentityClaims their identities need and
// IdentityClaims by the credentials recorded as using them, and reads both
// indexes, and reads a namespace's environment policy. The controller and
// the admission webhook use it, so both see identities the same way.
package identityindex

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// Field indexes.
const (
	// CredentialsByClaim indexes AgentCredentials by the names of the
	// IdentityClaims of the identities they name.
	CredentialsByClaim = "agentcred.claimNames"
	// ClaimsByCredential indexes IdentityClaims by namespace/name of each
	// credential in status.credentials.
	ClaimsByCredential = "agentcred.credentials"
	// ClaimsByNamespace indexes IdentityClaims by spec.namespace.
	ClaimsByNamespace = "agentcred.namespace"
)

// Register adds both indexes to a cache. Call it once per manager.
func Register(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, &authv1alpha1.AgentCredential{}, CredentialsByClaim, ClaimNames); err != nil {
		return err
	}
	if err := indexer.IndexField(ctx, &authv1alpha1.IdentityClaim{}, ClaimsByCredential, UsedBy); err != nil {
		return err
	}
	return indexer.IndexField(ctx, &authv1alpha1.IdentityClaim{}, ClaimsByNamespace, BoundNamespace)
}

// BoundNamespace is the ClaimsByNamespace index function.
func BoundNamespace(o client.Object) []string {
	return []string{o.(*authv1alpha1.IdentityClaim).Spec.Namespace}
}

// ClaimNames is the CredentialsByClaim index function: the names of the
// claims of the identities an AgentCredential names.
func ClaimNames(o client.Object) []string {
	ids := Identities(o.(*authv1alpha1.AgentCredential))
	names := make([]string, 0, len(ids))
	for _, id := range ids {
		names = append(names, tenancy.ClaimName(id))
	}
	return names
}

// UsedBy is the ClaimsByCredential index function: namespace/name of each
// credential an IdentityClaim records as a user.
func UsedBy(o client.Object) []string {
	c := o.(*authv1alpha1.IdentityClaim)
	keys := make([]string, 0, len(c.Status.Credentials))
	for _, name := range c.Status.Credentials {
		keys = append(keys, c.Spec.Namespace+"/"+name)
	}
	return keys
}

// Identities lists the identities cred names: its agent IDs and its user.
func Identities(cred *authv1alpha1.AgentCredential) []tenancy.Identity {
	user := ""
	if cred.CredentialType() == authv1alpha1.UserTokenType {
		user = cred.Spec.User
	}
	return tenancy.IdentitiesOf(cred.AgentIDs(), user)
}

// ClaimantOf describes cred as a claimant of its identities; HoldsKey is
// the caller's to set from the operator's own records.
func ClaimantOf(cred *authv1alpha1.AgentCredential) tenancy.Claimant {
	return tenancy.Claimant{
		Namespace: cred.Namespace,
		Name:      cred.Name,
		Created:   cred.CreationTimestamp.Time,
		Deleting:  !cred.DeletionTimestamp.IsZero(),
	}
}

// CredentialsNeeding lists every credential that names the identity of the
// IdentityClaim called claimName.
func CredentialsNeeding(ctx context.Context, c client.Reader, claimName string) ([]authv1alpha1.AgentCredential, error) {
	list := &authv1alpha1.AgentCredentialList{}
	if err := c.List(ctx, list, client.MatchingFields{CredentialsByClaim: claimName}); err != nil {
		return nil, fmt.Errorf("listing credentials needing IdentityClaim %s: %w", claimName, err)
	}
	return list.Items, nil
}

// ClaimsUsedBy lists the claims whose status records the credential
// namespace/name as a user.
func ClaimsUsedBy(ctx context.Context, c client.Reader, namespace, name string) ([]authv1alpha1.IdentityClaim, error) {
	list := &authv1alpha1.IdentityClaimList{}
	if err := c.List(ctx, list, client.MatchingFields{ClaimsByCredential: namespace + "/" + name}); err != nil {
		return nil, fmt.Errorf("listing identity claims used by %s/%s: %w", namespace, name, err)
	}
	return list.Items, nil
}

// EnvironmentAllowed applies tenancy.EnvironmentAllowed to cred and the
// auth.agrenting.io/environment label of its namespace, read as metadata
// only (a namespace that is gone sets no rule).
func EnvironmentAllowed(ctx context.Context, c client.Reader, cred *authv1alpha1.AgentCredential) (bool, error) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := c.Get(ctx, client.ObjectKey{Name: cred.Namespace}, ns); err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("reading namespace %s: %w", cred.Namespace, err)
	}
	return tenancy.EnvironmentAllowed(ns.Labels[authv1alpha1.NamespaceEnvironmentLabel], string(cred.Environment())), nil
}
