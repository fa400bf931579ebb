package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/rollout"
	"github.com/agrenting/agentcred/internal/rotation"
)

// Restart targets: workloads whose pods read the key (typically from an
// environment variable) and must be restarted when it changes.
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get;list;watch;patch

// Event reasons of restart targets and rollout-aware grace.
const (
	EventRestarted       = "Restarted"
	EventTargetNotFound  = "RestartTargetNotFound"
	EventGraceCapReached = "GraceCapReached"
	EventExpired         = "Expired"
)

// DefaultMaxGrace is the default of --max-grace.
const DefaultMaxGrace = 24 * time.Hour

// RolledOutCondition says whether every restart target runs the current key.
const RolledOutCondition = "RolledOut"

// Reasons of the RolledOut condition.
const (
	ReasonAllRolledOut     = "AllRolledOut"
	ReasonRolloutPending   = "RolloutInProgress"
	ReasonTargetNotFound   = "TargetNotFound"
	restartTargetIndexName = "restartTarget"
)

// restartTargetKey is the index value of a workload: Kind/namespace/name.
func restartTargetKey(kind authv1alpha1.RestartTargetKind, namespace, name string) string {
	return string(kind) + "/" + namespace + "/" + name
}

// restartTargetIndex lists the workloads a credential restarts, for the
// index that maps a workload's events back to its credentials.
func restartTargetIndex(o client.Object) []string {
	cred, ok := o.(*authv1alpha1.AgentCredential)
	if !ok {
		return nil
	}
	keys := make([]string, 0, len(cred.Spec.Rotation.RestartTargets))
	for _, t := range cred.Spec.Rotation.RestartTargets {
		keys = append(keys, restartTargetKey(t.Kind, cred.Namespace, t.Name))
	}
	return keys
}

// requestsForWorkload enqueues the credentials that restart a workload.
func (r *AgentCredentialReconciler) requestsForWorkload(ctx context.Context, o client.Object) []reconcile.Request {
	kind := rollout.KindOf(o)
	if kind == "" {
		return nil
	}
	return r.requestsForCredentials(ctx, client.InNamespace(o.GetNamespace()),
		client.MatchingFields{restartTargetIndexName: restartTargetKey(kind, o.GetNamespace(), o.GetName())})
}

// requestsForCredentials enqueues the cached credentials opts select.
func (r *AgentCredentialReconciler) requestsForCredentials(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	list := &authv1alpha1.AgentCredentialList{}
	if err := r.List(ctx, list, opts...); err != nil {
		log.FromContext(ctx).Error(err, "Listing the credentials an event concerns")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// rollouts summarises the restart targets' state for the current key.
type rollouts struct {
	// rolling names the targets whose rollout is unfinished (Kind/name).
	rolling []string
	// missing names the targets that do not exist.
	missing []string
}

// reconcileRestartTargets makes each restart target's pod template name the
// current key (a merge patch of one annotation, only when it differs, so
// there are no restart loops) and records how far each rollout has come.
// A missing target is reported, not an error: the key is issued regardless.
func (r *AgentCredentialReconciler) reconcileRestartTargets(ctx context.Context, cred *authv1alpha1.AgentCredential, keyID string) (rollouts, error) {
	targets := cred.Spec.Rotation.RestartTargets
	if len(targets) == 0 {
		cred.Status.RestartTargets = nil
		meta.RemoveStatusCondition(&cred.Status.Conditions, RolledOutCondition)
		return rollouts{}, nil
	}
	previously := map[string]authv1alpha1.RolloutState{}
	for _, s := range cred.Status.RestartTargets {
		previously[string(s.Kind)+"/"+s.Name] = s.State
	}
	var sum rollouts
	statuses := make([]authv1alpha1.RestartTargetStatus, 0, len(targets))
	for _, t := range targets {
		state, msg, err := r.restartTarget(ctx, cred, t, keyID)
		if err != nil {
			return sum, err
		}
		switch state {
		case authv1alpha1.TargetNotFound:
			sum.missing = append(sum.missing, t.String())
			if previously[t.String()] != authv1alpha1.TargetNotFound {
				r.Recorder.Eventf(cred, nil, corev1.EventTypeWarning, EventTargetNotFound, "Restart",
					"Restart target %s does not exist in namespace %s", t, cred.Namespace)
			}
		case authv1alpha1.Rolling:
			sum.rolling = append(sum.rolling, t.String())
		}
		statuses = append(statuses, authv1alpha1.RestartTargetStatus{Kind: t.Kind, Name: t.Name, State: state, Message: truncate(msg, 256)})
	}
	cred.Status.RestartTargets = statuses
	setRolledOutCondition(cred, sum, keyID)
	return sum, nil
}

// restartTarget restarts one target for keyID if it is not yet, and
// assesses its rollout.
func (r *AgentCredentialReconciler) restartTarget(ctx context.Context, cred *authv1alpha1.AgentCredential, t authv1alpha1.RestartTarget, keyID string) (authv1alpha1.RolloutState, string, error) {
	obj := rollout.NewObject(t.Kind)
	if obj == nil {
		return authv1alpha1.TargetNotFound, fmt.Sprintf("kind %s cannot be restarted", t.Kind), nil
	}
	err := r.Get(ctx, types.NamespacedName{Namespace: cred.Namespace, Name: t.Name}, obj)
	if apierrors.IsNotFound(err) {
		return authv1alpha1.TargetNotFound, fmt.Sprintf("no %s named %s in this namespace", t.Kind, t.Name), nil
	}
	if err != nil {
		return "", "", fmt.Errorf("reading restart target %s: %w", t, err)
	}
	if rollout.RestartedFor(obj) != keyID {
		if err := r.Patch(ctx, obj, restartPatch(keyID)); err != nil {
			if apierrors.IsNotFound(err) {
				return authv1alpha1.TargetNotFound, fmt.Sprintf("no %s named %s in this namespace", t.Kind, t.Name), nil
			}
			return "", "", fmt.Errorf("restarting %s: %w", t, err)
		}
		log.FromContext(ctx).Info("Restarted workload for the new key", "target", t.String(), "keyID", keyID)
		r.Recorder.Eventf(cred, nil, corev1.EventTypeNormal, EventRestarted, "Restart", "Restarted %s for key %s", t, keyID)
	}
	state, msg := rollout.Assess(obj, keyID)
	return state, msg, nil
}

// restartPatch sets the restarted-for annotation of a workload's pod
// template, and nothing else.
func restartPatch(keyID string) client.Patch {
	body, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{authv1alpha1.RestartedForAnnotation: keyID},
	}}}})
	return client.RawPatch(types.MergePatchType, body)
}

