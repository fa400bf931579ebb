package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IdentityKind says what an IdentityClaim binds: an agent ID or a user.
// +kubebuilder:validation:Enum=Agent;User
type IdentityKind string

const (
	// AgentIdentity is an agent ID (a UUID), named by spec.agentID of an
	// APIKey or spec.agents of a UserToken.
	AgentIdentity IdentityKind = "Agent"
	// UserIdentity is a user, named by spec.user of a UserToken.
	UserIdentity IdentityKind = "User"
)

// Prefixes of IdentityClaim names: agent-<lower-case UUID> and
// user-<first 40 hex characters of SHA-256 of the canonical user>.
const (
	AgentClaimPrefix = "agent-"
	UserClaimPrefix  = "user-"
)

// IdentityClaimSpec binds one identity to one namespace.
// +kubebuilder:validation:XValidation:rule="self.kind != 'Agent' || self.value.matches('^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')",message="value of an Agent claim must be a lower-case UUID"
// +kubebuilder:validation:XValidation:rule="self.kind != 'User' || self.value.matches('^[^\\\\s\\\\p{C}\\\\p{Z}]+$')",message="value of a User claim must not contain white space, control or invisible format characters"
type IdentityClaimSpec struct {
	// Kind of identity: Agent (an agent ID) or User.
	Kind IdentityKind `json:"kind"`

	// Value is the agent ID (lower-case UUID) or the user, as AgentCredentials name it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Value string `json:"value"`

	// Namespace whose AgentCredentials may use the identity. A cluster admin
	// moves the identity by changing it (one atomic update: deleting the
	// claim instead would let the namespace using it claim it again).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
}

// IdentityClaimStatus records who uses the claim, so that an unused claim
// can be released after --claim-hold. agentcred writes it with the claim
// (there is no status subresource).
type IdentityClaimStatus struct {
	// Credentials are the names of the AgentCredentials in spec.namespace
	// that currently use the identity.
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	// +optional
	Credentials []string `json:"credentials,omitempty"`
	// LastUsedTime is when a credential last started or stopped using the identity.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:MaxLength=35
	// +optional
	LastUsedTime *metav1.Time `json:"lastUsedTime,omitempty"`
}

// IdentityClaim binds an agent ID or a user to the one namespace whose
// AgentCredentials may use it. It is cluster-scoped, so tenants with rights
// only in their namespaces can neither create nor edit claims. agentcred
// creates a claim the first time a namespace uses an identity (unless
// --identity-claims=preassigned); cluster admins may create claims to
// assign identities, change spec.namespace to move one, and delete claims to
// release them.
//
// It has no status subresource on purpose: agentcred creates a claim with
// its first user already recorded, in one request.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=agentcred
// +kubebuilder:validation:XValidation:rule="self.spec.kind == oldSelf.spec.kind && self.spec.value == oldSelf.spec.value",message="spec.kind and spec.value are immutable; only spec.namespace may change, to move the identity to another namespace"
// +kubebuilder:validation:XValidation:rule="self.spec.kind != 'Agent' || self.metadata.name == 'agent-' + self.spec.value",message="an Agent claim must be named agent-<value>"
// +kubebuilder:validation:XValidation:rule="self.spec.kind != 'User' || self.metadata.name.matches('^user-[0-9a-f]{40}$')",message="a User claim must be named user-<first 40 hex characters of SHA-256 of the lower-cased, NFKC-normalised user>"
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.kind`
// +kubebuilder:printcolumn:name="Value",type=string,JSONPath=`.spec.value`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.namespace`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IdentityClaim struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IdentityClaimSpec   `json:"spec"`
	Status IdentityClaimStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// IdentityClaimList is a list of IdentityClaims.
type IdentityClaimList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IdentityClaim `json:"items"`
}
