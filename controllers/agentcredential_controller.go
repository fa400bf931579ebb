// Package controllers wires AgentCredential objects to Kubernetes Secrets:
// it issues keys into agent Secrets, keeps their hashes in the operator
// namespace and rotates them. The decisions it acts on live in
// internal/rotation and internal/tenancy; the key format in
// internal/credential; the hash Secret layout in internal/hashsecret.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/rotation"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// Event reasons.
const (
	EventIssued            = "Issued"
	EventRotated           = "Rotated"
	EventRotationRequested = "RotationRequested"
	EventReissued          = "Reissued"
	EventConflict          = "Conflict"
	EventHashRepaired      = "HashRepaired"
	EventRenewed           = "Renewed"
)

// ForeignSecretRecheck is how often a credential blocked by a foreign
// Secret at its secretName looks again: it issues within this long of the
// Secret's deletion. One GET per blocked credential per period.
const ForeignSecretRecheck = 5 * time.Second

// AgentCredentialReconciler issues, hashes and rotates the key of each AgentCredential.
type AgentCredentialReconciler struct {
	client.Client
	// APIReader reads around the cache: the cache holds only Secrets labelled
	// as ours, so a foreign Secret in the way of an agent Secret is found here.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	// Clock is injected so tests move time instead of sleeping.
	Clock    clock.PassiveClock
	Recorder events.EventRecorder
	// OperatorNamespace holds the hash Secrets.
	OperatorNamespace string
	Metrics           *Metrics
	// IdentityClaims says whether a namespace may claim an unclaimed
	// identity on first use (the default) or only use preassigned claims.
	IdentityClaims tenancy.Mode
	// MaxClaimsPerNamespace bounds the claims one namespace can make on
	// first use (0: no limit), so a tenant cannot fill etcd with
	// cluster-scoped objects.
	MaxClaimsPerNamespace int
	// MaxCredentialsPerNamespace bounds the credentials of one namespace
	// that get keys (0: no limit): the oldest come first, the rest are
	// refused (withinCredentialLimit).
	MaxCredentialsPerNamespace int
	// MaxGrace caps how long a scheduled rotation's previous key stays
	// valid while restart targets are still rolling out.
	MaxGrace time.Duration
}

// +kubebuilder:rbac:groups=auth.agrenting.io,resources=agentcredentials,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=auth.agrenting.io,resources=agentcredentials/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=auth.agrenting.io,resources=agentcredentials/finalizers,verbs=update
// +kubebuilder:rbac:groups=auth.agrenting.io,resources=identityclaims,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one AgentCredential's key, Secrets and status in line with its spec.
func (r *AgentCredentialReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	cred := &authv1alpha1.AgentCredential{}
	if err := r.Get(ctx, req.NamespacedName, cred); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.removeOrphan(ctx, req)
		}
		return ctrl.Result{}, err
	}
	if !cred.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, cred)
	}
	if err := r.ensureFinalizer(ctx, cred); err != nil {
		return ctrl.Result{}, err
	}

	before := cred.DeepCopy()
	defer func() { retErr = r.patchStatus(ctx, before, cred, retErr) }()

	if within, err := r.withinCredentialLimit(ctx, cred); err != nil || !within {
		return ctrl.Result{}, err
	}
	if allowed, err := r.environmentAllowed(ctx, cred); err != nil || !allowed {
		return ctrl.Result{}, err
	}
	refused, err := r.claimIdentities(ctx, cred)
	if len(refused) > 0 {
		revokeErr := r.revokeForRefusedIdentities(ctx, cred, refused)
		if revokeErr == nil && err != nil {
			// Refused and revoked; the error about another identity is
			// retried without hiding the refusal behind ReconcileFailed.
			err = &refusedError{err}
		}
		return ctrl.Result{}, errors.Join(revokeErr, err)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	agent, err := r.getAgentSecret(ctx, cred)
	if err != nil {
		return ctrl.Result{}, err
	}
	if agent.foreign {
		r.markSecretConflict(cred)
		// The foreign Secret is outside the label-filtered cache: no event
		// says when its owner deletes it, so look again soon.
		return ctrl.Result{RequeueAfter: ForeignSecretRecheck}, nil
	}
	hash, err := r.getHashSecret(ctx, cred)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.reconcileKey(ctx, cred, agent, hash); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.reconcileAgentSecretMetadata(ctx, cred, agent); err != nil {
		return ctrl.Result{}, err
	}
	if r.expired(cred, hash.record) {
		r.setExpiredStatus(cred, hash.record)
		return ctrl.Result{}, nil // nothing is ahead until the spec changes
	}
	if err := r.reconcileConsumers(ctx, cred, hash); err != nil {
		return ctrl.Result{}, err
	}
	r.setIssuedStatus(cred, hash.record)
	return ctrl.Result{RequeueAfter: rotation.RequeueAfter(hash.record, cred.RotationPeriod(), r.Clock.Now())}, nil
}

