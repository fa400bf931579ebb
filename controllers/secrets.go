package controllers

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/rotation"
)

// agentSecret is what the controller found at spec.secretName.
type agentSecret struct {
	// secret is nil when there is none.
	secret *corev1.Secret
	key    rotation.AgentKey
	// foreign is true when a Secret exists there that this credential does not control.
	foreign bool
}

// hashSecret is the credential's hash Secret in the operator namespace.
type hashSecret struct {
	// secret is nil when there is none.
	secret *corev1.Secret
	// record is nil when the Secret is missing, damaged, or left from an
	// earlier credential of the same name.
	record *hashsecret.Record
	// left is what could be read of a damaged record of this credential
	// (nil otherwise): a rebuild keeps its times.
	left *hashsecret.Record
	// retired are the keyIDs no rebuilt or new record may make current:
	// those a damaged or earlier record lists as retired, and every key of
	// a record left from an earlier credential of the same name.
	retired []string
}

func keyKind(t authv1alpha1.CredentialType) credential.Kind {
	if t == authv1alpha1.UserTokenType {
		return credential.UserToken
	}
	return credential.APIKey
}

// keyEnvironment is the environment of cred's keys.
func keyEnvironment(cred *authv1alpha1.AgentCredential) credential.Environment {
	if cred.Environment() == authv1alpha1.SandboxEnvironment {
		return credential.Sandbox
	}
	return credential.Live
}

func newKey(cred *authv1alpha1.AgentCredential) (string, credential.Digest, error) {
	key, err := credential.GenerateIn(keyKind(cred.CredentialType()), keyEnvironment(cred))
	if err != nil {
		return "", credential.Digest{}, err
	}
	return key, credential.DigestOf(key), nil
}

// ownLabels are the labels on every object agentcred creates for cred.
func ownLabels(cred *authv1alpha1.AgentCredential, role string) map[string]string {
	return map[string]string{
		authv1alpha1.ManagedByLabel:           authv1alpha1.ManagedByValue,
		authv1alpha1.CredentialLabel:          cred.Name,
		authv1alpha1.CredentialNamespaceLabel: cred.Namespace,
		authv1alpha1.SecretRoleLabel:          role,
	}
}

// markSecretConflict reports that spec.secretName names a Secret this
// credential does not control: Ready=False and a Warning event.
func (r *AgentCredentialReconciler) markSecretConflict(cred *authv1alpha1.AgentCredential) {
	r.reportConflict(cred, authv1alpha1.ReasonSecretConflict, fmt.Sprintf(
		"Secret %s already exists and is not controlled by this AgentCredential; agentcred will not overwrite it. "+
			"Delete that Secret or create the credential with another spec.secretName", cred.SecretName()))
}

// getAgentSecret reads the agent Secret from the API server. The cache
// holds only the metadata of Secrets labelled as ours (CacheOptions), so
// the content always comes from the API server, as does any Secret the
// cache does not know: a foreign Secret (or ours with its labels stripped)
// must not be overwritten blindly.
func (r *AgentCredentialReconciler) getAgentSecret(ctx context.Context, cred *authv1alpha1.AgentCredential) (*agentSecret, error) {
	key := types.NamespacedName{Namespace: cred.Namespace, Name: cred.SecretName()}
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		return &agentSecret{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", key.Name, err)
	}
	if !metav1.IsControlledBy(s, cred) {
		return &agentSecret{foreign: true}, nil
	}
	value, present := s.Data[authv1alpha1.AgentSecretKeyField(cred.CredentialType())]
	return &agentSecret{secret: s, key: rotation.Inspect(string(value), present, keyKind(cred.CredentialType()), keyEnvironment(cred))}, nil
}

