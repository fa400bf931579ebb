package controllers_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// Issue 23 item 8 in the fast tier: the tenant-writable status never
// brings a retired key back, and a rebuilt record takes its times from the
// record. Item 9: a namespace that could not create a claim does not win
// the ranking for it.

// accepts reports whether the hash record accepts key now.
func (f *fastFixture) accepts(key string) bool {
	rec := f.record()
	return rec != nil && rec.Accepts(credential.DigestOf(key), f.clock.Now())
}

// writeBack is the tenant's move: status.keyID (and Ready) set to key's,
// then key written into the agent Secret.
func (f *fastFixture) writeBack(key string) {
	f.t.Helper()
	g := NewWithT(f.t)
	cred := &authv1alpha1.AgentCredential{}
	g.Expect(f.client.Get(context.Background(), client.ObjectKeyFromObject(f.cred), cred)).To(Succeed())
	cred.Status.KeyID = credential.KeyID(key)
	meta.SetStatusCondition(&cred.Status.Conditions, metav1.Condition{Type: authv1alpha1.ReadyCondition, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonIssued})
	g.Expect(f.client.Status().Update(context.Background(), cred)).To(Succeed())
	f.setAgentKey(key)
}

// update changes the stored credential (spec and metadata).
func (f *fastFixture) update(change func(*authv1alpha1.AgentCredential)) {
	f.t.Helper()
	g := NewWithT(f.t)
	cred := &authv1alpha1.AgentCredential{}
	g.Expect(f.client.Get(context.Background(), client.ObjectKeyFromObject(f.cred), cred)).To(Succeed())
	change(cred)
	g.Expect(f.client.Update(context.Background(), cred)).To(Succeed())
}

func (f *fastFixture) setAgentKey(key string) {
	f.t.Helper()
	g := NewWithT(f.t)
	s := &corev1.Secret{}
	g.Expect(f.client.Get(context.Background(), client.ObjectKey{Namespace: "team-a", Name: "agent"}, s)).To(Succeed())
	s.Data[authv1alpha1.AgentSecretAPIKey] = []byte(key)
	g.Expect(f.client.Update(context.Background(), s)).To(Succeed())
}

func (f *fastFixture) hashSecret() *corev1.Secret {
	f.t.Helper()
	h := &corev1.Secret{}
	NewWithT(f.t).Expect(f.client.Get(context.Background(), client.ObjectKey{Namespace: operatorNamespace, Name: hashsecret.Name("team-a", "agent")}, h)).To(Succeed())
	return h
}

// assertRetiredStaysDead: after the tenant wrote old back, old never
// verifies, the agent Secret holds a key the record vouches for, and the
// status names it.
func (f *fastFixture) assertRetiredStaysDead(old string) {
	f.t.Helper()
	g := NewWithT(f.t)
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.accepts(old)).To(BeFalse(), "the retired key verifies again")
	now := f.agentKey()
	g.Expect(now).NotTo(Equal(old))
	g.Expect(f.accepts(now)).To(BeTrue(), "the key in the agent Secret does not verify")
	g.Expect(cred.Status.KeyID).To(Equal(credential.KeyID(now)))
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
	g.Expect(f.events()).NotTo(ContainSubstring(controllers.EventHashRepaired), "an intact record was rebuilt")
	// Again: nothing brings it back, and the record stays put.
	f.writeBack(old)
	_, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.accepts(old)).To(BeFalse())
	g.Expect(f.record().IsRetired(credential.KeyID(old))).To(BeTrue())
}

// TestReconcileFastRetiredKeyNeverReturns: the review's recipe after a
// requested rotation (a leak) and after a scheduled one (the old key in
// grace is revoked at once rather than made current).
func TestReconcileFastRetiredKeyNeverReturns(t *testing.T) {
	for _, tt := range []struct {
		name   string
		rotate func(f *fastFixture)
	}{
		{"requested rotation", func(f *fastFixture) {
			f.update(func(c *authv1alpha1.AgentCredential) {
				c.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "leak"}
			})
		}},
		{"scheduled rotation, old key in grace", func(f *fastFixture) { f.clock.Step(authv1alpha1.DefaultRotationPeriod) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFastFixture(t)
			_, err := f.reconcile()
			g.Expect(err).NotTo(HaveOccurred())
			first := f.agentKey()
			tt.rotate(f)
			cred, err := f.reconcile()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(f.agentKey()).NotTo(Equal(first))
			g.Expect(cred.Status.RotationCount).To(BeEquivalentTo(1))
			f.events()

			f.writeBack(first)
			f.assertRetiredStaysDead(first)
			g.Expect(f.record().RotationCount).To(BeNumerically(">=", 2), "the write-back must count as a reissue")
		})
	}
}

