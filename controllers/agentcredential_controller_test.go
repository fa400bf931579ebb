package controllers_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
)

func TestIssuesAPIKeyAndKeepsOnlyItsHash(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "billing-agent", func(c *authv1alpha1.AgentCredential) {
		c.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]string{"team": "billing"}, Annotations: map[string]string{"note": "x"}}
	})
	create(t, cred)
	cred = waitReady(t, cred)

	s := agentSecret(t, ns, "billing-agent")
	key := string(s.Data[authv1alpha1.AgentSecretAPIKey])
	kind, err := credential.Parse(key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(kind).To(Equal(credential.APIKey))
	g.Expect(key).To(HavePrefix("ak_"))
	g.Expect(string(s.Data[authv1alpha1.AgentSecretAgentID])).To(Equal(cred.Spec.AgentID))
	g.Expect(metav1.IsControlledBy(s, cred)).To(BeTrue(), "agent Secret must be controlled by the credential")
	g.Expect(s.Labels).To(HaveKeyWithValue(authv1alpha1.ManagedByLabel, "agentcred"))
	g.Expect(s.Labels).To(HaveKeyWithValue(authv1alpha1.CredentialLabel, "billing-agent"))
	g.Expect(s.Labels).To(HaveKeyWithValue(authv1alpha1.CredentialNamespaceLabel, ns))
	g.Expect(s.Labels).To(HaveKeyWithValue("team", "billing"))
	g.Expect(s.Annotations).To(HaveKeyWithValue("note", "x"))

	rec := hashRecord(t, cred)
	g.Expect(rec.Current.Digest.Hex()).To(Equal(credential.DigestOf(key).Hex()), "hash Secret must hold SHA-256 of exactly the issued key")
	g.Expect(rec.Credential).To(Equal(ns + "/billing-agent"))
	g.Expect(rec.UID).To(Equal(string(cred.UID)))
	g.Expect(rec.AgentIDs).To(Equal([]string{cred.Spec.AgentID}))
	g.Expect(rec.Previous).To(BeNil())
	g.Expect(rec.Pending).To(BeNil())

	g.Expect(cred.Status.KeyID).To(Equal(credential.KeyID(key)))
	g.Expect(cred.Status.SecretName).To(Equal("billing-agent"))
	g.Expect(cred.Status.AgentID).To(Equal(cred.Spec.AgentID))
	g.Expect(cred.Status.NextRotationTime.Sub(cred.Status.LastRotationTime.Time)).To(Equal(90 * 24 * time.Hour))
	g.Expect(cred.Finalizers).To(ContainElement(authv1alpha1.CleanupFinalizer))
	waitEvent(t, cred, controllers.EventIssued)

	assertKeyNowhereElse(t, key, s)
}

// assertKeyNowhereElse scans every Secret but the agent Secret, the
// credential's status, every event and the controller's logs for the key.
func assertKeyNowhereElse(t *testing.T, key string, agent *corev1.Secret) {
	t.Helper()
	secrets := &corev1.SecretList{}
	if err := k8s.List(ctx, secrets); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		if s.UID == agent.UID {
			continue
		}
		raw, _ := json.Marshal(s)
		for _, v := range s.Data {
			if strings.Contains(string(v), key) {
				t.Fatalf("Secret %s/%s holds the plaintext key", s.Namespace, s.Name)
			}
		}
		if strings.Contains(string(raw), key) {
			t.Fatalf("Secret %s/%s holds the plaintext key", s.Namespace, s.Name)
		}
	}
	creds := &authv1alpha1.AgentCredentialList{}
	if err := k8s.List(ctx, creds); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(creds)
	if strings.Contains(string(raw), key) {
		t.Fatal("an AgentCredential (status or spec) holds the plaintext key")
	}
	events := &eventsv1.EventList{}
	if err := k8s.List(ctx, events); err != nil {
		t.Fatal(err)
	}
	raw, _ = json.Marshal(events)
	if strings.Contains(string(raw), key) {
		t.Fatal("an event holds the plaintext key")
	}
	if strings.Contains(logs.String(), key) {
		t.Fatal("the controller logged the plaintext key")
	}
	if len(logs.String()) == 0 {
		t.Fatal("no controller logs were captured; the scan would prove nothing")
	}
}

