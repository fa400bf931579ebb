package manifests

import (
	"context"
	"errors"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/harness"
)

const (
	// webhookCertNamespace holds the webhook's CA in the default install.
	webhookCertNamespace = "agentcred-webhook-certs"
	timeoutDuration      = 15 * time.Second
	managerSA            = "system:serviceaccount:agentcred-system:agentcred-controller-manager"
	authSA               = "system:serviceaccount:agentcred-system:agentcred-auth"
)

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }

// impersonatingUser is a client acting as user in groups.
func impersonatingUser(user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(apiConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
}

func impersonating(user string) *rest.Config {
	cfg := rest.CopyConfig(apiConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"}}
	return cfg
}

func TestAuthServiceAccountReadsOnlyTheOperatorNamespace(t *testing.T) {
	g := NewWithT(t)
	ensureNamespace(t, operatorNamespace)
	ensureNamespace(t, "team-a")
	ensureNamespace(t, webhookCertNamespace)
	applyRBAC(t, "default")
	hash := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: "agentcred-hash-test",
		Labels: map[string]string{authv1alpha1.ManagedByLabel: "agentcred", authv1alpha1.SecretRoleLabel: authv1alpha1.SecretRoleKeyHash}}}
	agent := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "agent-key"}, Data: map[string][]byte{"api-key": []byte("ak_x")}}
	for _, s := range []*corev1.Secret{hash, agent} {
		if err := k8s.Create(ctx, s); err != nil && !isAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	cs, err := kubernetes.NewForConfig(impersonating(authSA))
	g.Expect(err).NotTo(HaveOccurred())
	list, err := cs.CoreV1().Secrets(operatorNamespace).List(ctx, metav1.ListOptions{LabelSelector: authv1alpha1.SecretRoleLabel + "=key-hash"})
	g.Expect(err).NotTo(HaveOccurred(), "the auth-only identity must list hash Secrets")
	g.Expect(list.Items).NotTo(BeEmpty())
	_, err = cs.CoreV1().Secrets("team-a").Get(ctx, "agent-key", metav1.GetOptions{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "reading an agent Secret must be forbidden, got %v", err)
	_, err = cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "listing Secrets cluster-wide must be forbidden, got %v", err)
	for _, verb := range []string{"create", "update", "patch", "delete"} {
		g.Expect(can(t, authSA, verb, "", "secrets", operatorNamespace, "")).To(BeFalse(), "auth-only may not %s Secrets", verb)
	}
	g.Expect(can(t, authSA, "list", "auth.agrenting.io", "agentcredentials", "", "")).To(BeFalse())
	// The webhook's CA and serving key live apart, out of its reach.
	for _, verb := range []string{"get", "list", "watch"} {
		g.Expect(can(t, authSA, verb, "", "secrets", webhookCertNamespace, "agentcred-webhook-server-cert")).To(BeFalse(), "auth may not %s the webhook's certificate", verb)
	}
	g.Expect(can(t, authSA, "list", "auth.agrenting.io", "identityclaims", "", "")).To(BeFalse())
	// Nor the CA of its own certificate: a compromised endpoint cannot mint
	// certificates, and cannot change the CA its clients trust.
	g.Expect(can(t, authSA, "get", "", "secrets", webhookCertNamespace, authv1alpha1.AuthCAName)).To(BeFalse())
	g.Expect(can(t, authSA, "update", "", "configmaps", operatorNamespace, authv1alpha1.AuthCAName)).To(BeFalse())
	// It may ask the API server who a metrics scraper is and what it may do.
	g.Expect(can(t, authSA, "create", "authentication.k8s.io", "tokenreviews", "", "")).To(BeTrue())
	g.Expect(can(t, authSA, "create", "authorization.k8s.io", "subjectaccessreviews", "", "")).To(BeTrue())
}