// TestReconcileFastExpiredKeyNeverReturnsAfterRenewal: an expired key,
// renewed by moving spec.expiresAt, stays dead when the tenant writes it
// back with a status saying it is current and Ready.
func TestReconcileFastExpiredKeyNeverReturnsAfterRenewal(t *testing.T) {
	g := NewWithT(t)
	f := newFastFixture(t)
	exp := metav1.NewTime(f.clock.Now().Add(time.Hour))
	f.cred.Spec.ExpiresAt = &exp
	g.Expect(f.client.Update(context.Background(), f.cred)).To(Succeed())
	_, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	expired := f.agentKey()
	f.clock.Step(time.Hour)
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("False/" + authv1alpha1.ReasonExpired))
	later := metav1.NewTime(f.clock.Now().Add(24 * time.Hour))
	f.update(func(c *authv1alpha1.AgentCredential) { c.Spec.ExpiresAt = &later })
	cred, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
	g.Expect(f.accepts(expired)).To(BeFalse())
	f.events()

	f.writeBack(expired)
	f.assertRetiredStaysDead(expired)
	g.Expect(f.record().ExpiresAt).To(BeTemporally("==", later.Time))
}

// TestReconcileFastLeftoverRecordKeysNeverReturn: a hash record left by an
// earlier credential of the same name (another UID) is rebuilt over, but
// never to one of its keys.
func TestReconcileFastLeftoverRecordKeysNeverReturn(t *testing.T) {
	g := NewWithT(t)
	old, err := credential.Generate(credential.APIKey)
	g.Expect(err).NotTo(HaveOccurred())
	earlier := &hashsecret.Record{Credential: "team-a/agent", UID: "uid-0", Type: "APIKey", AgentIDs: []string{"bbbbbbbb-0000-4000-8000-000000000001"},
		Current: hashsecret.Entry{Digest: credential.DigestOf(old), IssuedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}}
	leftover := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: hashsecret.Name("team-a", "agent")}, Data: earlier.Data()}
	f := newFastFixture(t, leftover)
	// The tenant prepares the new credential's status and Secret before it is first reconciled.
	agent := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "agent"}, Data: map[string][]byte{authv1alpha1.AgentSecretAPIKey: []byte(old)}}
	g.Expect(controllerutil.SetControllerReference(f.cred, agent, operator.Scheme())).To(Succeed())
	g.Expect(f.client.Create(context.Background(), agent)).To(Succeed())
	f.cred.Status.KeyID = credential.KeyID(old)
	g.Expect(f.client.Status().Update(context.Background(), f.cred)).To(Succeed())

	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.accepts(old)).To(BeFalse(), "a key of the earlier credential verifies for the new one")
	g.Expect(f.agentKey()).NotTo(Equal(old))
	g.Expect(f.accepts(f.agentKey())).To(BeTrue())
	g.Expect(cred.Status.KeyID).To(Equal(credential.KeyID(f.agentKey())))
	g.Expect(f.record().UID).To(Equal("uid-1"))
	g.Expect(f.record().IsRetired(credential.KeyID(old))).To(BeTrue())
}

