package rollout

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

const key = "0123456789ab"

func annotated(keyID string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{authv1alpha1.RestartedForAnnotation: keyID}}}
}

func deployment(mut func(*appsv1.Deployment)) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "billing", Generation: 2},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Template: annotated(key)},
		Status:     appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, ReadyReplicas: 3},
	}
	mut(d)
	return d
}

func statefulSet(mut func(*appsv1.StatefulSet)) *appsv1.StatefulSet {
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Generation: 4},
		Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2), Template: annotated(key)},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 4, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2,
			CurrentRevision: "db-2", UpdateRevision: "db-2"},
	}
	mut(s)
	return s
}

func daemonSet(mut func(*appsv1.DaemonSet)) *appsv1.DaemonSet {
	d := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-agent", Generation: 1},
		Spec:       appsv1.DaemonSetSpec{Template: annotated(key)},
		Status:     appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 4, UpdatedNumberScheduled: 4, NumberAvailable: 4},
	}
	mut(d)
	return d
}

func TestAssess(t *testing.T) {
	same := func(*appsv1.Deployment) {}
	tests := []struct {
		name string
		obj  client.Object
		want authv1alpha1.RolloutState
		msg  string
	}{
		{"deployment rolled out", deployment(same), authv1alpha1.RolledOut, ""},
		{"deployment not yet restarted", deployment(func(d *appsv1.Deployment) { d.Spec.Template = annotated("old") }), authv1alpha1.Rolling,
			"waiting for the pod template to be restarted for key " + key},
		{"deployment never restarted", deployment(func(d *appsv1.Deployment) { d.Spec.Template = corev1.PodTemplateSpec{} }), authv1alpha1.Rolling,
			"waiting for the pod template to be restarted for key " + key},
		{"deployment generation not observed", deployment(func(d *appsv1.Deployment) { d.Generation = 3 }), authv1alpha1.Rolling,
			"waiting for the Deployment controller to observe generation 3"},
		{"deployment updating", deployment(func(d *appsv1.Deployment) { d.Status.UpdatedReplicas = 1 }), authv1alpha1.Rolling, "1 of 3 replicas updated"},
		{"deployment old replicas left", deployment(func(d *appsv1.Deployment) { d.Status.Replicas = 4 }), authv1alpha1.Rolling, "1 old replicas pending termination"},
		{"deployment updated not available", deployment(func(d *appsv1.Deployment) { d.Status.AvailableReplicas = 2 }), authv1alpha1.Rolling, "2 of 3 updated replicas available"},
		{"deployment paused", deployment(func(d *appsv1.Deployment) { d.Spec.Paused = true }), authv1alpha1.Rolling, "the Deployment is paused"},
		{"deployment default one replica", deployment(func(d *appsv1.Deployment) {
			d.Spec.Replicas = nil
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}
		}), authv1alpha1.RolledOut, ""},
		{"deployment scaled to zero", deployment(func(d *appsv1.Deployment) {
			d.Spec.Replicas = ptr.To[int32](0)
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: 2}
		}), authv1alpha1.RolledOut, ""},
		{"statefulset rolled out", statefulSet(func(*appsv1.StatefulSet) {}), authv1alpha1.RolledOut, ""},
		{"statefulset updating", statefulSet(func(s *appsv1.StatefulSet) { s.Status.UpdatedReplicas = 1 }), authv1alpha1.Rolling, "1 of 2 replicas updated"},
		{"statefulset not ready", statefulSet(func(s *appsv1.StatefulSet) { s.Status.ReadyReplicas = 1 }), authv1alpha1.Rolling, "1 of 2 replicas ready"},
		{"statefulset revision not current", statefulSet(func(s *appsv1.StatefulSet) { s.Status.UpdateRevision = "db-3" }), authv1alpha1.Rolling,
			"waiting for revision db-3 to become current"},
		{"statefulset generation not observed", statefulSet(func(s *appsv1.StatefulSet) { s.Status.ObservedGeneration = 3 }), authv1alpha1.Rolling,
			"waiting for the StatefulSet controller to observe generation 4"},
		{"daemonset rolled out", daemonSet(func(*appsv1.DaemonSet) {}), authv1alpha1.RolledOut, ""},
		{"daemonset updating", daemonSet(func(d *appsv1.DaemonSet) { d.Status.UpdatedNumberScheduled = 2 }), authv1alpha1.Rolling, "2 of 4 pods updated"},
		{"daemonset not available", daemonSet(func(d *appsv1.DaemonSet) { d.Status.NumberAvailable = 3 }), authv1alpha1.Rolling, "3 of 4 updated pods available"},
		{"not a workload", &appsv1.ReplicaSet{}, authv1alpha1.Rolling, "waiting for the pod template to be restarted for key " + key},
	}
	for _, tt := range tests {
		state, msg := Assess(tt.obj, key)
		if state != tt.want || msg != tt.msg {
			t.Errorf("%s: Assess = %s %q, want %s %q", tt.name, state, msg, tt.want, tt.msg)
		}
	}
}

