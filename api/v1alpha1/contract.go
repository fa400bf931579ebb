package v1alpha1

// The on-cluster contract: every name that users, the controller, the auth
// endpoint, the CLI and the tests rely on — labels, annotations, the
// finalizer, Secret roles and data keys, condition reasons. Declared once,
// here; every other package imports them.

// Names of labels, annotations and finalizers that users and other components rely on.
const (
	// ManagedByLabel marks every object agentcred creates.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel.
	ManagedByValue = "agentcred"
	// CredentialLabel carries the name of the owning AgentCredential.
	CredentialLabel = "auth.agrenting.io/credential"
	// CredentialNamespaceLabel carries the namespace of the owning AgentCredential.
	CredentialNamespaceLabel = "auth.agrenting.io/credential-namespace"
	// SecretRoleLabel tells the agent Secret, the hash Secret and the session
	// signing-key Secret apart, so each reader can watch only its own kind.
	SecretRoleLabel = "auth.agrenting.io/secret-role"
	// SecretRoleAgentKey marks agent Secrets (they hold keys).
	SecretRoleAgentKey = "agent-key"
	// SecretRoleKeyHash marks hash Secrets in the operator namespace.
	SecretRoleKeyHash = "key-hash"
	// SecretRoleSessionKeys marks the session signing-key Secret in the operator namespace.
	SecretRoleSessionKeys = "session-keys"
	// SecretRoleAuthTLS marks the auth endpoint's serving certificate Secret
	// in the operator namespace (--auth-tls-secret-name).
	SecretRoleAuthTLS = "auth-tls"
	// SecretRoleAuthCA marks the Secret with the CA that signs it, kept in the
	// webhook-certificate namespace, which the auth endpoint cannot read.
	SecretRoleAuthCA = "auth-ca"
	// RotateAnnotation requests an immediate rotation when its value changes.
	RotateAnnotation = "auth.agrenting.io/rotate"
	// RestartedForAnnotation is set on each restart target's pod template to
	// the keyID the pods must run with; changing it rolls the workload.
	RestartedForAnnotation = "auth.agrenting.io/restarted-for"
	// NamespaceEnvironmentLabel on a Namespace set to "sandbox" admits only
	// sandbox credentials there.
	NamespaceEnvironmentLabel = "auth.agrenting.io/environment"
	// CleanupFinalizer removes the hash Secret in the operator namespace.
	CleanupFinalizer = "auth.agrenting.io/cleanup"
)

// Data keys of the agent Secret, the Secret in the credential's namespace
// that the agent's pod mounts.
const (
	// AgentSecretAPIKey holds the `ak_` key of an APIKey credential.
	AgentSecretAPIKey = "api-key"
	// AgentSecretAgentID holds the agent ID of an APIKey credential.
	AgentSecretAgentID = "agent-id"
	// AgentSecretToken holds the `ap_` token of a UserToken credential.
	AgentSecretToken = "token"
	// AgentSecretAgentIDs holds the agents of a UserToken, one per line.
	AgentSecretAgentIDs = "agent-ids"
	// AgentSecretUser holds the user of a UserToken.
	AgentSecretUser = "user"
)

// AgentSecretKeyField is the data key that holds the key of a credential of type t.
func AgentSecretKeyField(t CredentialType) string {
	if t == UserTokenType {
		return AgentSecretToken
	}
	return AgentSecretAPIKey
}

// ReadyCondition is the kstatus-style summary condition.
const ReadyCondition = "Ready"

// Reasons of the Ready condition.
const (
	ReasonIssued          = "KeyIssued"
	ReasonAgentIDConflict = "AgentIDConflict"
	// ReasonUserConflict: spec.user is claimed by another namespace.
	ReasonUserConflict = "UserConflict"
	// ReasonIdentityNotAssigned: with --identity-claims=preassigned, no
	// IdentityClaim assigns an identity the credential names to its namespace.
	ReasonIdentityNotAssigned = "IdentityNotAssigned"
	// ReasonClaimLimitReached: the namespace holds --max-claims-per-namespace
	// claims and may not claim another identity.
	ReasonClaimLimitReached = "ClaimLimitReached"
	ReasonSecretConflict    = "SecretConflict"
	// ReasonEnvironmentNotAllowed: a live credential in a namespace labelled
	// auth.agrenting.io/environment=sandbox; it gets no key.
	ReasonEnvironmentNotAllowed = "EnvironmentNotAllowed"
	// ReasonExpired: spec.expiresAt has passed; the key no longer authenticates.
	ReasonExpired         = "Expired"
	ReasonReconcileFailed = "ReconcileFailed"
)

// The auth endpoint's TLS (--auth-tls-secret-name): the CA's Secret, in the
// webhook-certificate namespace, and the ConfigMap that publishes the CA to
// clients, in the operator namespace, are both named AuthCAName.
const (
	AuthCAName = "agentcred-auth-ca"
	// AuthCACertKey holds the bundle clients trust (PEM), in the ConfigMap
	// and in the serving Secret. The CA Secret's own layout is
	// internal/authcert's.
	AuthCACertKey = "ca.crt"
)
