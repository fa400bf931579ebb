package controllers_test

import (
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestResourceQuotaBoundsCredentials is the admin's hard bound that
// docs/install.md gives: a ResourceQuota on
// count/agentcredentials.auth.agrenting.io makes the API server itself
// refuse the credential beyond it, before anything is stored or cached.
// (The quota's status is what kube-controller-manager's quota controller
// would write; this control plane has none, so the test writes it.)
func TestResourceQuotaBoundsCredentials(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	const resourceName = corev1.ResourceName("count/agentcredentials.auth.agrenting.io")
	hard := corev1.ResourceList{resourceName: resource.MustParse("2")}
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agentcredentials"}, Spec: corev1.ResourceQuotaSpec{Hard: hard}}
	g.Expect(k8s.Create(ctx, quota)).To(Succeed())
	quota.Status = corev1.ResourceQuotaStatus{Hard: hard, Used: corev1.ResourceList{resourceName: resource.MustParse("0")}}
	g.Expect(k8s.Status().Update(ctx, quota)).To(Succeed())

	create(t, apiKeyCredential(ns, "first"))
	create(t, apiKeyCredential(ns, "second"))
	err := k8s.Create(ctx, apiKeyCredential(ns, "third"))
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want the third credential refused by the quota, got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("exceeded quota"))
	waitReady(t, apiKeyCredential(ns, "second"))
}
