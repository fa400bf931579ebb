package harness

import (
	"context"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

// NewNamespace creates a namespace named prefix-<random> and returns its name.
func NewNamespace(t testing.TB, c client.Client, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// WaitReady polls, until timeout, for the credential's Ready condition to
// have status and reason for its current generation, and returns the
// credential as it then is.
func WaitReady(t testing.TB, c client.Reader, cred *authv1alpha1.AgentCredential, status metav1.ConditionStatus, reason string, timeout time.Duration) *authv1alpha1.AgentCredential {
	t.Helper()
	out := &authv1alpha1.AgentCredential{}
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(c.Get(context.Background(), client.ObjectKeyFromObject(cred), out)).To(gomega.Succeed())
		cond := meta.FindStatusCondition(out.Status.Conditions, authv1alpha1.ReadyCondition)
		g.Expect(cond).NotTo(gomega.BeNil())
		g.Expect(cond.Status).To(gomega.Equal(status), cond.Message)
		g.Expect(cond.Reason).To(gomega.Equal(reason), cond.Message)
		g.Expect(cond.ObservedGeneration).To(gomega.Equal(out.Generation))
		g.Expect(out.Status.ObservedGeneration).To(gomega.Equal(out.Generation))
	}).WithTimeout(timeout).WithPolling(25 * time.Millisecond).Should(gomega.Succeed())
	return out
}