func TestIssuesUserToken(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	a, b := newAgentID(), newAgentID()
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice"},
		Spec: authv1alpha1.AgentCredentialSpec{
			Type: authv1alpha1.UserTokenType, User: "alice@example.com", Agents: []string{a, b},
			SecretName: "alice-token", SessionTTL: &metav1.Duration{Duration: 30 * time.Minute},
		},
	}
	create(t, cred)
	cred = waitReady(t, cred)
	s := agentSecret(t, ns, "alice-token")
	token := string(s.Data[authv1alpha1.AgentSecretToken])
	kind, err := credential.Parse(token)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(kind).To(Equal(credential.UserToken))
	g.Expect(string(s.Data[authv1alpha1.AgentSecretAgentIDs])).To(Equal(a + "\n" + b))
	g.Expect(string(s.Data[authv1alpha1.AgentSecretUser])).To(Equal("alice@example.com"))
	rec := hashRecord(t, cred)
	g.Expect(rec.Current.Digest.Equal(credential.DigestOf(token))).To(BeTrue())
	g.Expect(rec.Type).To(Equal("UserToken"))
	g.Expect(rec.AgentIDs).To(Equal([]string{a, b}))
	g.Expect(rec.User).To(Equal("alice@example.com"))
	g.Expect(rec.SessionTTL).To(Equal(30 * time.Minute))
	assertKeyNowhereElse(t, token, s)

	// Adding an agent reaches the agent Secret and the hash Secret without a new key.
	c := get(t, cred)
	extra := newAgentID()
	c.Spec.Agents = append(c.Spec.Agents, extra)
	g.Expect(k8s.Update(ctx, c)).To(Succeed())
	g.Eventually(func() []string { return hashRecord(t, cred).AgentIDs }).WithTimeout(timeout).Should(ContainElement(extra))
	g.Eventually(func() string { return string(agentSecret(t, ns, "alice-token").Data[authv1alpha1.AgentSecretAgentIDs]) }).
		WithTimeout(timeout).Should(HaveSuffix(extra))
	g.Expect(get(t, cred).Status.KeyID).To(Equal(cred.Status.KeyID))
}

