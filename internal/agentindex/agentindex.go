// Package agentindex connects the tenancy rule to Kubernetes: it indexes
// AgentCredentials by the agent IDs they name and lists the claims on an
// agent ID from that index. The controller and the admission webhook use it,
// so both enforce the same rule.
package agentindex

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// Field is the name of the field index of AgentCredentials by agent ID.
const Field = "agentcred.agentIDs"

// Register adds the index to a cache. Call it once per manager.
func Register(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &authv1alpha1.AgentCredential{}, Field, agentIDs)
}

func agentIDs(o client.Object) []string {
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

// ListClaims returns the claims of every credential naming any of agentIDs.
func ListClaims(ctx context.Context, c client.Reader, agentIDs []string) ([]tenancy.Claim, error) {
	var claims []tenancy.Claim
	seen := map[string]bool{}
	for _, id := range agentIDs {
		list := &authv1alpha1.AgentCredentialList{}
		if err := c.List(ctx, list, client.MatchingFields{Field: id}); err != nil {
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
