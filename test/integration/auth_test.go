package integration

import (
	"encoding/json"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/session"
)

func TestAPIKeyLifecycleOverHTTP(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	agent := newAgentID()
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "billing"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: agent},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	cred = waitReady(t, cred)
	key := secretValue(t, ns, "billing", "api-key")

	resp := eventuallyStatus(t, 200, "GET", "/auth/verify", "X-API-Key", key)
	g.Expect(resp.header.Get("X-Auth-Agent-ID")).To(Equal(agent))
	g.Expect(resp.header.Get("X-Auth-Method")).To(Equal("api_key"))
	g.Expect(resp.header.Get("X-Auth-Key-ID")).To(Equal(credential.KeyID(key)))
	g.Expect(resp.header.Get("X-Auth-Credential")).To(Equal(ns + "/billing"))
	g.Expect(call(t, "GET", "/auth/verify", "Api-Key", key).status).To(Equal(200))
	g.Expect(call(t, "GET", "/auth/verify", "Authorization", "Bearer "+key).status).To(Equal(200))

	// Rotate on request: the old key fails at once, the new one passes.
	annotate(t, cred, authv1alpha1.RotateAnnotation, "now")
	NewWithT(t).Eventually(func() string { return secretValue(t, ns, "billing", "api-key") }).
		WithTimeout(timeout).ShouldNot(Equal(key))
	newKey := secretValue(t, ns, "billing", "api-key")
	eventuallyStatus(t, 401, "GET", "/auth/verify", "X-API-Key", key)
	eventuallyStatus(t, 200, "GET", "/auth/verify", "X-API-Key", newKey)

	// Delete: the key stops working.
	g.Expect(k8s.Delete(ctx, cred)).To(Succeed())
	resp = eventuallyStatus(t, 401, "GET", "/auth/verify", "X-API-Key", newKey)
	g.Expect(resp.body).To(ContainSubstring(`"invalid_credentials"`))
}

func TestUserTokenForTwoAgents(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	a, b := newAgentID(), newAgentID()
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice"},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "alice@example.com", Agents: []string{a, b}},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	waitReady(t, cred)
	token := secretValue(t, ns, "alice", "token")
	bearer := "Bearer " + token

	resp := eventuallyStatus(t, 400, "GET", "/auth/verify", "Authorization", bearer)
	g.Expect(resp.body).To(ContainSubstring("agent_id_required"))
	resp = call(t, "GET", "/auth/verify", "Authorization", bearer, "X-Agent-ID", newAgentID())
	g.Expect(resp.status).To(Equal(403))
	g.Expect(resp.body).To(ContainSubstring("agent_not_permitted"))
	resp = call(t, "GET", "/auth/verify", "Authorization", bearer, "X-Agent-ID", b)
	g.Expect(resp.status).To(Equal(200))
	g.Expect(resp.header.Get("X-Auth-Agent-ID")).To(Equal(b))
	g.Expect(resp.header.Get("X-Auth-User")).To(Equal("alice@example.com"))
	g.Expect(resp.header.Get("X-Auth-Method")).To(Equal("user_token"))
}

type tokenResponse struct {
	Token     string `json:"token"`
	TokenType string `json:"token_type"`
	ExpiresAt string `json:"expires_at"`
	ExpiresIn int64  `json:"expires_in"`
	AgentID   string `json:"agent_id"`
}

