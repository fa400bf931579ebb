package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

func claim(name string, kind authv1alpha1.IdentityKind, value, namespace string) *authv1alpha1.IdentityClaim {
	return &authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       authv1alpha1.IdentityClaimSpec{Kind: kind, Value: value, Namespace: namespace},
	}
}

// TestIdentityClaimSchema: what the API server itself refuses in a claim,
// each with a message that names the problem.
func TestIdentityClaimSchema(t *testing.T) {
	ctx := context.Background()
	const userName = "user-0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name  string
		claim *authv1alpha1.IdentityClaim
		want  string // "" = accepted
	}{
		{"agent", claim("agent-"+agentA, authv1alpha1.AgentIdentity, agentA, "team-a"), ""},
		{"user", claim(userName, authv1alpha1.UserIdentity, strings.Repeat("é", 256), "team-a"), ""},
		{"invalid kind", claim("group-x", "Group", "x", "team-a"), `spec.kind: Unsupported value: "Group"`},
		{"upper-case agent", claim("agent-"+strings.ToUpper(agentB), authv1alpha1.AgentIdentity, strings.ToUpper(agentB), "team-a"), "value of an Agent claim must be a lower-case UUID"},
		{"agent value not a UUID", claim("agent-x", authv1alpha1.AgentIdentity, "x", "team-a"), "value of an Agent claim must be a lower-case UUID"},
		{"agent claim named for another agent", claim("agent-"+agentA, authv1alpha1.AgentIdentity, agentB, "team-b"), "an Agent claim must be named agent-<value>"},
		{"user claim with a wrong name", claim("user-alice", authv1alpha1.UserIdentity, "alice", "team-a"), "a User claim must be named user-"},
		{"user with white space", claim(userName, authv1alpha1.UserIdentity, "alice smith", "team-a"), "must not contain white space"},
		{"user with an invisible character", claim(userName, authv1alpha1.UserIdentity, "ali\u200bce", "team-a"), "invisible format characters"},
		{"user longer than 256", claim(userName, authv1alpha1.UserIdentity, strings.Repeat("a", 257), "team-a"), "spec.value: Too long"},
		{"bad namespace", claim("agent-"+agentB, authv1alpha1.AgentIdentity, agentB, "Team_A"), "spec.namespace"},
		{"no namespace", claim("agent-"+agentB, authv1alpha1.AgentIdentity, agentB, ""), "spec.namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := k8s.Create(ctx, tt.claim)
			if err == nil {
				t.Cleanup(func() { _ = k8s.Delete(ctx, tt.claim) })
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestIdentityClaimSpecIsImmutable: a claim's kind and value never change;
// its namespace may (that is how an admin moves an identity, atomically).
func TestIdentityClaimSpecIsImmutable(t *testing.T) {
	ctx := context.Background()
	c := claim("user-0123456789abcdef0123456789abcdef0123456a", authv1alpha1.UserIdentity, "alice", "team-a")
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, c) })
	for _, change := range []func(*authv1alpha1.IdentityClaim){
		func(c *authv1alpha1.IdentityClaim) { c.Spec.Value = "bob" },
		func(c *authv1alpha1.IdentityClaim) { c.Spec.Kind = authv1alpha1.AgentIdentity },
	} {
		changed := c.DeepCopy()
		change(changed)
		err := k8s.Update(ctx, changed)
		if err == nil || !strings.Contains(err.Error(), "spec.kind and spec.value are immutable") {
			t.Fatalf("changing a claim's identity: %v", err)
		}
	}
	c.Spec.Namespace = "team-b"
	if err := k8s.Update(ctx, c); err != nil {
		t.Fatalf("moving a claim: %v", err)
	}
}
