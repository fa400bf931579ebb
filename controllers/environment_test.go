package controllers_test

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
)

func sandbox(c *authv1alpha1.AgentCredential) { c.Spec.Environment = authv1alpha1.SandboxEnvironment }

func labelNamespace(t *testing.T, ns, env string) {
	t.Helper()
	n := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, n); err != nil {
		t.Fatal(err)
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	if env == "" {
		delete(n.Labels, authv1alpha1.NamespaceEnvironmentLabel)
	} else {
		n.Labels[authv1alpha1.NamespaceEnvironmentLabel] = env
	}
	if err := k8s.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func TestSandboxCredentialGetsASandboxKey(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "tester", sandbox)
	create(t, cred)
	cred = waitReady(t, cred)
	key := string(agentSecret(t, ns, "tester").Data[authv1alpha1.AgentSecretAPIKey])
	g.Expect(key).To(HavePrefix(credential.APIKeySandboxPrefix))
	g.Expect(hashRecord(t, cred).Environment).To(Equal("sandbox"))

	token := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "qa"},
		Spec: authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "qa-" + ns + "@example.com",
			Agents: []string{newAgentID()}, Environment: authv1alpha1.SandboxEnvironment},
	}
	create(t, token)
	waitReady(t, token)
	g.Expect(string(agentSecret(t, ns, "qa").Data[authv1alpha1.AgentSecretToken])).To(HavePrefix(credential.UserTokenSandboxPrefix))

	// Drift: a live key hand-edited into a sandbox credential's Secret is reissued.
	live, err := credential.Generate(credential.APIKey)
	g.Expect(err).NotTo(HaveOccurred())
	s := agentSecret(t, ns, "tester")
	s.Data[authv1alpha1.AgentSecretAPIKey] = []byte(live)
	g.Expect(k8s.Update(ctx, s)).To(Succeed())
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	got := string(agentSecret(t, ns, "tester").Data[authv1alpha1.AgentSecretAPIKey])
	g.Expect(got).To(HavePrefix(credential.APIKeySandboxPrefix))
	g.Expect(hashRecord(t, cred).Accepts(credential.DigestOf(live), fakeClock.Now())).To(BeFalse())
}

func TestSandboxNamespaceHoldsLiveCredentialsWithoutAKey(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	live := apiKeyCredential(ns, "prod-key")
	create(t, live)
	live = waitReady(t, live)
	liveKey := string(agentSecret(t, ns, "prod-key").Data[authv1alpha1.AgentSecretAPIKey])
	test := apiKeyCredential(ns, "test-key", sandbox)
	create(t, test)
	waitReady(t, test)

	// An admin labels the namespace sandbox: the live credential loses its
	// key (the namespace's watch, no poke), the sandbox one keeps its.
	labelNamespace(t, ns, "sandbox")
	live = waitCondition(t, live, metav1.ConditionFalse, authv1alpha1.ReasonEnvironmentNotAllowed)
	g.Expect(readyMessage(live)).To(ContainSubstring("set spec.environment: sandbox"))
	g.Expect(testutil.ToFloat64(testMetrics.Ready.WithLabelValues(ns, "prod-key"))).To(BeZero(), "agentcred_credential_ready for a refused credential")
	g.Expect(live.Status.KeyID).To(BeEmpty())
	_, err := tryHashRecord(live)
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the live key's hash must be gone")
	waitEvent(t, live, "Conflict")
	g.Expect(strings.Join(eventReasons(t, test), ",")).NotTo(ContainSubstring("Conflict"))
	waitReady(t, test)

	// A live credential created there (webhook bypassed here) gets no key.
	late := apiKeyCredential(ns, "late")
	create(t, late)
	waitCondition(t, late, metav1.ConditionFalse, authv1alpha1.ReasonEnvironmentNotAllowed)
	_, err = tryHashRecord(late)
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue())

	// The label removed: the live credential gets a new key (never the old one back).
	labelNamespace(t, ns, "")
	live = waitReady(t, live)
	g.Eventually(func() float64 { return testutil.ToFloat64(testMetrics.Ready.WithLabelValues(ns, "prod-key")) }).WithTimeout(timeout).Should(BeEquivalentTo(1))
	g.Expect(hashRecord(t, live).Accepts(credential.DigestOf(liveKey), fakeClock.Now())).To(BeFalse())
}