// reconcileConsumers restarts the workloads that read the key and keeps the
// previous key of a scheduled rotation alive while they roll out.
func (r *AgentCredentialReconciler) reconcileConsumers(ctx context.Context, cred *authv1alpha1.AgentCredential, hash *hashSecret) error {
	sum, err := r.reconcileRestartTargets(ctx, cred, hash.record.Current.Digest.KeyID())
	if err != nil {
		return err
	}
	return r.reconcileGrace(ctx, cred, hash, sum)
}

// reconcileKey makes the agent Secret hold a key that the hash Secret
// vouches for, then rotates it if the schedule or a request says so.
func (r *AgentCredentialReconciler) reconcileKey(ctx context.Context, cred *authv1alpha1.AgentCredential, agent *agentSecret, hash *hashSecret) error {
	action, reason := rotation.Assess(agent.key, hash.record, hash.retired, cred.Status.KeyID)
	switch action {
	case rotation.FinishRotation:
		// An earlier reconcile staged this key and wrote it to the agent
		// Secret, then stopped: finish its rotation.
		reason := rotation.Reason(hash.record.Pending.Reason)
		promoted := rotation.Promote(*hash.record, cred.GracePeriod(), cred.RotationRequest())
		if err := r.writeHashSecret(ctx, cred, hash, &promoted); err != nil {
			return err
		}
		r.recordRotation(ctx, cred, &promoted, reason)
	case rotation.RebuildRecord:
		if err := r.writeHashSecret(ctx, cred, hash, r.recordFromStatus(cred, agent, hash)); err != nil {
			return err
		}
		r.Recorder.Eventf(cred, nil, corev1.EventTypeWarning, EventHashRepaired, "Repair",
			"Rewrote the hash Secret for key %s from the agent Secret", agent.key.Digest.KeyID())
	case rotation.IssueKey:
		return r.rotate(ctx, cred, agent, hash, reason)
	}
	now := r.Clock.Now()
	if rotation.Renewal(hash.record, cred.ExpiresAt(), now) {
		return r.rotate(ctx, cred, agent, hash, rotation.Renew)
	}
	if rec, changed := rotation.WithExpiry(*hash.record, cred.ExpiresAt(), now); changed {
		if err := r.writeHashSecret(ctx, cred, hash, &rec); err != nil {
			return err
		}
	}
	if reason := rotation.Due(hash.record, cred.RotationPeriod(), cred.RotationRequest(), r.Clock.Now()); reason != rotation.None {
		return r.rotate(ctx, cred, agent, hash, reason)
	}
	return r.syncHashMetadata(ctx, cred, hash)
}

// rotate issues a new key with writes ordered so that an interruption
// between any two leaves the agent Secret holding a key the hash Secret
// accepts: stage the new hash, write the key, then promote the new hash and
// drop (or put in grace) the old one. A first issue has nothing to keep
// working, so its final hash is written at once (rotation.NeedsStaging).
func (r *AgentCredentialReconciler) rotate(ctx context.Context, cred *authv1alpha1.AgentCredential, agent *agentSecret, hash *hashSecret, reason rotation.Reason) error {
	key, digest, err := newKey(cred)
	if err != nil {
		return err
	}
	base := hash.record
	if base == nil {
		base = r.freshRecord(cred, hash)
	}
	staged := rotation.Stage(*base, digest, reason, r.Clock.Now(), cred.ExpiresAt())
	r.refreshRecord(cred, &staged)
	promoted := rotation.Promote(staged, cred.GracePeriod(), cred.RotationRequest())
	if !rotation.NeedsStaging(agent.key, reason) {
		if err := r.writeHashSecret(ctx, cred, hash, &promoted); err != nil {
			return fmt.Errorf("writing the new key's hash: %w", err)
		}
	} else if err := r.writeHashSecret(ctx, cred, hash, &staged); err != nil {
		return fmt.Errorf("staging the new key's hash: %w", err)
	}
	if err := r.writeAgentKey(ctx, cred, agent, key); err != nil {
		return fmt.Errorf("writing the new key to Secret %s: %w", cred.SecretName(), err)
	}
	if hash.record.Pending != nil {
		if err := r.writeHashSecret(ctx, cred, hash, &promoted); err != nil {
			return fmt.Errorf("promoting the new key's hash: %w", err)
		}
	}
	r.recordRotation(ctx, cred, &promoted, reason)
	return nil
}

