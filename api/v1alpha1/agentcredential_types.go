package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CredentialType says which kind of key a credential issues.
// +kubebuilder:validation:Enum=APIKey;UserToken
type CredentialType string

const (
	// APIKeyType issues an `ak_` key that authenticates as exactly one agent.
	APIKeyType CredentialType = "APIKey"
	// UserTokenType issues an `ap_` token that belongs to a user and may act as
	// any of a list of agents, picked per request with X-Agent-ID.
	UserTokenType CredentialType = "UserToken"
)

// Defaults of the rotation schedule.
const (
	// DefaultRotationPeriod is the platform's recommended key lifetime: 90 days.
	DefaultRotationPeriod = 90 * 24 * time.Hour
	// DefaultGracePeriod keeps a scheduled rotation's old key valid for 10 minutes.
	DefaultGracePeriod = 10 * time.Minute
	// MinRotationPeriod is the shortest allowed period.
	MinRotationPeriod = time.Hour
	// MaxRotationPeriod is the longest allowed period: one year.
	MaxRotationPeriod = 365 * 24 * time.Hour
)

// AgentCredentialSpec declares the credential an agent should hold.
// +kubebuilder:validation:XValidation:rule="self.type != 'APIKey' || has(self.agentID)",message="agentID is required when type is APIKey"
// +kubebuilder:validation:XValidation:rule="self.type != 'APIKey' || (!has(self.user) && !has(self.agents))",message="user and agents are only allowed when type is UserToken"
// +kubebuilder:validation:XValidation:rule="self.type != 'UserToken' || (has(self.user) && has(self.agents))",message="user and agents are required when type is UserToken"
// +kubebuilder:validation:XValidation:rule="self.type != 'UserToken' || !has(self.agentID)",message="agentID is not allowed when type is UserToken; list the agents in agents"
// +kubebuilder:validation:XValidation:rule="has(oldSelf.agentID) == has(self.agentID)",message="agentID is immutable"
// +kubebuilder:validation:XValidation:rule="has(oldSelf.user) == has(self.user)",message="user is immutable"
// +kubebuilder:validation:XValidation:rule="(has(oldSelf.environment) ? oldSelf.environment : 'live') == (has(self.environment) ? self.environment : 'live')",message="environment is immutable: create a new credential for the other environment"
type AgentCredentialSpec struct {
	// Type of the credential: APIKey (an `ak_` key for one agent) or
	// UserToken (an `ap_` token for a user acting as one of several agents).
	// +kubebuilder:default=APIKey
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="type is immutable"
	// +optional
	Type CredentialType `json:"type,omitempty"`

	// AgentID is the UUID of the agent an APIKey authenticates as.
	// Required for APIKey, forbidden for UserToken.
	// +kubebuilder:validation:MaxLength=36
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')",message="agentID must be a UUID such as 6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="agentID is immutable"
	// +optional
	AgentID string `json:"agentID,omitempty"`

	// User the UserToken belongs to, for example an e-mail address. No white
	// space, control or invisible (format) characters: the user reaches
	// X-Auth-User and Kubernetes usernames as it is.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[^\s\p{C}\p{Z}]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="user is immutable"
	// +optional
	User string `json:"user,omitempty"`

	// Agents a UserToken may act as (UUIDs, 1 to 100, unique).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=36
	// +kubebuilder:validation:XValidation:rule="self.all(a, a.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'))",message="agents must be UUIDs such as 6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, b.lowerAscii() == a.lowerAscii()))",message="agents must be unique"
	// +listType=atomic
	// +optional
	Agents []string `json:"agents,omitempty"`

	// SecretName is the Secret in this namespace that receives the key.
	// Defaults to the name of the AgentCredential.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="secretName is immutable"
	// +optional
	SecretName string `json:"secretName,omitempty"`

	// Rotation schedules the key's replacement.
	// +kubebuilder:default={}
	// +optional
	Rotation RotationSpec `json:"rotation,omitempty"`

	// SessionTTL caps the lifetime of session tokens minted with this
	// credential. The server-wide --session-ttl applies when it is shorter or
	// when this is unset. A Go duration such as 30m or 1h30m (units ns, us,
	// µs, ms, s, m, h; there is no d).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="sessionTTL must be between 1m and 24h"
	// +optional
	SessionTTL *metav1.Duration `json:"sessionTTL,omitempty"`

	// Environment of the credential's keys: live (the default) or sandbox.
	// Sandbox keys are prefixed ak_test_ / ap_test_, the auth endpoint
	// reports X-Auth-Environment: sandbox for them and their sessions, and
	// routes can refuse them (?environment=live). In a namespace labelled
	// auth.agrenting.io/environment=sandbox only sandbox credentials are
	// issued. Immutable.
	// +kubebuilder:default=live
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="environment is immutable: create a new credential for the other environment"
	// +optional
	Environment Environment `json:"environment,omitempty"`

	// ExpiresAt is a hard expiry: at this instant the key and every session
	// minted from it stop authenticating for good (401 expired_credentials),
	// and no rotation is scheduled past it. Moving it into the future on an
	// expired credential issues a new key; the expired one never comes back.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:MaxLength=35
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// SecretTemplate holds labels and annotations copied onto the agent
	// Secret: at most 64 KiB in all (keys and values, UTF-8).
	// +optional
	SecretTemplate *SecretTemplate `json:"secretTemplate,omitempty"`
}

