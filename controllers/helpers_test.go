package controllers_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/test/harness"
)

const (
	timeout  = 15 * time.Second
	interval = 25 * time.Millisecond
)

var ctx = context.Background()

func newNamespace(t *testing.T) string { return harness.NewNamespace(t, k8s, "test") }

var uuidCounter atomic.Int64

// newAgentID returns a fresh UUID so that tests never share agent IDs by accident.
func newAgentID() string {
	return fmt.Sprintf("6f1c2b1e-0000-4000-8000-%012d", uuidCounter.Add(1))
}

func apiKeyCredential(ns, name string, mutate ...func(*authv1alpha1.AgentCredential)) *authv1alpha1.AgentCredential {
	c := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: newAgentID()},
	}
	for _, m := range mutate {
		m(c)
	}
	return c
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(ctx, obj); err != nil {
		t.Fatalf("creating %s: %v", obj.GetName(), err)
	}
}

func get(t *testing.T, cred *authv1alpha1.AgentCredential) *authv1alpha1.AgentCredential {
	t.Helper()
	out := &authv1alpha1.AgentCredential{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(cred), out); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitReady waits until the credential reports Ready=True for its current
// generation and returns it.
func waitReady(t *testing.T, cred *authv1alpha1.AgentCredential) *authv1alpha1.AgentCredential {
	t.Helper()
	return waitCondition(t, cred, metav1.ConditionTrue, authv1alpha1.ReasonIssued)
}

func waitCondition(t *testing.T, cred *authv1alpha1.AgentCredential, status metav1.ConditionStatus, reason string) *authv1alpha1.AgentCredential {
	t.Helper()
	return harness.WaitReady(t, k8s, cred, status, reason, timeout)
}

// waitKeyChange waits until the status reports a key other than oldKeyID.
func waitKeyChange(t *testing.T, cred *authv1alpha1.AgentCredential, oldKeyID string) *authv1alpha1.AgentCredential {
	t.Helper()
	out := &authv1alpha1.AgentCredential{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cred), out)).To(Succeed())
		g.Expect(out.Status.KeyID).NotTo(BeEmpty())
		g.Expect(out.Status.KeyID).NotTo(Equal(oldKeyID))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	return waitReady(t, out)
}

var pokes atomic.Int64

// poke makes the controller reconcile now: after moving the fake clock the
// real-time RequeueAfter timers have not fired, so tests nudge the object
// with an annotation of no meaning.
func poke(t *testing.T, cred *authv1alpha1.AgentCredential) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"test.agrenting.io/poke":"%d"}}}`, pokes.Add(1))
	if err := k8s.Patch(ctx, cred, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

// reconciles is how many reconciles the AgentCredential controller has
// finished, from controller-runtime's own metric.
func reconciles(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "agentcredential" {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// pokeAndWaitForReconcile pokes cred and waits until the controller has
// finished a reconcile since, so that a following "nothing happens" check
// is about a reconcile that ran, not one that had not started yet.
func pokeAndWaitForReconcile(t *testing.T, cred *authv1alpha1.AgentCredential) {
	t.Helper()
	before := reconciles(t)
	poke(t, cred)
	NewWithT(t).Eventually(func() float64 { return reconciles(t) }).WithTimeout(timeout).WithPolling(interval).
		Should(BeNumerically(">", before), "no reconcile ran after the poke")
}

func annotate(t *testing.T, cred *authv1alpha1.AgentCredential, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if err := k8s.Patch(ctx, cred, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

func agentSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatalf("reading agent Secret %s/%s: %v", ns, name, err)
	}
	return s
}

func hashSecretKey(cred *authv1alpha1.AgentCredential) client.ObjectKey {
	return client.ObjectKey{Namespace: operatorNamespace, Name: hashsecret.Name(cred.Namespace, cred.Name)}
}

func hashRecord(t *testing.T, cred *authv1alpha1.AgentCredential) *hashsecret.Record {
	t.Helper()
	rec, err := tryHashRecord(cred)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func tryHashRecord(cred *authv1alpha1.AgentCredential) (*hashsecret.Record, error) {
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, hashSecretKey(cred), s); err != nil {
		return nil, fmt.Errorf("reading hash Secret: %w", err)
	}
	rec, err := hashsecret.Parse(s.Data)
	if err != nil {
		return nil, fmt.Errorf("parsing hash Secret: %w", err)
	}
	return rec, nil
}

func waitGone(t *testing.T, obj client.Object) {
	t.Helper()
	NewWithT(t).Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj))
	}).WithTimeout(timeout).WithPolling(interval).Should(BeTrue(), "%s/%s still exists", obj.GetNamespace(), obj.GetName())
}

// eventReasons returns the reasons of the events about cred, in order.
func eventReasons(t *testing.T, cred *authv1alpha1.AgentCredential) []string {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k8s.List(ctx, list, client.InNamespace(cred.Namespace)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == cred.Name {
			out = append(out, e.Reason)
		}
	}
	return out
}

func waitEvent(t *testing.T, cred *authv1alpha1.AgentCredential, reason string) {
	t.Helper()
	NewWithT(t).Eventually(func() []string { return eventReasons(t, cred) }).WithTimeout(timeout).WithPolling(interval).
		Should(ContainElement(reason))
}

func readyMessage(cred *authv1alpha1.AgentCredential) string {
	if c := meta.FindStatusCondition(cred.Status.Conditions, authv1alpha1.ReadyCondition); c != nil {
		return c.Message
	}
	return ""
}