func TestScheduledRotationAtNinetyDaysWithGracePeriod(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "scheduled")
	create(t, cred)
	cred = waitReady(t, cred)
	oldKey := string(agentSecret(t, ns, "scheduled").Data[authv1alpha1.AgentSecretAPIKey])
	issued := cred.Status.LastRotationTime.Time
	g.Expect(cred.Status.NextRotationTime.Time).To(BeTemporally("==", issued.Add(90*24*time.Hour)))

	// One minute before the due date nothing happens.
	fakeClock.SetTime(issued.Add(90*24*time.Hour - time.Minute))
	pokeAndWaitForReconcile(t, cred)
	g.Consistently(func() string { return get(t, cred).Status.KeyID }).WithTimeout(time.Second).Should(Equal(cred.Status.KeyID))

	fakeClock.SetTime(issued.Add(90 * 24 * time.Hour))
	rotatedAt := fakeClock.Now()
	poke(t, cred)
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	newKey := string(agentSecret(t, ns, "scheduled").Data[authv1alpha1.AgentSecretAPIKey])
	g.Expect(credential.KeyID(newKey)).To(Equal(cred.Status.KeyID))
	g.Expect(cred.Status.RotationCount).To(BeEquivalentTo(1))
	g.Expect(cred.Status.PreviousKeyID).To(Equal(credential.KeyID(oldKey)))
	g.Expect(cred.Status.PreviousKeyExpiresAt.Time).To(BeTemporally("==", rotatedAt.Add(10*time.Minute)))
	g.Expect(cred.Status.NextRotationTime.Time).To(BeTemporally("==", rotatedAt.Add(90*24*time.Hour)))

	// During the grace period both hashes are present, with the right expiry.
	rec := hashRecord(t, cred)
	g.Expect(rec.Current.Digest.Equal(credential.DigestOf(newKey))).To(BeTrue())
	g.Expect(rec.Previous).NotTo(BeNil())
	g.Expect(rec.Previous.Digest.Equal(credential.DigestOf(oldKey))).To(BeTrue())
	g.Expect(rec.Previous.ExpiresAt).To(BeTemporally("==", rotatedAt.Add(10*time.Minute)))
	g.Expect(rec.Accepts(credential.DigestOf(oldKey), fakeClock.Now())).To(BeTrue())
	waitEvent(t, cred, controllers.EventRotated)
	g.Expect(testutil.ToFloat64(metricsRotations("scheduled"))).To(BeNumerically(">=", 1))

	// After it only the new one.
	fakeClock.SetTime(rotatedAt.Add(10 * time.Minute))
	poke(t, cred)
	g.Eventually(func() *hashsecret.Entry { return hashRecord(t, cred).Previous }).WithTimeout(timeout).Should(BeNil())
	cred = waitReady(t, cred)
	g.Eventually(func() string { return get(t, cred).Status.PreviousKeyID }).WithTimeout(timeout).Should(BeEmpty())
	g.Expect(hashRecord(t, cred).Current.Digest.Equal(credential.DigestOf(newKey))).To(BeTrue())
}

func TestScheduledRotationAtCustomPeriod(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "hourly", func(c *authv1alpha1.AgentCredential) {
		c.Spec.Rotation.Period = &metav1.Duration{Duration: 2 * time.Hour}
		c.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 0}
	})
	create(t, cred)
	cred = waitReady(t, cred)
	issued := cred.Status.LastRotationTime.Time
	g.Expect(cred.Status.NextRotationTime.Time).To(BeTemporally("==", issued.Add(2*time.Hour)))
	oldKey := string(agentSecret(t, ns, "hourly").Data[authv1alpha1.AgentSecretAPIKey])

	fakeClock.SetTime(issued.Add(2 * time.Hour))
	poke(t, cred)
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	// gracePeriod 0s: the old key is revoked at once.
	rec := hashRecord(t, cred)
	g.Expect(rec.Previous).To(BeNil())
	g.Expect(rec.Accepts(credential.DigestOf(oldKey), fakeClock.Now())).To(BeFalse())
	g.Expect(cred.Status.NextRotationTime.Time).To(BeTemporally("==", fakeClock.Now().Truncate(time.Second).Add(2*time.Hour)))

	// Shortening the period makes an old key due at once.
	c := get(t, cred)
	fakeClock.Step(90 * time.Minute)
	c.Spec.Rotation.Period = &metav1.Duration{Duration: time.Hour}
	g.Expect(k8s.Update(ctx, c)).To(Succeed())
	waitKeyChange(t, cred, cred.Status.KeyID)
}