// applyAgentSecret sets everything but the key on s: labels, annotations,
// the owner reference and the identity data.
func (r *AgentCredentialReconciler) applyAgentSecret(cred *authv1alpha1.AgentCredential, s *corev1.Secret) error {
	s.Namespace, s.Name = cred.Namespace, cred.SecretName()
	labels := map[string]string{}
	annotations := map[string]string{}
	if t := cred.Spec.SecretTemplate; t != nil {
		maps.Copy(labels, t.Labels)
		maps.Copy(annotations, t.Annotations)
	}
	maps.Copy(labels, ownLabels(cred, authv1alpha1.SecretRoleAgentKey))
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	maps.Copy(s.Labels, labels)
	if len(annotations) > 0 {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		maps.Copy(s.Annotations, annotations)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	if cred.CredentialType() == authv1alpha1.UserTokenType {
		s.Data[authv1alpha1.AgentSecretAgentIDs] = []byte(strings.Join(cred.Spec.Agents, "\n"))
		s.Data[authv1alpha1.AgentSecretUser] = []byte(cred.Spec.User)
	} else {
		s.Data[authv1alpha1.AgentSecretAgentID] = []byte(cred.Spec.AgentID)
	}
	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	return controllerutil.SetControllerReference(cred, s, r.Scheme)
}

// writeAgentKey puts key into the agent Secret, creating it if needed.
func (r *AgentCredentialReconciler) writeAgentKey(ctx context.Context, cred *authv1alpha1.AgentCredential, agent *agentSecret, key string) error {
	s := &corev1.Secret{}
	if agent.secret != nil {
		s = agent.secret.DeepCopy()
	}
	templated, err := r.withSecretTemplate(ctx, cred, agent.secret)
	if err != nil {
		return err
	}
	if err := r.applyAgentSecret(templated, s); err != nil {
		return err
	}
	s.Data[authv1alpha1.AgentSecretKeyField(cred.CredentialType())] = []byte(key)
	if err := r.createOrUpdate(ctx, s, agent.secret != nil); err != nil {
		return err
	}
	agent.secret = s
	agent.key = rotation.Inspect(key, true, keyKind(cred.CredentialType()), keyEnvironment(cred))
	return nil
}

// createOrUpdate writes s: an update carrying the resourceVersion that was
// read when it exists (a stale cache then fails instead of undoing newer
// work), a create when it does not (a stale cache then fails AlreadyExists).
func (r *AgentCredentialReconciler) createOrUpdate(ctx context.Context, s *corev1.Secret, exists bool) error {
	if exists {
		return r.Update(ctx, s)
	}
	return r.Create(ctx, s)
}

// reconcileAgentSecretMetadata repairs labels, annotations and identity data
// edited on the agent Secret, leaving the key alone.
func (r *AgentCredentialReconciler) reconcileAgentSecretMetadata(ctx context.Context, cred *authv1alpha1.AgentCredential, agent *agentSecret) error {
	if agent.secret == nil {
		return nil
	}
	templated, err := r.withSecretTemplate(ctx, cred, agent.secret)
	if err != nil {
		return err
	}
	s := agent.secret.DeepCopy()
	if err := r.applyAgentSecret(templated, s); err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(s, agent.secret) {
		return nil
	}
	if err := r.Update(ctx, s); err != nil {
		return fmt.Errorf("repairing Secret %s: %w", s.Name, err)
	}
	agent.secret = s
	return nil
}

func (r *AgentCredentialReconciler) deleteAgentSecret(ctx context.Context, cred *authv1alpha1.AgentCredential) error {
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: cred.Namespace, Name: cred.SecretName()}, s)
	if apierrors.IsNotFound(err) || (err == nil && !metav1.IsControlledBy(s, cred)) {
		return nil
	}
	if err != nil {
		return err
	}
	uid := s.UID
	return client.IgnoreNotFound(r.Delete(ctx, s, client.Preconditions{UID: &uid}))
}

