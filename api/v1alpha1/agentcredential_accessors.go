package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// CredentialType returns the type, defaulting to APIKey as the schema does.
func (c *AgentCredential) CredentialType() CredentialType {
	if c.Spec.Type == "" {
		return APIKeyType
	}
	return c.Spec.Type
}

// SecretName returns the agent Secret's name: spec.secretName or the credential's name.
func (c *AgentCredential) SecretName() string {
	if c.Spec.SecretName != "" {
		return c.Spec.SecretName
	}
	return c.Name
}

// AgentIDs returns the agents this credential names, lower-cased: the agentID
// of an APIKey or the agents of a UserToken.
func (c *AgentCredential) AgentIDs() []string {
	if c.CredentialType() == UserTokenType {
		ids := make([]string, 0, len(c.Spec.Agents))
		for _, a := range c.Spec.Agents {
			ids = append(ids, strings.ToLower(a))
		}
		return ids
	}
	if c.Spec.AgentID == "" {
		return nil
	}
	return []string{strings.ToLower(c.Spec.AgentID)}
}

// RotationPeriod returns spec.rotation.period or the 90-day default.
func (c *AgentCredential) RotationPeriod() time.Duration {
	if p := c.Spec.Rotation.Period; p != nil && p.Duration > 0 {
		return p.Duration
	}
	return DefaultRotationPeriod
}

// GracePeriod returns spec.rotation.gracePeriod, or the 10-minute default
// when unset (the schema defaults it; this covers objects built in code).
func (c *AgentCredential) GracePeriod() time.Duration {
	if g := c.Spec.Rotation.GracePeriod; g != nil {
		return g.Duration
	}
	return DefaultGracePeriod
}

// MaxRotationRequestLen is the longest rotate-annotation value recorded as
// it is; a longer one is recorded as "sha256:" and its hex digest, so a huge
// annotation cannot bloat the status or the hash Secret.
const MaxRotationRequestLen = 128

// RotationRequest returns the value of the rotate annotation as recorded in
// status.lastRotationRequest: as it is, or digested when longer than
// MaxRotationRequestLen. Empty when there is no annotation.
func (c *AgentCredential) RotationRequest() string {
	v := c.Annotations[RotateAnnotation]
	if len(v) <= MaxRotationRequestLen {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ExpiresAt returns spec.expiresAt, or the zero time when the credential
// does not expire.
func (c *AgentCredential) ExpiresAt() time.Time {
	if c.Spec.ExpiresAt == nil {
		return time.Time{}
	}
	return c.Spec.ExpiresAt.Time
}

// Environment returns spec.environment, defaulting to live as the schema does.
func (c *AgentCredential) Environment() Environment {
	if c.Spec.Environment == "" {
		return LiveEnvironment
	}
	return c.Spec.Environment
}