func TestRotateAnnotationRevokesOldKeyAtOnce(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "requested")
	create(t, cred)
	cred = waitReady(t, cred)
	oldKey := string(agentSecret(t, ns, "requested").Data[authv1alpha1.AgentSecretAPIKey])

	annotate(t, cred, authv1alpha1.RotateAnnotation, "2026-11-28T10:00")
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	newKey := string(agentSecret(t, ns, "requested").Data[authv1alpha1.AgentSecretAPIKey])
	rec := hashRecord(t, cred)
	g.Expect(rec.Current.Digest.Equal(credential.DigestOf(newKey))).To(BeTrue())
	g.Expect(rec.Previous).To(BeNil(), "a requested rotation must not keep the old key")
	g.Expect(rec.Accepts(credential.DigestOf(oldKey), fakeClock.Now())).To(BeFalse())
	g.Expect(cred.Status.LastRotationRequest).To(Equal("2026-11-28T10:00"))
	g.Expect(cred.Status.RotationCount).To(BeEquivalentTo(1))
	g.Expect(cred.Status.PreviousKeyID).To(BeEmpty())
	waitEvent(t, cred, controllers.EventRotationRequested)

	// The same value again does nothing; a new value rotates again.
	pokeAndWaitForReconcile(t, cred)
	g.Consistently(func() string { return get(t, cred).Status.KeyID }).WithTimeout(time.Second).Should(Equal(cred.Status.KeyID))
	annotate(t, cred, authv1alpha1.RotateAnnotation, "again")
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	g.Expect(cred.Status.RotationCount).To(BeEquivalentTo(2))

	// A 10 KiB request rotates too, and is recorded as a digest.
	annotate(t, cred, authv1alpha1.RotateAnnotation, strings.Repeat("r", 10<<10))
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	g.Expect(cred.Status.LastRotationRequest).To(HavePrefix("sha256:"))
	g.Expect(len(cred.Status.LastRotationRequest)).To(BeNumerically("<", 100))
}

func TestDeleteRemovesBothSecrets(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "doomed")
	create(t, cred)
	cred = waitReady(t, cred)
	agent := agentSecret(t, ns, "doomed")
	hash := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, hashSecretKey(cred), hash)).To(Succeed())

	g.Expect(k8s.Delete(ctx, cred)).To(Succeed())
	waitGone(t, hash)
	waitGone(t, agent)
	waitGone(t, cred)
}

func TestOrphanedHashSecretIsRemoved(t *testing.T) {
	ns := newNamespace(t)
	orphan := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Namespace: operatorNamespace, Name: hashsecret.Name(ns, "ghost"),
		Labels: map[string]string{
			authv1alpha1.ManagedByLabel: "agentcred", authv1alpha1.SecretRoleLabel: authv1alpha1.SecretRoleKeyHash,
			authv1alpha1.CredentialLabel: "ghost", authv1alpha1.CredentialNamespaceLabel: ns,
		},
	}}
	create(t, orphan)
	waitGone(t, orphan)
}

func TestDeletedAgentSecretIsReissued(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "lost")
	create(t, cred)
	cred = waitReady(t, cred)
	oldKey := string(agentSecret(t, ns, "lost").Data[authv1alpha1.AgentSecretAPIKey])

	g.Expect(k8s.Delete(ctx, agentSecret(t, ns, "lost"))).To(Succeed())
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	newKey := string(agentSecret(t, ns, "lost").Data[authv1alpha1.AgentSecretAPIKey])
	g.Expect(newKey).NotTo(Equal(oldKey))
	rec := hashRecord(t, cred)
	g.Expect(rec.Accepts(credential.DigestOf(newKey), fakeClock.Now())).To(BeTrue())
	g.Expect(rec.Accepts(credential.DigestOf(oldKey), fakeClock.Now())).To(BeFalse(), "the lost key must be revoked")
	waitEvent(t, cred, controllers.EventReissued)
}

func TestCorruptedAgentSecretIsReissued(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "corrupt")
	create(t, cred)
	cred = waitReady(t, cred)
	s := agentSecret(t, ns, "corrupt")
	oldKey := string(s.Data[authv1alpha1.AgentSecretAPIKey])
	s.Data[authv1alpha1.AgentSecretAPIKey] = []byte(oldKey[:len(oldKey)-1]) // one character lost
	g.Expect(k8s.Update(ctx, s)).To(Succeed())

	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	newKey := string(agentSecret(t, ns, "corrupt").Data[authv1alpha1.AgentSecretAPIKey])
	_, err := credential.Parse(newKey)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(hashRecord(t, cred).Accepts(credential.DigestOf(oldKey), fakeClock.Now())).To(BeFalse())
	waitEvent(t, cred, controllers.EventReissued)
}