func TestManagerServiceAccountHasWhatItNeedsAndNoMore(t *testing.T) {
	g := NewWithT(t)
	ensureNamespace(t, operatorNamespace)
	applyRBAC(t, "default")
	allowed := []struct{ verb, group, resource, ns string }{
		{"get", "", "secrets", ""}, {"list", "", "secrets", ""}, {"watch", "", "secrets", ""},
		{"create", "", "secrets", "team-a"}, {"update", "", "secrets", "team-a"}, {"delete", "", "secrets", "team-a"},
		{"list", "auth.agrenting.io", "agentcredentials", ""}, {"patch", "auth.agrenting.io", "agentcredentials", "team-a"},
		{"patch", "auth.agrenting.io", "agentcredentials/status", "team-a"},
		{"create", "events.k8s.io", "events", "team-a"},
		{"update", "coordination.k8s.io", "leases", operatorNamespace},
		{"get", "", "secrets", webhookCertNamespace}, {"create", "", "secrets", webhookCertNamespace}, {"update", "", "secrets", webhookCertNamespace},
		{"create", "auth.agrenting.io", "identityclaims", ""}, {"update", "auth.agrenting.io", "identityclaims", ""}, {"delete", "auth.agrenting.io", "identityclaims", ""},
		{"create", "authentication.k8s.io", "tokenreviews", ""}, {"create", "authorization.k8s.io", "subjectaccessreviews", ""},
		// Restart targets: watched for their rollouts, patched to restart.
		{"watch", "apps", "deployments", ""}, {"patch", "apps", "deployments", "team-a"},
		{"watch", "apps", "statefulsets", ""}, {"patch", "apps", "statefulsets", "team-a"},
		{"watch", "apps", "daemonsets", ""}, {"patch", "apps", "daemonsets", "team-a"},
		// The auth endpoint's CA bundle, published for clients.
		{"create", "", "configmaps", operatorNamespace},
	}
	for _, a := range allowed {
		g.Expect(can(t, managerSA, a.verb, a.group, a.resource, a.ns, "")).To(BeTrue(), "manager needs %s %s/%s in %q", a.verb, a.group, a.resource, a.ns)
	}
	denied := []struct{ verb, group, resource, ns string }{
		{"patch", "", "secrets", ""}, {"deletecollection", "", "secrets", ""},
		{"list", "", "configmaps", ""}, {"list", "", "pods", ""}, {"create", "", "serviceaccounts/token", "team-a"},
		{"delete", "auth.agrenting.io", "agentcredentials", "team-a"}, {"create", "auth.agrenting.io", "agentcredentials", "team-a"},
		{"update", "coordination.k8s.io", "leases", "kube-system"},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", ""},
		{"update", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", ""},
		{"update", "apps", "deployments", "team-a"}, {"delete", "apps", "deployments", "team-a"}, {"create", "apps", "deployments", "team-a"},
		{"patch", "apps", "replicasets", "team-a"}, {"delete", "", "pods", "team-a"},
	}
	for _, d := range denied {
		g.Expect(can(t, managerSA, d.verb, d.group, d.resource, d.ns, "")).To(BeFalse(), "manager must not %s %s/%s in %q", d.verb, d.group, d.resource, d.ns)
	}
	// It updates its own webhook configuration and no other.
	g.Expect(can(t, managerSA, "update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "agentcred-validating-webhook-configuration")).To(BeTrue())
	g.Expect(can(t, managerSA, "update", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "someone-elses")).To(BeFalse())
	// It writes the published CA bundle and no other ConfigMap.
	g.Expect(can(t, managerSA, "update", "", "configmaps", operatorNamespace, authv1alpha1.AuthCAName)).To(BeTrue())
	g.Expect(can(t, managerSA, "update", "", "configmaps", operatorNamespace, "kube-root-ca.crt")).To(BeFalse())
	g.Expect(can(t, managerSA, "create", "", "configmaps", "team-a", "")).To(BeFalse())
	// Anyone authenticated may read the bundle (a public certificate), and
	// nothing else there.
	for _, user := range []string{"system:serviceaccount:team-a:default", "alice@example.com"} {
		g.Expect(canAs(t, user, []string{"system:authenticated"}, "get", "", "configmaps", operatorNamespace, authv1alpha1.AuthCAName)).To(BeTrue(), user)
		g.Expect(canAs(t, user, []string{"system:authenticated"}, "get", "", "configmaps", operatorNamespace, "other")).To(BeFalse(), user)
		g.Expect(canAs(t, user, []string{"system:authenticated"}, "list", "", "configmaps", operatorNamespace, "")).To(BeFalse(), user)
	}

	// The proof that it suffices: run the controller as that ServiceAccount.
	cfg := impersonating(managerSA)
	o := harness.OperatorOptions()
	o.OperatorNamespace, o.MaxConcurrentReconciles = operatorNamespace, 1
	_, stop, err := harness.StartOperator(ctx, cfg, o, operator.Deps{Clock: clocktesting.NewFakeClock(time.Now())})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() {
		if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("manager: %v", err)
		}
	}()

	ensureNamespace(t, "team-rbac")
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-rbac", Name: "as-manager"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: "dddddddd-0000-4000-8000-000000000001"},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := &authv1alpha1.AgentCredential{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cred), got)).To(Succeed())
		c := meta.FindStatusCondition(got.Status.Conditions, authv1alpha1.ReadyCondition)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), c.Message)
	}).WithTimeout(timeoutDuration).WithPolling(50 * time.Millisecond).Should(Succeed())
	// A foreign Secret in the way is detected (a direct get around the cache).
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-rbac", Name: "foreign"}})).To(Succeed())
	foreign := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-rbac", Name: "foreign"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: "dddddddd-0000-4000-8000-000000000002"},
	}
	g.Expect(k8s.Create(ctx, foreign)).To(Succeed())
	g.Eventually(func() string {
		got := &authv1alpha1.AgentCredential{}
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(foreign), got)
		if c := meta.FindStatusCondition(got.Status.Conditions, authv1alpha1.ReadyCondition); c != nil {
			return c.Reason
		}
		return ""
	}).WithTimeout(timeoutDuration).Should(Equal(authv1alpha1.ReasonSecretConflict))
	// Deletion cleans up as that identity too.
	g.Expect(k8s.Delete(ctx, cred)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(cred), &authv1alpha1.AgentCredential{}))
	}).WithTimeout(timeoutDuration).Should(BeTrue())
}