func TestTrimKeepsWhatAssessReads(t *testing.T) {
	for _, obj := range []client.Object{
		deployment(func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "app", Image: "example/app"}}
			d.Spec.Template.Annotations["other"] = "big"
			d.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}
			d.Status.UpdatedReplicas = 2
		}),
		statefulSet(func(s *appsv1.StatefulSet) { s.Spec.Template.Spec.Containers = []corev1.Container{{Name: "db"}} }),
		daemonSet(func(d *appsv1.DaemonSet) { d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "x"}} }),
	} {
		wantState, wantMsg := Assess(obj, key)
		out, err := Trim(obj)
		if err != nil {
			t.Fatal(err)
		}
		trimmed := out.(client.Object)
		if state, msg := Assess(trimmed, key); state != wantState || msg != wantMsg {
			t.Errorf("%s: trimmed Assess = %s %q, want %s %q", KindOf(obj), state, msg, wantState, wantMsg)
		}
		if trimmed.GetName() != obj.GetName() || trimmed.GetGeneration() != obj.GetGeneration() || len(trimmed.GetAnnotations()) != 0 {
			t.Errorf("%s: trimmed metadata = %+v", KindOf(obj), trimmed)
		}
		if tmpl := template(trimmed); len(tmpl.Annotations) != 1 {
			t.Errorf("%s: trimmed template annotations = %v, want only %s", KindOf(obj), tmpl.Annotations, authv1alpha1.RestartedForAnnotation)
		}
		switch w := trimmed.(type) {
		case *appsv1.Deployment:
			if len(w.Spec.Template.Spec.Containers) != 0 {
				t.Error("the Deployment's pod spec was kept")
			}
		case *appsv1.StatefulSet:
			if len(w.Spec.Template.Spec.Containers) != 0 {
				t.Error("the StatefulSet's pod spec was kept")
			}
		case *appsv1.DaemonSet:
			if len(w.Spec.Template.Spec.Containers) != 0 {
				t.Error("the DaemonSet's pod spec was kept")
			}
		}
	}
	if out, _ := Trim("not a workload"); out != "not a workload" {
		t.Error("Trim changed something that is not a workload")
	}
}

func TestKinds(t *testing.T) {
	for _, k := range []authv1alpha1.RestartTargetKind{authv1alpha1.DeploymentKind, authv1alpha1.StatefulSetKind, authv1alpha1.DaemonSetKind} {
		if got := KindOf(NewObject(k)); got != k {
			t.Errorf("KindOf(NewObject(%s)) = %s", k, got)
		}
	}
	if NewObject("CronJob") != nil || KindOf(&appsv1.ReplicaSet{}) != "" {
		t.Error("unknown kinds must have no object and no kind")
	}
}