func TestEditedOrDeletedHashSecretIsRewritten(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "tampered")
	create(t, cred)
	cred = waitReady(t, cred)
	key := string(agentSecret(t, ns, "tampered").Data[authv1alpha1.AgentSecretAPIKey])

	// An attacker with access to the operator namespace swaps in the hash of
	// their own key. The record is intact, so it is never rebuilt from the
	// (tenant-writable) status: the key is reissued, and neither the
	// attacker's key nor the one it displaced verifies (issue 23 item 8).
	hash := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, hashSecretKey(cred), hash)).To(Succeed())
	evil := credential.DigestOf("ak_attacker")
	hash.Data[hashsecret.KeyCurrentDigest] = []byte(evil.Hex())
	hash.Data[hashsecret.KeyCurrentKeyID] = []byte(evil.KeyID())
	g.Expect(k8s.Update(ctx, hash)).To(Succeed())
	displaced := key
	g.Eventually(func(g Gomega) {
		key = string(agentSecret(t, ns, "tampered").Data[authv1alpha1.AgentSecretAPIKey])
		g.Expect(key).NotTo(Equal(displaced))
		rec, err := tryHashRecord(cred)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rec.Current.Digest.Equal(credential.DigestOf(key))).To(BeTrue())
		g.Expect(rec.Accepts(evil, fakeClock.Now()) || rec.Accepts(credential.DigestOf(displaced), fakeClock.Now())).To(BeFalse())
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	cred = waitKeyChange(t, cred, cred.Status.KeyID)

	// Garbage is rewritten too.
	g.Expect(k8s.Get(ctx, hashSecretKey(cred), hash)).To(Succeed())
	hash.Data = map[string][]byte{"junk": []byte("1")}
	g.Expect(k8s.Update(ctx, hash)).To(Succeed())
	g.Eventually(func(g Gomega) {
		rec, err := tryHashRecord(cred)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rec.Current.Digest.Equal(credential.DigestOf(key))).To(BeTrue())
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())

	// And a deleted one comes back, with the same key: the agent keeps working.
	g.Expect(k8s.Get(ctx, hashSecretKey(cred), hash)).To(Succeed())
	g.Expect(k8s.Delete(ctx, hash)).To(Succeed())
	g.Eventually(func(g Gomega) {
		rec, err := tryHashRecord(cred)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rec.Current.Digest.Equal(credential.DigestOf(key))).To(BeTrue())
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	g.Expect(get(t, cred).Status.KeyID).To(Equal(cred.Status.KeyID))
}

func TestForeignSecretIsNotOverwritten(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "database"}, Data: map[string][]byte{"password": []byte("hunter2")}}
	create(t, foreign)
	cred := apiKeyCredential(ns, "hijack", func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "database" })
	create(t, cred)
	cred = waitCondition(t, cred, metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
	g.Expect(readyMessage(cred)).To(ContainSubstring("Secret database already exists"))
	after := agentSecret(t, ns, "database")
	g.Expect(after.Data).To(Equal(foreign.Data))
	g.Expect(after.OwnerReferences).To(BeEmpty())
	g.Expect(k8s.Get(ctx, hashSecretKey(cred), &corev1.Secret{})).NotTo(Succeed())

	// Deleting the credential leaves the foreign Secret alone.
	g.Expect(k8s.Delete(ctx, cred)).To(Succeed())
	waitGone(t, cred)
	g.Expect(agentSecret(t, ns, "database").Data).To(Equal(foreign.Data))
}

