// Package rollout decides, as pure functions of a workload's spec and
// status, whether a restart target runs a given key: its pod template names
// the key (the auth.agrenting.io/restarted-for annotation) and its rollout
// of that template has completed, by the rules `kubectl rollout status`
// uses. It also trims cached workloads to what those rules read.
package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
)

// NewObject returns an empty workload of kind, or nil for an unknown kind.
func NewObject(kind authv1alpha1.RestartTargetKind) client.Object {
	switch kind {
	case authv1alpha1.DeploymentKind:
		return &appsv1.Deployment{}
	case authv1alpha1.StatefulSetKind:
		return &appsv1.StatefulSet{}
	case authv1alpha1.DaemonSetKind:
		return &appsv1.DaemonSet{}
	}
	return nil
}

// KindOf returns the restart-target kind of a workload object ("" for others).
func KindOf(obj client.Object) authv1alpha1.RestartTargetKind {
	switch obj.(type) {
	case *appsv1.Deployment:
		return authv1alpha1.DeploymentKind
	case *appsv1.StatefulSet:
		return authv1alpha1.StatefulSetKind
	case *appsv1.DaemonSet:
		return authv1alpha1.DaemonSetKind
	}
	return ""
}

// RestartedFor returns the keyID a workload's pod template was last
// restarted for ("" when never).
func RestartedFor(obj client.Object) string {
	if t := template(obj); t != nil {
		return t.Annotations[authv1alpha1.RestartedForAnnotation]
	}
	return ""
}

// Assess says whether obj has rolled out a pod template restarted for
// keyID, and if not what it waits for.
func Assess(obj client.Object, keyID string) (authv1alpha1.RolloutState, string) {
	if got := RestartedFor(obj); got != keyID {
		return authv1alpha1.Rolling, fmt.Sprintf("waiting for the pod template to be restarted for key %s", keyID)
	}
	if obj.GetGeneration() > observedGeneration(obj) {
		return authv1alpha1.Rolling, fmt.Sprintf("waiting for the %s controller to observe generation %d", KindOf(obj), obj.GetGeneration())
	}
	var msg string
	switch w := obj.(type) {
	case *appsv1.Deployment:
		msg = deploymentWaits(w)
	case *appsv1.StatefulSet:
		msg = statefulSetWaits(w)
	case *appsv1.DaemonSet:
		msg = daemonSetWaits(w)
	default:
		return authv1alpha1.Rolling, "not a Deployment, StatefulSet or DaemonSet"
	}
	if msg != "" {
		return authv1alpha1.Rolling, msg
	}
	return authv1alpha1.RolledOut, ""
}

// (If statements rather than a switch: Go's coverage blocks start after a
// case expression, so mutation testing would call the cases uncovered.)

func deploymentWaits(d *appsv1.Deployment) string {
	want := replicas(d.Spec.Replicas)
	s := d.Status
	if d.Spec.Paused {
		return "the Deployment is paused"
	}
	if s.UpdatedReplicas < want {
		return fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, want)
	}
	if s.Replicas > s.UpdatedReplicas {
		return fmt.Sprintf("%d old replicas pending termination", s.Replicas-s.UpdatedReplicas)
	}
	if s.AvailableReplicas < s.UpdatedReplicas {
		return fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas)
	}
	return ""
}

func statefulSetWaits(ss *appsv1.StatefulSet) string {
	want := replicas(ss.Spec.Replicas)
	s := ss.Status
	if s.UpdatedReplicas < want {
		return fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, want)
	}
	if s.ReadyReplicas < want {
		return fmt.Sprintf("%d of %d replicas ready", s.ReadyReplicas, want)
	}
	if s.UpdateRevision != s.CurrentRevision {
		return fmt.Sprintf("waiting for revision %s to become current", s.UpdateRevision)
	}
	return ""
}

func daemonSetWaits(ds *appsv1.DaemonSet) string {
	s := ds.Status
	if s.UpdatedNumberScheduled < s.DesiredNumberScheduled {
		return fmt.Sprintf("%d of %d pods updated", s.UpdatedNumberScheduled, s.DesiredNumberScheduled)
	}
	if s.NumberAvailable < s.DesiredNumberScheduled {
		return fmt.Sprintf("%d of %d updated pods available", s.NumberAvailable, s.DesiredNumberScheduled)
	}
	return ""
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func observedGeneration(obj client.Object) int64 {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return w.Status.ObservedGeneration
	case *appsv1.StatefulSet:
		return w.Status.ObservedGeneration
	case *appsv1.DaemonSet:
		return w.Status.ObservedGeneration
	}
	return 0
}