func mint(t *testing.T, headers ...string) tokenResponse {
	t.Helper()
	var tok tokenResponse
	resp := eventuallyStatus(t, 200, "POST", "/auth/authenticate", headers...)
	if err := json.Unmarshal([]byte(resp.body), &tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSessionsLiveAndDie(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	agent := newAgentID()
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sessions"},
		Spec: authv1alpha1.AgentCredentialSpec{AgentID: agent,
			SessionTTL: &metav1.Duration{Duration: 20 * time.Minute}},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	cred = waitReady(t, cred)
	key := secretValue(t, ns, "sessions", "api-key")

	tok := mint(t, "X-API-Key", key)
	g.Expect(tok.TokenType).To(Equal("Bearer"))
	g.Expect(tok.AgentID).To(Equal(agent))
	g.Expect(tok.ExpiresIn).To(BeEquivalentTo(20*60), "spec.sessionTTL caps --session-ttl")
	resp := call(t, "GET", "/auth/verify", "Authorization", "Bearer "+tok.Token)
	g.Expect(resp.status).To(Equal(200))
	g.Expect(resp.header.Get("X-Auth-Method")).To(Equal("session"))
	g.Expect(resp.header.Get("X-Auth-Agent-ID")).To(Equal(agent))

	// After its TTL (fake clock): 401 expired_session.
	fakeClock.Step(20 * time.Minute)
	resp = call(t, "GET", "/auth/verify", "Authorization", "Bearer "+tok.Token)
	g.Expect(resp.status).To(Equal(401))
	g.Expect(resp.body).To(ContainSubstring("expired_session"))
	g.Expect(resp.header.Get("WWW-Authenticate")).To(ContainSubstring("Bearer"))

	// A fresh session dies when the minting key is rotated.
	tok = mint(t, "X-API-Key", key)
	g.Expect(call(t, "GET", "/auth/verify", "Authorization", "Bearer "+tok.Token).status).To(Equal(200))
	annotate(t, cred, authv1alpha1.RotateAnnotation, "rotate-sessions")
	eventuallyStatus(t, 401, "GET", "/auth/verify", "Authorization", "Bearer "+tok.Token)
}

// TestKubeAPIServerAuthenticatesAgentsByKey: kube-apiserver runs with
// --authentication-token-webhook-config-file pointing at /tokenreview; a
// client whose bearer token is an agent's API key is that agent.
func TestKubeAPIServerAuthenticatesAgentsByKey(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	agent := newAgentID()
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-client"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: agent},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	waitReady(t, cred)
	key := secretValue(t, ns, "kube-client", "api-key")
	eventuallyStatus(t, 200, "GET", "/auth/verify", "X-API-Key", key)

	cfg := rest.AnonymousClientConfig(apiConfig)
	cfg.BearerToken = key
	cs, err := kubernetes.NewForConfig(cfg)
	g.Expect(err).NotTo(HaveOccurred())
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	u := review.Status.UserInfo
	g.Expect(u.Username).To(Equal("agentcred:agent:" + agent))
	g.Expect(u.UID).To(Equal(agent))
	g.Expect(u.Groups).To(ContainElements("agentcred:agents", "agentcred:namespace:"+ns))
	g.Expect(u.Extra["auth.agrenting.io/key-id"]).To(ConsistOf(credential.KeyID(key)))

	// A wrong key is not authenticated.
	wrong := []byte(key)
	wrong[10] ^= 0x01 // still base62: flips between neighbouring digits or letters
	cfg.BearerToken = string(wrong)
	cs, err = kubernetes.NewForConfig(cfg)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	g.Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "want 401 Unauthorized for a wrong key, got %v", err)
}

// TestDeletedSessionKeyringIsRewritten: docs/security.md tells operators to
// reset session signing keys by deleting their Secret. The leader writes a
// new keyring within seconds (it watches the Secret; the suite's clock is
// fake, so no poll could do it) and sessions can be minted again; sessions
// signed with the old keys stop verifying.
func TestDeletedSessionKeyringIsRewritten(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keyring-reset"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: newAgentID()},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	waitReady(t, cred)
	key := secretValue(t, ns, "keyring-reset", "api-key")
	old := mint(t, "X-API-Key", key)

	ring := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: session.SecretName}, ring)).To(Succeed())
	g.Expect(k8s.Delete(ctx, ring)).To(Succeed())
	g.Eventually(func(g Gomega) {
		fresh := &corev1.Secret{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: session.SecretName}, fresh)).To(Succeed())
		g.Expect(fresh.UID).NotTo(Equal(ring.UID))
		g.Expect(call(t, "POST", "/auth/authenticate", "X-API-Key", key).status).To(Equal(200))
	}).WithTimeout(5 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	g.Eventually(func() int {
		return call(t, "GET", "/auth/verify", "Authorization", "Bearer "+old.Token).status
	}).WithTimeout(5*time.Second).Should(Equal(401), "a session signed with a deleted key still verifies")
}
