package controllers_test

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

// TestCachedCredentialsKeepOnlyWhatReconcileReads: the manager caches an
// AgentCredential without its secretTemplate, labels and foreign
// annotations (kubectl's last-applied-configuration among them), which a
// tenant makes as large as it likes; the template still reaches the agent
// Secret, and a change of it still does.
func TestCachedCredentialsKeepOnlyWhatReconcileReads(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	note := strings.Repeat("n", 16000)
	cred := apiKeyCredential(ns, "trimmed", func(c *authv1alpha1.AgentCredential) {
		c.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("a", 100<<10)}
		c.Labels = map[string]string{"team": "a"}
		c.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": note}}
	})
	create(t, cred)
	cred = waitReady(t, cred)
	s := agentSecret(t, ns, "trimmed")
	g.Expect(s.Labels).To(HaveKeyWithValue("team", "a"))
	g.Expect(s.Annotations).To(HaveKeyWithValue("note", note))

	key := client.ObjectKeyFromObject(cred)
	g.Eventually(func(g Gomega) {
		c := &authv1alpha1.AgentCredential{}
		g.Expect(cached.Get(ctx, key, c)).To(Succeed())
		g.Expect(c.Status.KeyID).NotTo(BeEmpty())
		g.Expect(c.Spec.SecretTemplate).To(BeNil())
		g.Expect(c.Labels).To(BeEmpty())
		g.Expect(c.Annotations).NotTo(HaveKey("kubectl.kubernetes.io/last-applied-configuration"))
	}).Should(Succeed())

	// A changed template reaches the agent Secret, read from the API server.
	cred = get(t, cred)
	cred.Spec.SecretTemplate.Labels["team"] = "b"
	g.Expect(k8s.Update(ctx, cred)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(agentSecret(t, ns, "trimmed").Labels).To(HaveKeyWithValue("team", "b"))
	}).Should(Succeed())
	// And the writes agentcred makes from its trimmed copy keep what it dropped.
	cred = get(t, cred)
	g.Expect(cred.Annotations).To(HaveKey("kubectl.kubernetes.io/last-applied-configuration"))
	g.Expect(cred.Labels).To(HaveKeyWithValue("team", "a"))
	g.Expect(cred.Spec.SecretTemplate.Annotations).To(HaveKeyWithValue("note", note))
}