func template(obj client.Object) *metav1.ObjectMeta {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return &w.Spec.Template.ObjectMeta
	case *appsv1.StatefulSet:
		return &w.Spec.Template.ObjectMeta
	case *appsv1.DaemonSet:
		return &w.Spec.Template.ObjectMeta
	}
	return nil
}

// Trim returns a cached copy of a workload with only what Assess and the
// controller's watches read: identity, generation, replicas, paused, the
// restarted-for annotation of the pod template when it holds a keyID, and
// the status counters Assess compares. The pod template's spec, the
// selector, every other annotation and the status conditions are dropped,
// so caching every workload in the cluster costs little whatever its
// owner writes into it. The controller only patches workloads, never
// updates them from the cache.
func Trim(obj interface{}) (interface{}, error) {
	meta := func(m metav1.ObjectMeta) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
			Generation: m.Generation, CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp,
		}
	}
	switch w := obj.(type) {
	case *appsv1.Deployment:
		t := &appsv1.Deployment{TypeMeta: w.TypeMeta, ObjectMeta: meta(w.ObjectMeta)}
		t.Spec.Replicas, t.Spec.Paused = w.Spec.Replicas, w.Spec.Paused
		t.Spec.Template.ObjectMeta = trimTemplate(w.Spec.Template.ObjectMeta)
		s := w.Status
		t.Status = appsv1.DeploymentStatus{ObservedGeneration: s.ObservedGeneration, Replicas: s.Replicas,
			UpdatedReplicas: s.UpdatedReplicas, AvailableReplicas: s.AvailableReplicas}
		return t, nil
	case *appsv1.StatefulSet:
		t := &appsv1.StatefulSet{TypeMeta: w.TypeMeta, ObjectMeta: meta(w.ObjectMeta)}
		t.Spec.Replicas = w.Spec.Replicas
		t.Spec.Template.ObjectMeta = trimTemplate(w.Spec.Template.ObjectMeta)
		s := w.Status
		t.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.ObservedGeneration, UpdatedReplicas: s.UpdatedReplicas,
			ReadyReplicas: s.ReadyReplicas, UpdateRevision: boundedRevision(s.UpdateRevision), CurrentRevision: boundedRevision(s.CurrentRevision)}
		return t, nil
	case *appsv1.DaemonSet:
		t := &appsv1.DaemonSet{TypeMeta: w.TypeMeta, ObjectMeta: meta(w.ObjectMeta)}
		t.Spec.Template.ObjectMeta = trimTemplate(w.Spec.Template.ObjectMeta)
		s := w.Status
		t.Status = appsv1.DaemonSetStatus{ObservedGeneration: s.ObservedGeneration, DesiredNumberScheduled: s.DesiredNumberScheduled,
			UpdatedNumberScheduled: s.UpdatedNumberScheduled, NumberAvailable: s.NumberAvailable}
		return t, nil
	}
	return obj, nil
}

// trimTemplate keeps the pod template's restarted-for annotation only when
// its value is a keyID, the only thing agentcred writes there. Any other
// value (a workload's owner may write up to 256 KiB) compares unequal to
// every keyID, exactly as no annotation does, so dropping it changes no
// decision: the controller restarts the workload for its key either way.
func trimTemplate(m metav1.ObjectMeta) metav1.ObjectMeta {
	if v := m.Annotations[authv1alpha1.RestartedForAnnotation]; IsKeyID(v) {
		return metav1.ObjectMeta{Annotations: map[string]string{authv1alpha1.RestartedForAnnotation: v}}
	}
	return metav1.ObjectMeta{}
}

// IsKeyID reports whether s has the form of a keyID: credential.KeyIDLen
// lower-case hex characters.
func IsKeyID(s string) bool {
	if len(s) != credential.KeyIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// maxRevisionLen is the longest StatefulSet revision kept as it is: the
// StatefulSet controller names revisions like objects (at most 253
// characters). A longer one was written by someone else; it is kept as its
// digest, which compares equal exactly when the values do.
const maxRevisionLen = 253

func boundedRevision(s string) string {
	if len(s) <= maxRevisionLen {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}