// TestTrimDropsWhatTheOwnerWrote: a workload's owner chooses the value of
// the restarted-for annotation (up to 256 KiB) and the status conditions;
// the cache keeps a keyID and nothing else, and every decision is the same.
func TestTrimDropsWhatTheOwnerWrote(t *testing.T) {
	huge := strings.Repeat("x", 256<<10)
	for _, tt := range []struct {
		value string
		kept  bool
	}{
		{key, true},
		{"abcdef012345", true},
		{huge, false},
		{"0123456789abc", false}, // 13 characters
		{"0123456789a", false},   // 11
		{"0123456789AB", false},  // upper case: agentcred writes lower case
		{"0123456789a/", false},  // '/' sorts just below '0'
		{"0123456789a:", false},  // ':' just above '9'
		{"0123456789a`", false},  // '`' just below 'a'
		{"0123456789ag", false},  // 'g' just above 'f'
		{"", false},
	} {
		d := deployment(func(d *appsv1.Deployment) {
			d.Spec.Template = annotated(tt.value)
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Message: huge}}
		})
		wantState, wantMsg := Assess(d, key)
		out, _ := Trim(d)
		trimmed := out.(*appsv1.Deployment)
		got, present := trimmed.Spec.Template.Annotations[authv1alpha1.RestartedForAnnotation]
		if present != tt.kept || (tt.kept && got != tt.value) {
			t.Errorf("value of %d bytes %.16q: kept %v (%d bytes), want kept %v", len(tt.value), tt.value, present, len(got), tt.kept)
		}
		if state, msg := Assess(trimmed, key); state != wantState || msg != wantMsg {
			t.Errorf("value %.16q: trimmed Assess = %s %q, want %s %q", tt.value, state, msg, wantState, wantMsg)
		}
		if len(trimmed.Status.Conditions) != 0 {
			t.Error("the Deployment's status conditions were kept")
		}
	}
	s := statefulSet(func(s *appsv1.StatefulSet) {
		s.Status.Conditions = []appsv1.StatefulSetCondition{{Type: "x", Message: huge}}
	})
	out, _ := Trim(s)
	if ts := out.(*appsv1.StatefulSet); len(ts.Status.Conditions) != 0 || ts.Status.UpdateRevision != "db-2" {
		t.Errorf("trimmed StatefulSet status = %+v", ts.Status)
	}
	ds := daemonSet(func(d *appsv1.DaemonSet) {
		d.Status.Conditions = []appsv1.DaemonSetCondition{{Type: "x", Message: huge}}
	})
	out, _ = Trim(ds)
	if td := out.(*appsv1.DaemonSet); len(td.Status.Conditions) != 0 {
		t.Errorf("trimmed DaemonSet status = %+v", td.Status)
	}
}

// TestTrimBoundsRevisions: StatefulSet revisions longer than an object name
// are kept as digests that compare as the values do.
func TestTrimBoundsRevisions(t *testing.T) {
	atLimit, over := strings.Repeat("r", maxRevisionLen), strings.Repeat("r", maxRevisionLen+1)
	for _, tt := range []struct {
		update, current string
		wantState       authv1alpha1.RolloutState
	}{
		{atLimit, atLimit, authv1alpha1.RolledOut},
		{over, over, authv1alpha1.RolledOut},
		{over, over + "x", authv1alpha1.Rolling},
		{atLimit, atLimit[1:], authv1alpha1.Rolling},
	} {
		s := statefulSet(func(s *appsv1.StatefulSet) { s.Status.UpdateRevision, s.Status.CurrentRevision = tt.update, tt.current })
		out, _ := Trim(s)
		ts := out.(*appsv1.StatefulSet)
		if state, _ := Assess(ts, key); state != tt.wantState {
			t.Errorf("revisions of %d and %d characters: trimmed Assess = %s, want %s", len(tt.update), len(tt.current), state, tt.wantState)
		}
		if len(ts.Status.UpdateRevision) > maxRevisionLen || len(ts.Status.CurrentRevision) > maxRevisionLen {
			t.Errorf("revisions of %d and %d characters kept at %d and %d", len(tt.update), len(tt.current), len(ts.Status.UpdateRevision), len(ts.Status.CurrentRevision))
		}
		if len(tt.update) <= maxRevisionLen && ts.Status.UpdateRevision != tt.update {
			t.Errorf("a revision of %d characters was changed", len(tt.update))
		}
	}
}