func setRolledOutCondition(cred *authv1alpha1.AgentCredential, sum rollouts, keyID string) {
	c := metav1.Condition{Type: RolledOutCondition, Status: metav1.ConditionTrue, Reason: ReasonAllRolledOut,
		Message: fmt.Sprintf("Every restart target runs key %s", keyID), ObservedGeneration: cred.Generation}
	switch {
	case len(sum.missing) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonTargetNotFound
		c.Message = "Restart targets not found: " + strings.Join(sum.missing, ", ")
	case len(sum.rolling) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonRolloutPending
		c.Message = fmt.Sprintf("Rolling out key %s: %s", keyID, strings.Join(sum.rolling, ", "))
	}
	c.Message = truncate(c.Message, 1024)
	meta.SetStatusCondition(&cred.Status.Conditions, c)
}

// reconcileGrace sets when the previous key of a scheduled rotation dies:
// after gracePeriod, or later while a restart target is still rolling out
// (capped by MaxGrace), and drops it once that time has come.
func (r *AgentCredentialReconciler) reconcileGrace(ctx context.Context, cred *authv1alpha1.AgentCredential, hash *hashSecret, sum rollouts) error {
	if hash.record.Previous == nil {
		return nil
	}
	rolling := len(sum.rolling) > 0
	deadline := rotation.GraceDeadline(hash.record.Current.IssuedAt, cred.GracePeriod(), r.MaxGrace, rolling)
	rec, extended := rotation.WithGraceDeadline(*hash.record, deadline)
	rec, pruned := rotation.Prune(rec, r.Clock.Now())
	if !extended && !pruned {
		return nil
	}
	if err := r.writeHashSecret(ctx, cred, hash, &rec); err != nil {
		return err
	}
	if pruned && rolling {
		r.Recorder.Eventf(cred, nil, corev1.EventTypeWarning, EventGraceCapReached, "Revoke",
			"The previous key was revoked after --max-grace (%s) although these restart targets had not rolled out: %s",
			r.MaxGrace, truncate(strings.Join(sum.rolling, ", "), 512))
	}
	return nil
}

// expired reports whether the credential's key has expired for good, and
// marks it: Ready=False reason Expired, an Expired event on the transition.
func (r *AgentCredentialReconciler) expired(cred *authv1alpha1.AgentCredential, rec *hashsecret.Record) bool {
	if !rec.Expired(r.Clock.Now()) {
		return false
	}
	if c := meta.FindStatusCondition(cred.Status.Conditions, authv1alpha1.ReadyCondition); c == nil || c.Reason != authv1alpha1.ReasonExpired {
		r.Recorder.Eventf(cred, nil, corev1.EventTypeWarning, EventExpired, "Expire",
			"Key %s expired at %s (spec.expiresAt); move spec.expiresAt into the future to get a new key", rec.Current.Digest.KeyID(), rec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return true
}