// recordRotation emits the event, log line and metric of a finished rotation.
func (r *AgentCredentialReconciler) recordRotation(ctx context.Context, cred *authv1alpha1.AgentCredential, rec *hashsecret.Record, reason rotation.Reason) {
	keyID := rec.Current.Digest.KeyID()
	log.FromContext(ctx).Info("Issued key", "keyID", keyID, "reason", string(reason), "rotationCount", rec.RotationCount)
	r.Metrics.RotationsTotal.WithLabelValues(metricReason(reason)).Inc()
	switch reason {
	case rotation.Issue:
		r.Recorder.Eventf(cred, nil, corev1.EventTypeNormal, EventIssued, "Issue", "Issued key %s into Secret %s", keyID, cred.SecretName())
	case rotation.Scheduled:
		r.Recorder.Eventf(cred, nil, corev1.EventTypeNormal, EventRotated, "Rotate",
			"Rotated to key %s on schedule; the previous key stays valid for %s", keyID, cred.GracePeriod())
	case rotation.Requested:
		r.Recorder.Eventf(cred, nil, corev1.EventTypeNormal, EventRotationRequested, "Rotate",
			"Rotated to key %s on request %q; the previous key is revoked", keyID, truncate(cred.RotationRequest(), 64))
	case rotation.Reissue:
		r.Recorder.Eventf(cred, nil, corev1.EventTypeWarning, EventReissued, "Reissue",
			"Secret %s was missing or held an invalid key; issued key %s and revoked the previous one", cred.SecretName(), keyID)
	case rotation.Renew:
		r.Recorder.Eventf(cred, nil, corev1.EventTypeNormal, EventRenewed, "Renew",
			"spec.expiresAt was moved into the future; issued key %s (the expired key stays dead)", keyID)
	}
}

// setIssuedStatus mirrors the hash record into the status (Ready=True) and
// the next-rotation and expiry metrics.
func (r *AgentCredentialReconciler) setIssuedStatus(cred *authv1alpha1.AgentCredential, rec *hashsecret.Record) {
	s := r.mirrorRecord(cred, rec)
	msg := fmt.Sprintf("Key %s is issued in Secret %s; ", s.KeyID, s.SecretName)
	if rotation.OnSchedule(rec, cred.RotationPeriod()) {
		next := rotation.NextRotation(rec.Current.IssuedAt, cred.RotationPeriod())
		s.NextRotationTime = timePtr(next)
		msg += "next rotation at " + next.UTC().Format(time.RFC3339)
		r.Metrics.NextRotation.WithLabelValues(cred.Namespace, cred.Name).Set(float64(next.Unix()))
	} else {
		msg += "it expires at " + rec.ExpiresAt.UTC().Format(time.RFC3339) + ", before its next rotation"
		r.Metrics.NextRotation.DeleteLabelValues(cred.Namespace, cred.Name)
	}
	setReady(cred, metav1.ConditionTrue, authv1alpha1.ReasonIssued, msg)
}

// setExpiredStatus reports an expired credential: Ready=False, reason
// Expired, and no rotation ahead.
func (r *AgentCredentialReconciler) setExpiredStatus(cred *authv1alpha1.AgentCredential, rec *hashsecret.Record) {
	s := r.mirrorRecord(cred, rec)
	r.Metrics.NextRotation.DeleteLabelValues(cred.Namespace, cred.Name)
	setReady(cred, metav1.ConditionFalse, authv1alpha1.ReasonExpired,
		fmt.Sprintf("Key %s expired at %s (spec.expiresAt) and no longer authenticates; move spec.expiresAt into the future or remove it to get a new key",
			s.KeyID, rec.ExpiresAt.UTC().Format(time.RFC3339)))
}

// mirrorRecord copies what the hash record says into the status (without a
// next rotation) and the expiry metric.
func (r *AgentCredentialReconciler) mirrorRecord(cred *authv1alpha1.AgentCredential, rec *hashsecret.Record) *authv1alpha1.AgentCredentialStatus {
	s := &cred.Status
	s.AgentID = cred.Spec.AgentID
	s.SecretName = cred.SecretName()
	s.KeyID = rec.Current.Digest.KeyID()
	s.LastRotationTime = timePtr(rec.Current.IssuedAt)
	s.NextRotationTime = nil
	s.RotationCount = rec.RotationCount
	s.LastRotationRequest = rec.LastRotationRequest
	s.PreviousKeyID, s.PreviousKeyExpiresAt = "", nil
	if p := rec.Previous; p != nil {
		s.PreviousKeyID = p.Digest.KeyID()
		s.PreviousKeyExpiresAt = timePtr(p.ExpiresAt)
	}
	if rec.ExpiresAt.IsZero() {
		r.Metrics.Expiration.DeleteLabelValues(cred.Namespace, cred.Name)
	} else {
		r.Metrics.Expiration.WithLabelValues(cred.Namespace, cred.Name).Set(float64(rec.ExpiresAt.Unix()))
	}
	return s
}