func TestAgentSecretMetadataIsRepaired(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "relabel")
	create(t, cred)
	cred = waitReady(t, cred)
	s := agentSecret(t, ns, "relabel")
	s.Data[authv1alpha1.AgentSecretAgentID] = []byte("someone-else")
	g.Expect(k8s.Update(ctx, s)).To(Succeed())
	g.Eventually(func() string { return string(agentSecret(t, ns, "relabel").Data[authv1alpha1.AgentSecretAgentID]) }).
		WithTimeout(timeout).Should(Equal(cred.Spec.AgentID))
	g.Expect(get(t, cred).Status.KeyID).To(Equal(cred.Status.KeyID), "repairing metadata must not rotate the key")
}

func TestMetrics(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "measured")
	issuesBefore := testutil.ToFloat64(metricsRotations("issue"))
	create(t, cred)
	cred = waitReady(t, cred)
	// This credential's issue is counted (other tests may issue concurrently
	// in the shared suite, so at least one more, not exactly one).
	g.Eventually(func() float64 { return testutil.ToFloat64(metricsRotations("issue")) }).
		WithTimeout(timeout).Should(BeNumerically(">=", issuesBefore+1))
	families, err := registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	found := map[string]bool{}
	gaugeSeen := false
	for _, f := range families {
		found[f.GetName()] = true
		if f.GetName() == "agentcred_credential_next_rotation_timestamp_seconds" {
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["namespace"] == ns && labels["name"] == "measured" {
					gaugeSeen = true
					g.Expect(m.GetGauge().GetValue()).To(BeEquivalentTo(cred.Status.NextRotationTime.Unix()))
				}
			}
		}
	}
	g.Expect(gaugeSeen).To(BeTrue(), "no next-rotation gauge for the credential")
	g.Expect(found).To(HaveKey("agentcred_rotations_total"))
	g.Expect(found).To(HaveKey("agentcred_credentials"))
	g.Expect(found).To(HaveKey("agentcred_credential_next_rotation_timestamp_seconds"))
	g.Expect(testutil.CollectAndCount(registry, "agentcred_credentials")).To(Equal(4), "one series per type and environment")
}

func metricsRotations(reason string) prometheus.Collector {
	return testMetrics.RotationsTotal.WithLabelValues(reason)
}

// TestNamesAtTheLimitsAndUnicode: a credential whose name is as long as
// allowed (63, since agentcred puts it in label values) and a user token with
// a non-ASCII user are issued like any other; a longer name is refused.
func TestNamesAtTheLimitsAndUnicode(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	err := k8s.Create(ctx, apiKeyCredential(ns, strings.Repeat("a", 64)))
	// The field, not "<nil>: Invalid value" (a CEL rule on the root object).
	g.Expect(err).To(MatchError(ContainSubstring("metadata.name: Too long: may not be more than 63")))
	g.Expect(err).NotTo(MatchError(ContainSubstring(`Invalid value: "object"`)))
	long := strings.Repeat("a", 63)
	cred := apiKeyCredential(ns, long)
	create(t, cred)
	cred = waitReady(t, cred)
	g.Expect(len(hashSecretKey(cred).Name)).To(BeNumerically("<=", 63))
	g.Expect(agentSecret(t, ns, long).Data).To(HaveKey(authv1alpha1.AgentSecretAPIKey))

	ut := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unicode"},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "jürgen.østergård@例え.jp", Agents: []string{newAgentID()}},
	}
	create(t, ut)
	waitReady(t, ut)
	g.Expect(hashRecord(t, ut).User).To(Equal("jürgen.østergård@例え.jp"))
	g.Expect(string(agentSecret(t, ns, "unicode").Data[authv1alpha1.AgentSecretUser])).To(Equal("jürgen.østergård@例え.jp"))
}

