package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"github.com/prometheus/common/expfmt"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/session"
)

// TestNothingLeaksOverALifecycle runs a full lifecycle — issue, verify, mint
// and use a session, refused requests of every kind, rotate, delete — and
// then scans every log line, event, status, Secret outside the agent Secret,
// the metrics output and every response body for any key, token, session or
// signing key it saw.
func TestNothingLeaksOverALifecycle(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	var secrets []string // everything that must never appear outside its place
	var bodies bytes.Buffer
	record := func(r response) {
		bodies.WriteString(r.body)
		bodies.WriteString(strings.Join(r.header.Values("Www-Authenticate"), " "))
	}

	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "leaky"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: newAgentID()},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	ut := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "leaky-user"},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "leak@example.com", Agents: []string{newAgentID(), newAgentID()}},
	}
	g.Expect(k8s.Create(ctx, ut)).To(Succeed())
	waitReady(t, cred)
	waitReady(t, ut)
	key := secretValue(t, ns, "leaky", "api-key")
	token := secretValue(t, ns, "leaky-user", "token")
	secrets = append(secrets, key, token)

	record(eventuallyStatus(t, 200, "GET", "/auth/verify", "X-API-Key", key))
	tok := mint(t, "X-API-Key", key)
	secrets = append(secrets, tok.Token)
	record(call(t, "GET", "/auth/verify", "Authorization", "Bearer "+tok.Token))
	// Refusals of every kind, each carrying a real credential.
	for _, h := range [][]string{
		{"X-API-Key", key, "Api-Key", token},
		{"Authorization", "Bearer " + token},
		{"Authorization", "Bearer " + token, "X-Agent-ID", newAgentID()},
		{"Authorization", "Bearer " + token, "X-Agent-ID", "not-a-uuid"},
		{"X-API-Key", key[:len(key)-1]},
		{"Authorization", "Bearer " + tok.Token[:len(tok.Token)-3]},
		{"X-API-Key", token},
	} {
		r := call(t, "GET", "/auth/verify", h...)
		g.Expect(r.status).To(BeNumerically(">=", 400))
		record(r)
		record(call(t, "POST", "/auth/authenticate", h...))
	}
	// Rotate (new key), then delete.
	annotate(t, cred, authv1alpha1.RotateAnnotation, "leak-test")
	NewWithT(t).Eventually(func() string { return secretValue(t, ns, "leaky", "api-key") }).WithTimeout(timeout).ShouldNot(Equal(key))
	rotated := secretValue(t, ns, "leaky", "api-key")
	secrets = append(secrets, rotated)
	record(eventuallyStatus(t, 401, "GET", "/auth/verify", "X-API-Key", key))
	g.Expect(k8s.Delete(ctx, cred)).To(Succeed())
	record(eventuallyStatus(t, 401, "GET", "/auth/verify", "X-API-Key", rotated))

	// The session signing keys are secrets too.
	keyring := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: session.SecretName}, keyring)).To(Succeed())
	ring, err := session.ParseKeyring(keyring.Data)
	g.Expect(err).NotTo(HaveOccurred())
	for _, k := range ring.Keys {
		secrets = append(secrets, base64.StdEncoding.EncodeToString(k.Secret), hex.EncodeToString(k.Secret))
	}

	// Collect everything that must not hold them.
	var haystack bytes.Buffer
	haystack.WriteString(allLogs.String())
	haystack.Write(bodies.Bytes())
	families, err := reg.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		_, _ = expfmt.MetricFamilyToText(&haystack, f)
	}
	events := &eventsv1.EventList{}
	g.Expect(k8s.List(ctx, events)).To(Succeed())
	raw, _ := json.Marshal(events)
	haystack.Write(raw)
	creds := &authv1alpha1.AgentCredentialList{}
	g.Expect(k8s.List(ctx, creds)).To(Succeed())
	raw, _ = json.Marshal(creds)
	haystack.Write(raw)
	all := &corev1.SecretList{}
	g.Expect(k8s.List(ctx, all)).To(Succeed())
	for _, s := range all.Items {
		if s.Labels[authv1alpha1.SecretRoleLabel] == authv1alpha1.SecretRoleAgentKey || s.Name == session.SecretName {
			continue // where keys and signing keys belong
		}
		raw, _ := json.Marshal(s)
		haystack.Write(raw)
	}
	g.Expect(haystack.Len()).To(BeNumerically(">", 10000), "the scan must have something to scan")
	g.Expect(allLogs.String()).To(ContainSubstring("Issued key"), "the operator's logs must be captured")
	text := haystack.String()
	for i, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("secret #%d (%s…) leaked into logs, metrics, events, status, other Secrets or a response", i, s[:3])
		}
	}

}