// getHashSecret reads the credential's hash Secret from the cache.
func (r *AgentCredentialReconciler) getHashSecret(ctx context.Context, cred *authv1alpha1.AgentCredential) (*hashSecret, error) {
	s := &corev1.Secret{}
	err := r.Get(ctx, types.NamespacedName{Namespace: r.OperatorNamespace, Name: hashsecret.Name(cred.Namespace, cred.Name)}, s)
	if apierrors.IsNotFound(err) {
		return &hashSecret{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the hash Secret: %w", err)
	}
	rec, err := hashsecret.Parse(s.Data)
	own := func(rec *hashsecret.Record) bool {
		return rec.UID == string(cred.UID) && rec.Credential == cred.Namespace+"/"+cred.Name
	}
	if err != nil {
		log.FromContext(ctx).Info("Found a damaged hash Secret; it will be rewritten", "secret", s.Name, "problem", err.Error())
		left := hashsecret.Salvage(s.Data)
		hash := &hashSecret{secret: s, retired: rotation.Retired(left, own(left))}
		if own(left) {
			hash.left = left
		}
		return hash, nil
	}
	if !own(rec) {
		return &hashSecret{secret: s, retired: rotation.Retired(rec, false)}, nil
	}
	return &hashSecret{secret: s, record: rec}, nil
}

// writeHashSecret stores rec in the hash Secret, creating it if needed. The
// update carries the resourceVersion read, so a stale cache fails the write
// instead of undoing a newer one.
func (r *AgentCredentialReconciler) writeHashSecret(ctx context.Context, cred *authv1alpha1.AgentCredential, hash *hashSecret, rec *hashsecret.Record) error {
	s := &corev1.Secret{}
	if hash.secret != nil {
		s = hash.secret.DeepCopy()
	}
	s.Namespace, s.Name = r.OperatorNamespace, hashsecret.Name(cred.Namespace, cred.Name)
	s.Labels = ownLabels(cred, authv1alpha1.SecretRoleKeyHash)
	s.Type = corev1.SecretTypeOpaque
	s.Data = rec.Data()
	if err := r.createOrUpdate(ctx, s, hash.secret != nil); err != nil {
		return fmt.Errorf("writing hash Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	hash.secret, hash.record = s, rec
	return nil
}

// syncHashMetadata rewrites the hash record when the identity it carries
// (agents, session TTL) or its labels no longer match the credential.
func (r *AgentCredentialReconciler) syncHashMetadata(ctx context.Context, cred *authv1alpha1.AgentCredential, hash *hashSecret) error {
	want := *hash.record
	r.refreshRecord(cred, &want)
	if reflect.DeepEqual(&want, hash.record) && maps.Equal(hash.secret.Labels, ownLabels(cred, authv1alpha1.SecretRoleKeyHash)) {
		return nil
	}
	return r.writeHashSecret(ctx, cred, hash, &want)
}

func (r *AgentCredentialReconciler) deleteHashSecret(ctx context.Context, namespace, name string) error {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.OperatorNamespace, Name: hashsecret.Name(namespace, name)}}
	if err := r.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting hash Secret %s: %w", s.Name, err)
	}
	return nil
}

// freshRecord starts a hash record for cred with no key yet, where there is
// no usable one: the keys retired before stay retired.
func (r *AgentCredentialReconciler) freshRecord(cred *authv1alpha1.AgentCredential, hash *hashSecret) *hashsecret.Record {
	rec := r.newRecord(cred)
	rec.Retire(hash.retired...)
	return rec
}

// newRecord starts a hash record for cred with no key yet.
func (r *AgentCredentialReconciler) newRecord(cred *authv1alpha1.AgentCredential) *hashsecret.Record {
	rec := &hashsecret.Record{ExpiresAt: cred.ExpiresAt()}
	r.refreshRecord(cred, rec)
	return rec
}

// refreshRecord copies the credential's identity into rec.
func (r *AgentCredentialReconciler) refreshRecord(cred *authv1alpha1.AgentCredential, rec *hashsecret.Record) {
	rec.Credential = cred.Namespace + "/" + cred.Name
	rec.UID = string(cred.UID)
	rec.Type = string(cred.CredentialType())
	rec.AgentIDs = cred.AgentIDs()
	rec.User = cred.Spec.User
	rec.Environment = ""
	if cred.Environment() == authv1alpha1.SandboxEnvironment {
		rec.Environment = string(authv1alpha1.SandboxEnvironment)
	}
	rec.SessionTTL = 0
	if cred.Spec.SessionTTL != nil {
		rec.SessionTTL = cred.Spec.SessionTTL.Duration
	}
}

// recordFromStatus rebuilds a lost, damaged or leftover hash record from
// the key in the agent Secret, whose keyID the status names
// (rotation.Assess allowed it: no intact record, not a retired key). Only
// the choice of key comes from the status; times come from what is left of
// the record (rotation.Rebuild).
func (r *AgentCredentialReconciler) recordFromStatus(cred *authv1alpha1.AgentCredential, agent *agentSecret, hash *hashSecret) *hashsecret.Record {
	now := r.Clock.Now()
	rec := rotation.Rebuild(*r.newRecord(cred), hash.left, hash.retired, agent.key.Digest, cred.RotationRequest(), now)
	// A key the status reports expired stays dead: rebuilding its record
	// under a later spec.expiresAt would revive it (a renewal issues a new
	// key). The status can only make the record stricter here.
	if c := meta.FindStatusCondition(cred.Status.Conditions, authv1alpha1.ReadyCondition); c != nil && c.Reason == authv1alpha1.ReasonExpired {
		if rec.ExpiresAt.IsZero() || rec.ExpiresAt.After(now) {
			rec.ExpiresAt = now.UTC().Truncate(time.Second)
		}
	}
	return &rec
}