// patchStatus writes the status once per reconcile. observedGeneration moves
// only when the reconcile succeeded; a failure becomes Ready=False.
func (r *AgentCredentialReconciler) patchStatus(ctx context.Context, before, cred *authv1alpha1.AgentCredential, reconcileErr error) error {
	switch {
	case apierrors.IsConflict(reconcileErr):
		// A stale read lost an optimistic-concurrency race; the retry will
		// succeed, so Ready does not flap.
	case errors.As(reconcileErr, new(*refusedError)):
		// Ready already says why the credential is refused.
	case reconcileErr != nil:
		setReady(cred, metav1.ConditionFalse, authv1alpha1.ReasonReconcileFailed, reconcileErr.Error())
	default:
		cred.Status.ObservedGeneration = cred.Generation
	}
	ready := 0.0
	if meta.IsStatusConditionTrue(cred.Status.Conditions, authv1alpha1.ReadyCondition) {
		ready = 1
	}
	r.Metrics.Ready.WithLabelValues(cred.Namespace, cred.Name).Set(ready)
	if equality.Semantic.DeepEqual(before.Status, cred.Status) {
		return reconcileErr
	}
	if err := r.Status().Patch(ctx, cred, client.MergeFrom(before)); err != nil && !apierrors.IsNotFound(err) {
		if reconcileErr != nil {
			return reconcileErr
		}
		return fmt.Errorf("patching status: %w", err)
	}
	return reconcileErr
}

func (r *AgentCredentialReconciler) ensureFinalizer(ctx context.Context, cred *authv1alpha1.AgentCredential) error {
	if controllerutil.ContainsFinalizer(cred, authv1alpha1.CleanupFinalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(cred.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(cred, authv1alpha1.CleanupFinalizer)
	return r.Patch(ctx, cred, patch)
}

// removeOrphan deletes the hash Secret of a credential that is gone without
// our finalizer running (or never existed) — after the API server itself,
// not just a possibly lagging cache, says the credential does not exist, so a
// live key is never revoked by mistake.
func (r *AgentCredentialReconciler) removeOrphan(ctx context.Context, req ctrl.Request) error {
	err := r.APIReader.Get(ctx, req.NamespacedName, &authv1alpha1.AgentCredential{})
	switch {
	case err == nil:
		return nil // the cache is behind; the credential's own events will come
	case !apierrors.IsNotFound(err):
		return err
	}
	if err := r.deleteHashSecret(ctx, req.Namespace, req.Name); err != nil {
		return err
	}
	return r.recordClaimUse(ctx, req.Namespace, req.Name, nil)
}

// finalize revokes the key (deletes the hash Secret), deletes the agent
// Secret it controls (there may be no garbage collector) and lets go.
func (r *AgentCredentialReconciler) finalize(ctx context.Context, cred *authv1alpha1.AgentCredential) error {
	if !controllerutil.ContainsFinalizer(cred, authv1alpha1.CleanupFinalizer) {
		return nil
	}
	if err := r.deleteHashSecret(ctx, cred.Namespace, cred.Name); err != nil {
		return err
	}
	if err := r.deleteAgentSecret(ctx, cred); err != nil {
		return err
	}
	// The claims stay with the namespace (a revoke never frees an identity
	// for another tenant); they only stop counting this credential as a user.
	if err := r.recordClaimUse(ctx, cred.Namespace, cred.Name, nil); err != nil {
		return err
	}
	r.Metrics.forget(cred)
	log.FromContext(ctx).Info("Revoked key", "keyID", cred.Status.KeyID)
	patch := client.MergeFrom(cred.DeepCopy())
	controllerutil.RemoveFinalizer(cred, authv1alpha1.CleanupFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, cred, patch))
}

// refusedError is an error met while refusing a credential: the refusal,
// not the error, is what Ready reports.
type refusedError struct{ error }

func (e *refusedError) Unwrap() error { return e.error }

func setReady(cred *authv1alpha1.AgentCredential, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&cred.Status.Conditions, metav1.Condition{
		Type:               authv1alpha1.ReadyCondition,
		Status:             status,
		Reason:             reason,
		Message:            truncate(message, 1024),
		ObservedGeneration: cred.Generation,
	})
}

func timePtr(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