// The cache drops managedFields (memory), and the controller's updates from
// those cached copies must not wipe the field ownership on the server.
func TestCachedObjectsDropManagedFieldsAndUpdatesKeepThem(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "lean-agent", func(c *authv1alpha1.AgentCredential) {
		c.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Labels: map[string]string{"team": "lean"}}
	})
	create(t, cred)
	cred = waitReady(t, cred)
	g.Expect(cred.ManagedFields).NotTo(BeEmpty(), "the API server tracks field ownership")

	key := client.ObjectKey{Namespace: ns, Name: "lean-agent"}
	g.Eventually(func(g Gomega) {
		c, s := &authv1alpha1.AgentCredential{}, &corev1.Secret{}
		g.Expect(cached.Get(ctx, key, c)).To(Succeed())
		g.Expect(cached.Get(ctx, key, s)).To(Succeed())
		g.Expect(c.ManagedFields).To(BeEmpty())
		g.Expect(s.ManagedFields).To(BeEmpty())
	}).Should(Succeed())

	// Remove the template label: the controller repairs it with an update
	// built from its cached copy, which has no managedFields.
	s := agentSecret(t, ns, "lean-agent")
	delete(s.Labels, "team")
	g.Expect(k8s.Update(ctx, s)).To(Succeed())
	g.Eventually(func(g Gomega) {
		s := agentSecret(t, ns, "lean-agent")
		g.Expect(s.Labels).To(HaveKeyWithValue("team", "lean"))
		g.Expect(s.ManagedFields).NotTo(BeEmpty())
	}).Should(Succeed())
}

// TestTenantLabelledSecretsAreCachedWithoutData: any tenant can put
// agentcred's label on its own Secrets; the manager caches their names, not
// their data, annotations or other labels — and agent Secrets' keys are
// never in its cache either. (Before the fix the cache held every labelled
// Secret whole: 150 of ~900 KiB grew the manager by ~190 MiB.)
func TestTenantLabelledSecretsAreCachedWithoutData(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	big := make([]byte, 512<<10)
	hostile := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hostile",
			Labels:      map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue, "padding": "x"},
			Annotations: map[string]string{"padding": string(make([]byte, 64<<10))}},
		Data: map[string][]byte{"blob": big},
	}
	create(t, hostile)
	cred := apiKeyCredential(ns, "agent")
	create(t, cred)
	waitReady(t, cred)
	for _, name := range []string{"hostile", "agent"} {
		c := &corev1.Secret{}
		g.Eventually(func() error { return cached.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, c) }).Should(Succeed())
		g.Expect(c.Data).To(BeEmpty(), "%s: data in the manager's cache", name)
		g.Expect(c.StringData).To(BeEmpty())
		g.Expect(c.Annotations).To(BeEmpty(), "%s: annotations in the manager's cache", name)
		g.Expect(c.Labels).NotTo(HaveKey("padding"))
		g.Expect(c.Labels).To(HaveKeyWithValue(authv1alpha1.ManagedByLabel, authv1alpha1.ManagedByValue))
	}
	// Hash Secrets, in the operator namespace, stay whole: the controller
	// reads its records from them.
	h := &corev1.Secret{}
	g.Expect(cached.Get(ctx, hashSecretKey(cred), h)).To(Succeed())
	g.Expect(h.Data).NotTo(BeEmpty())
}

// TestSecretConflictRecoversWhenTheSecretGoes: the user deletes the foreign
// Secret exactly as the condition says; the credential is issued within
// seconds (the foreign Secret is outside the cache, so nothing else would
// trigger it until the next resync, hours away).
func TestSecretConflictRecoversWhenTheSecretGoes(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"}, Data: map[string][]byte{"x": []byte("y")}}
	create(t, foreign)
	cred := apiKeyCredential(ns, "taken")
	create(t, cred)
	waitCondition(t, cred, metav1.ConditionFalse, authv1alpha1.ReasonSecretConflict)
	g.Expect(k8s.Delete(ctx, foreign)).To(Succeed())
	waitReady(t, cred) // within the test timeout, which is longer than controllers.ForeignSecretRecheck
	g.Expect(agentSecret(t, ns, "taken").Data).To(HaveKey(authv1alpha1.AgentSecretAPIKey))
}