// TestReconcileFastRebuildTakesTimesFromTheRecord: a damaged record is
// rebuilt with the key the status names, but its issue time, rotation
// count and answered request come from what is left of the record, not
// from the status the tenant wrote; with no record left at all, the key
// counts as issued now.
func TestReconcileFastRebuildTakesTimesFromTheRecord(t *testing.T) {
	g := NewWithT(t)
	f := newFastFixture(t)
	_, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	f.update(func(c *authv1alpha1.AgentCredential) {
		c.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "leak"}
	})
	_, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	key, issued := f.agentKey(), f.record().Current.IssuedAt
	f.clock.Step(24 * time.Hour)

	// The tenant writes status to postpone rotation for ever and to make the request look unanswered...
	tamper := func() {
		cred := &authv1alpha1.AgentCredential{}
		g.Expect(f.client.Get(context.Background(), client.ObjectKeyFromObject(f.cred), cred)).To(Succeed())
		cred.Status.LastRotationTime = &metav1.Time{Time: f.clock.Now().Add(10 * 365 * 24 * time.Hour)}
		cred.Status.RotationCount = 0
		cred.Status.LastRotationRequest = "forged"
		g.Expect(f.client.Status().Update(context.Background(), cred)).To(Succeed())
	}
	tamper()
	// ...and the record is damaged (one field), so it must be rebuilt.
	h := f.hashSecret()
	h.Data[hashsecret.KeySessionTTL] = []byte("forever")
	g.Expect(f.client.Update(context.Background(), h)).To(Succeed())
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.events()).To(ContainSubstring(controllers.EventHashRepaired))
	g.Expect(f.agentKey()).To(Equal(key), "a damaged record must be rebuilt, not the key reissued")
	rec := f.record()
	g.Expect(rec.Current.IssuedAt).To(BeTemporally("==", issued))
	g.Expect(rec.RotationCount).To(BeEquivalentTo(1))
	g.Expect(rec.LastRotationRequest).To(Equal("leak"))
	g.Expect(cred.Status.NextRotationTime.Time).To(BeTemporally("==", issued.Add(authv1alpha1.DefaultRotationPeriod)))

	// With the record gone altogether, nothing says when the key was
	// issued: it counts as issued now, whatever the status claims.
	tamper()
	g.Expect(f.client.Delete(context.Background(), f.hashSecret())).To(Succeed())
	_, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.agentKey()).To(Equal(key))
	g.Expect(f.record().Current.IssuedAt).To(BeTemporally("==", f.clock.Now().UTC().Truncate(time.Second)))
	g.Expect(f.record().LastRotationRequest).To(Equal("leak"), "the standing request counts as answered, not the forged one")
}

// TestReconcileFastRefusedNamespaceDoesNotWinTheRanking: an older
// credential in a namespace that could not claim the identity (over
// --max-claims-per-namespace, beyond --max-credentials-per-namespace, or
// its environment refused there) does not
// keep a younger one elsewhere from claiming it.
func TestReconcileFastRefusedNamespaceDoesNotWinTheRanking(t *testing.T) {
	const agent = "bbbbbbbb-0000-4000-8000-000000000001"
	long := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	squatter := func(ns string) *authv1alpha1.AgentCredential {
		return &authv1alpha1.AgentCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "squat", UID: "uid-squat", CreationTimestamp: metav1.NewTime(long)},
			Spec:       authv1alpha1.AgentCredentialSpec{AgentID: agent},
		}
	}
	for _, tt := range []struct {
		name    string
		objects []client.Object
	}{
		{"over the claim limit", []client.Object{squatter("mallory"), &authv1alpha1.IdentityClaim{
			ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(tenancy.Agent("bbbbbbbb-0000-4000-8000-0000000000ff"))},
			Spec:       authv1alpha1.IdentityClaimSpec{Kind: authv1alpha1.AgentIdentity, Value: "bbbbbbbb-0000-4000-8000-0000000000ff", Namespace: "mallory"}}}},
		{"environment refused", []client.Object{squatter("sandbox-only"), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sandbox-only",
			Labels: map[string]string{authv1alpha1.NamespaceEnvironmentLabel: "sandbox"}}}}},
		{"beyond its namespace's credential limit", []client.Object{squatter("crowded"), &authv1alpha1.AgentCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "crowded", Name: "first", UID: "uid-first", CreationTimestamp: metav1.NewTime(long.Add(-time.Hour))},
			Spec:       authv1alpha1.AgentCredentialSpec{AgentID: "bbbbbbbb-0000-4000-8000-0000000000fe"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFastFixture(t, tt.objects...)
			f.maxClaims, f.maxCredentials = 1, 1
			cred, err := f.reconcile()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
			claim := &authv1alpha1.IdentityClaim{}
			g.Expect(f.client.Get(context.Background(), client.ObjectKey{Name: tenancy.ClaimName(tenancy.Agent(agent))}, claim)).To(Succeed())
			g.Expect(claim.Spec.Namespace).To(Equal("team-a"))
		})
	}
	// A namespace under both limits still goes first by age.
	g := NewWithT(t)
	f := newFastFixture(t, squatter("elder"))
	f.maxClaims, f.maxCredentials = 1, 1
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("False/" + authv1alpha1.ReasonAgentIDConflict))
}