// Environment says whether a credential's keys are for production (live)
// or testing (sandbox).
// +kubebuilder:validation:Enum=live;sandbox
type Environment string

// Environments.
const (
	LiveEnvironment    Environment = "live"
	SandboxEnvironment Environment = "sandbox"
)

// RestartTargetKind is a kind of workload agentcred can restart.
// +kubebuilder:validation:Enum=Deployment;StatefulSet;DaemonSet
type RestartTargetKind string

// Kinds of restart targets.
const (
	DeploymentKind  RestartTargetKind = "Deployment"
	StatefulSetKind RestartTargetKind = "StatefulSet"
	DaemonSetKind   RestartTargetKind = "DaemonSet"
)

// RestartTarget is a workload in the credential's namespace whose pods read
// the key (for example from an environment variable) and must be restarted
// when it changes.
type RestartTarget struct {
	// Kind of the workload: Deployment, StatefulSet or DaemonSet.
	Kind RestartTargetKind `json:"kind"`
	// Name of the workload in the credential's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// String is Kind/name, as events and the CLI show a target.
func (t RestartTarget) String() string { return string(t.Kind) + "/" + t.Name }

// RotationSpec schedules key rotation.
// +kubebuilder:validation:XValidation:rule="!has(self.gracePeriod) || !has(self.period) || duration(self.gracePeriod) < duration(self.period)",message="gracePeriod must be shorter than period"
type RotationSpec struct {
	// Period between scheduled rotations. Default 2160h (90 days),
	// at least 1h and at most 8760h (one year). A Go duration such as 720h
	// or 1h30m (units ns, us, µs, ms, s, m, h; there is no d: write 90 days
	// as 2160h).
	// +kubebuilder:default="2160h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h') && duration(self) <= duration('8760h')",message="period must be between 1h and 8760h"
	// +optional
	Period *metav1.Duration `json:"period,omitempty"`

	// GracePeriod keeps the old key valid this long after a scheduled
	// rotation, so pods can pick up the new key. Requested rotations
	// (the auth.agrenting.io/rotate annotation) revoke at once. Default 10m.
	// A Go duration such as 0s, 90s or 10m.
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="gracePeriod must not be negative"
	// +optional
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`

	// RestartTargets are workloads in this namespace restarted whenever the
	// agent Secret gets a new key: their pod template gets the annotation
	// auth.agrenting.io/restarted-for: <keyID>. After a scheduled rotation
	// the previous key stays valid beyond gracePeriod while a target is
	// still rolling out (up to the operator's --max-grace). Up to 20.
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:XValidation:rule="self.all(t, self.exists_one(u, u.kind == t.kind && u.name == t.name))",message="restartTargets must be unique"
	// +listType=atomic
	// +optional
	RestartTargets []RestartTarget `json:"restartTargets,omitempty"`
}

// SecretTemplate holds metadata for the agent Secret. Its keys and values
// together take at most 64 KiB (UTF-8), a quarter of what Kubernetes allows
// a Secret's annotations.
// +kubebuilder:validation:XValidation:rule="(has(self.labels) ? self.labels.map(k, k.size() + bytes(self.labels[k]).size()).sum() : 0) + (has(self.annotations) ? self.annotations.map(k, k.size() + bytes(self.annotations[k]).size()).sum() : 0) <= 65536",message="labels and annotations must take at most 65536 bytes in all (keys and values)"
type SecretTemplate struct {
	// Labels to add to the agent Secret. agentcred's own labels win on
	// conflict. Up to 64; keys up to 317 characters, values up to 63.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 317)",message="label keys must be at most 317 characters (a 253-character prefix, '/' and a 63-character name)"
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations to add to the agent Secret. Up to 64; keys up to 317
	// characters, values up to 16384.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 317)",message="annotation keys must be at most 317 characters (a 253-character prefix, '/' and a 63-character name)"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// AgentCredentialStatus is what agentcred observed and did. It never holds a
// key or a hash: keyIDs are safe to show.
type AgentCredentialStatus struct {
	// AgentID is the agent an APIKey authenticates as.
	// +kubebuilder:validation:MaxLength=36
	// +optional
	AgentID string `json:"agentID,omitempty"`
	// SecretName is the agent Secret holding the key.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// KeyID identifies the current key: the first 12 hex characters of its SHA-256.
	// +kubebuilder:validation:MaxLength=12
	// +optional
	KeyID string `json:"keyID,omitempty"`
	// PreviousKeyID identifies the key replaced by the last scheduled
	// rotation while it is still valid.
	// +kubebuilder:validation:MaxLength=12
	// +optional
	PreviousKeyID string `json:"previousKeyID,omitempty"`
	// PreviousKeyExpiresAt is when the previous key stops authenticating.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:MaxLength=35
	// +optional
	PreviousKeyExpiresAt *metav1.Time `json:"previousKeyExpiresAt,omitempty"`
	// LastRotationTime is when the current key was issued.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:MaxLength=35
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`
	// NextRotationTime is when the current key is scheduled to be replaced.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=date-time
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:MaxLength=35
	// +optional
	NextRotationTime *metav1.Time `json:"nextRotationTime,omitempty"`
	// RotationCount counts rotations after the first issue.
	// +optional
	RotationCount int64 `json:"rotationCount,omitempty"`
	// LastRotationRequest is the last value of the auth.agrenting.io/rotate
	// annotation that was acted on (digested when longer than 128 bytes).
	// +kubebuilder:validation:MaxLength=128
	// +optional
	LastRotationRequest string `json:"lastRotationRequest,omitempty"`
	// RestartTargets says, per restart target, whether it runs the current
	// key: RolledOut, Rolling or NotFound.
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	// +optional
	RestartTargets []RestartTargetStatus `json:"restartTargets,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready says whether the key is issued and accepted.
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// RolloutState says where a restart target's rollout of the current key is.
// +kubebuilder:validation:Enum=RolledOut;Rolling;NotFound
type RolloutState string

// Rollout states of a restart target.
const (
	// RolledOut: the target's pod template names the current key and its
	// rollout has completed.
	RolledOut RolloutState = "RolledOut"
	// Rolling: the target was restarted for the current key and its rollout
	// has not completed yet.
	Rolling RolloutState = "Rolling"
	// TargetNotFound: no such workload in the credential's namespace.
	TargetNotFound RolloutState = "NotFound"
)

// RestartTargetStatus is the rollout state of one restart target.
type RestartTargetStatus struct {
	Kind RestartTargetKind `json:"kind"`
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// State is RolledOut, Rolling or NotFound.
	State RolloutState `json:"state"`
	// Message says what the rollout waits for.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Message string `json:"message,omitempty"`
}

// metadata.name is at most 63 characters (agentcred labels the Secrets it
// creates with it): hack/crdmeta writes that into the CRD's schema, which no
// marker can.

// AgentCredential asks agentcred to issue a key into a Secret, keep its hash
// for the auth endpoint and rotate it on a schedule.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="(has(oldSelf.spec.secretName) ? oldSelf.spec.secretName : oldSelf.metadata.name) == (has(self.spec.secretName) ? self.spec.secretName : self.metadata.name)",message="secretName is immutable (setting it to its default, the credential's own name, or removing it when it is that, is allowed)"
// +kubebuilder:resource:shortName=agentcred;agc,categories=agentcred
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Env",type=string,JSONPath=`.spec.environment`
// +kubebuilder:printcolumn:name="Agent",type=string,JSONPath=`.status.agentID`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`
// +kubebuilder:printcolumn:name="Key",type=string,JSONPath=`.status.keyID`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.spec.expiresAt`,priority=1
// +kubebuilder:printcolumn:name="Next Rotation",type=string,JSONPath=`.status.nextRotationTime`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AgentCredential struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AgentCredentialSpec   `json:"spec,omitempty"`
	Status AgentCredentialStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// AgentCredentialList is a list of AgentCredentials.
type AgentCredentialList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentCredential `json:"items"`
}
