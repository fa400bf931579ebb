package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

// The manager caches every AgentCredential in the cluster, and a tenant
// chooses how large each one is. trimCredential keeps in the cache only what
// the controller's steady-state reconcile reads; the one part it needs only
// when it writes the agent Secret, spec.secretTemplate, is kept as a
// fingerprint and read from the API server when the Secret must change.

// templateFingerprintAnnotation carries, on cached copies only, the
// fingerprint of the spec.secretTemplate the cache dropped. It never reaches
// the API server: the controller writes credentials with merge patches of
// the fields it changed, and only their status and finalizers.
const templateFingerprintAnnotation = "auth.agrenting.io/cached-secret-template"

// annotationsFingerprintAnnotation carries, on cached copies only, a digest
// of every annotation the object has: the annotations themselves are
// dropped, but a change of any of them still changes the cached copy, so
// it still re-reconciles the credential (the watch's
// AnnotationChangedPredicate), as it did before the trim — a tool or a
// person nudging a credential with an annotation of its own keeps working.
const annotationsFingerprintAnnotation = "auth.agrenting.io/cached-annotations"

// Longest condition and restart-target messages the controller writes
// (setReady, reconcileRestartTargets): a longer cached one was written by
// someone else and is cut the same way, so a reconcile rewrites it.
const (
	maxConditionMessage     = 1024
	maxRestartTargetMessage = 256
)

// trimCredential is the cache transform of AgentCredentials. It keeps the
// identity, generation, timestamps, finalizers, the spec but
// secretTemplate, and the status the controller writes; it drops labels,
// owner references, managedFields, every annotation but the rotate request
// (kept as RotationRequest records it, at most 128 bytes), conditions of
// other types and oversized messages. kubectl's last-applied-configuration
// annotation, often the largest part of an object, is among what goes.
func trimCredential(obj interface{}) (interface{}, error) {
	c, ok := obj.(*authv1alpha1.AgentCredential)
	if !ok {
		return cache.TransformStripManagedFields()(obj)
	}
	m := c.ObjectMeta
	t := &authv1alpha1.AgentCredential{
		TypeMeta: c.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
			Generation: m.Generation, CreationTimestamp: m.CreationTimestamp,
			DeletionTimestamp: m.DeletionTimestamp, DeletionGracePeriodSeconds: m.DeletionGracePeriodSeconds,
			Finalizers: m.Finalizers,
		},
		Spec:   c.Spec,
		Status: c.Status,
	}
	annotations := map[string]string{}
	if _, ok := m.Annotations[authv1alpha1.RotateAnnotation]; ok {
		annotations[authv1alpha1.RotateAnnotation] = c.RotationRequest()
	}
	t.Spec.SecretTemplate = nil
	if fp := templateFingerprint(c.Spec.SecretTemplate); fp != "" {
		annotations[templateFingerprintAnnotation] = fp
	}
	if len(m.Annotations) > 0 {
		annotations[annotationsFingerprintAnnotation] = annotationsFingerprint(m.Annotations)
	}
	if len(annotations) > 0 {
		t.Annotations = annotations
	}
	s := &t.Status
	s.Conditions = nil
	for _, cond := range c.Status.Conditions {
		if cond.Type == authv1alpha1.ReadyCondition || cond.Type == RolledOutCondition {
			cond.Message = truncate(cond.Message, maxConditionMessage)
			s.Conditions = append(s.Conditions, cond)
		}
	}
	if n := len(c.Spec.Rotation.RestartTargets); len(s.RestartTargets) > n {
		s.RestartTargets = s.RestartTargets[:n]
	}
	if len(s.RestartTargets) == 0 {
		s.RestartTargets = nil
	} else {
		s.RestartTargets = slices.Clone(s.RestartTargets)
		for i := range s.RestartTargets {
			s.RestartTargets[i].Message = truncate(s.RestartTargets[i].Message, maxRestartTargetMessage)
		}
	}
	s.LastRotationRequest = truncate(s.LastRotationRequest, authv1alpha1.MaxRotationRequestLen)
	return t, nil
}

// templateFingerprint is what the cache keeps of a secret template: a
// 64-bit digest of each label and annotation it sets on the agent Secret,
// sorted, so that whether an agent Secret carries the whole template can be
// told from the Secret alone (templateOnSecret). Labels agentcred sets
// itself are left out: they always override the template's. "" for no
// template.
func templateFingerprint(t *authv1alpha1.SecretTemplate) string {
	if t == nil {
		return ""
	}
	own := ownLabels(&authv1alpha1.AgentCredential{}, "")
	sums := make([]string, 0, len(t.Labels)+len(t.Annotations))
	for k, v := range t.Labels {
		if _, ours := own[k]; !ours {
			sums = append(sums, entrySum("l", k, v))
		}
	}
	for k, v := range t.Annotations {
		sums = append(sums, entrySum("a", k, v))
	}
	slices.Sort(sums)
	return strings.Join(sums, ",")
}

// annotationsFingerprint is a 64-bit digest of every annotation, sorted.
func annotationsFingerprint(a map[string]string) string {
	keys := slices.Sorted(maps.Keys(a))
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k + "\x00" + a[k] + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func entrySum(kind, k, v string) string {
	h := sha256.New()
	h.Write([]byte(kind + "\x00" + k + "\x00" + v))
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// templateOnSecret reports whether s carries every label and annotation
// the fingerprint fp stands for, with the template's values.
func templateOnSecret(fp string, s *corev1.Secret) bool {
	have := make(map[string]bool, len(s.Labels)+len(s.Annotations))
	for k, v := range s.Labels {
		have[entrySum("l", k, v)] = true
	}
	for k, v := range s.Annotations {
		have[entrySum("a", k, v)] = true
	}
	for _, sum := range strings.Split(fp, ",") {
		if !have[sum] {
			return false
		}
	}
	return true
}

// withSecretTemplate returns cred ready for applyAgentSecret with s, the
// agent Secret as read (nil: none yet). A cached credential has no
// spec.secretTemplate, only its fingerprint: when s already carries the
// template, nothing from it is missing and cred is returned as it is;
// otherwise (a first issue, a changed template, a Secret edited) the
// credential is read from the API server for its template. So the steady
// state reads nothing, and an issue, a rotation or a repair reads the
// credential once.
func (r *AgentCredentialReconciler) withSecretTemplate(ctx context.Context, cred *authv1alpha1.AgentCredential, s *corev1.Secret) (*authv1alpha1.AgentCredential, error) {
	fp, cachedCopy := cred.Annotations[templateFingerprintAnnotation]
	if cred.Spec.SecretTemplate != nil || !cachedCopy || (s != nil && templateOnSecret(fp, s)) {
		return cred, nil
	}
	full := &authv1alpha1.AgentCredential{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(cred), full); err != nil {
		return nil, fmt.Errorf("reading spec.secretTemplate: %w", err)
	}
	if full.UID != cred.UID {
		return nil, fmt.Errorf("reading spec.secretTemplate: AgentCredential %s was replaced", cred.Name)
	}
	withTemplate := *cred
	withTemplate.Spec.SecretTemplate = full.Spec.SecretTemplate
	return &withTemplate, nil
}
