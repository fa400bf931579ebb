package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/internal/tenancy"
	"github.com/agrenting/agentcred/test/harness"
)

// The fast tier: Reconcile over a fake client (no control plane; `go test
// -short`), one step per branch of the credential's life, with an
// interceptor counting writes and injecting failures. The envtest tests in
// this package prove the same against a real API server.

type fastFixture struct {
	t        *testing.T
	client   client.WithWatch
	clock    *clocktesting.FakeClock
	recorder *events.FakeRecorder
	writes   atomic.Int64
	// fail, when set, is returned by writes it matches; failGet by reads.
	fail    func(obj client.Object) error
	failGet func(key client.ObjectKey, obj client.Object) error
	cred    *authv1alpha1.AgentCredential
	// maxClaims is the reconciler's MaxClaimsPerNamespace.
	maxClaims int
	// maxCredentials is the reconciler's MaxCredentialsPerNamespace.
	maxCredentials int
}

func newFastFixture(t *testing.T, objs ...client.Object) *fastFixture {
	f := &fastFixture{t: t, clock: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), recorder: events.NewFakeRecorder(100)}
	f.cred = &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "agent", UID: "uid-1", CreationTimestamp: metav1.NewTime(f.clock.Now())},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: "bbbbbbbb-0000-4000-8000-000000000001"},
	}
	write := func(obj client.Object) error {
		f.writes.Add(1)
		if f.fail != nil {
			return f.fail(obj)
		}
		return nil
	}
	base := fake.NewClientBuilder().WithScheme(operator.Scheme()).
		WithObjects(append([]client.Object{f.cred}, objs...)...).
		WithStatusSubresource(&authv1alpha1.AgentCredential{}).
		WithIndex(&authv1alpha1.AgentCredential{}, identityindex.CredentialsByClaim, identityindex.ClaimNames).
		WithIndex(&authv1alpha1.IdentityClaim{}, identityindex.ClaimsByCredential, identityindex.UsedBy).
		WithIndex(&authv1alpha1.IdentityClaim{}, identityindex.ClaimsByNamespace, identityindex.BoundNamespace).
		Build()
	funcs := harness.BeforeWrites(write)
	funcs.Get = func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if f.failGet != nil {
			if err := f.failGet(key, obj); err != nil {
				return err
			}
		}
		return c.Get(ctx, key, obj, opts...)
	}
	f.client = interceptor.NewClient(base, funcs)
	return f
}

// reconcile runs one Reconcile and returns the credential as stored after it.
func (f *fastFixture) reconcile() (*authv1alpha1.AgentCredential, error) {
	r := &controllers.AgentCredentialReconciler{
		Client: f.client, APIReader: f.client, Scheme: operator.Scheme(), Clock: f.clock, Recorder: f.recorder,
		OperatorNamespace: operatorNamespace, Metrics: controllers.NewMetrics(f.client), MaxClaimsPerNamespace: f.maxClaims,
		MaxCredentialsPerNamespace: f.maxCredentials,
	}
	f.writes.Store(0)
	_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(f.cred)})
	got := &authv1alpha1.AgentCredential{}
	if getErr := f.client.Get(context.Background(), client.ObjectKeyFromObject(f.cred), got); getErr != nil {
		f.t.Fatal(getErr)
	}
	return got, err
}

func (f *fastFixture) agentKey() string {
	s := &corev1.Secret{}
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: "team-a", Name: "agent"}, s); err != nil {
		return ""
	}
	return string(s.Data[authv1alpha1.AgentSecretAPIKey])
}

func (f *fastFixture) record() *hashsecret.Record {
	s := &corev1.Secret{}
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: operatorNamespace, Name: hashsecret.Name("team-a", "agent")}, s); err != nil {
		return nil
	}
	rec, err := hashsecret.Parse(s.Data)
	if err != nil {
		return nil
	}
	return rec
}

func (f *fastFixture) events() string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return strings.Join(out, "\n")
		}
	}
}

func readyReason(c *authv1alpha1.AgentCredential) string {
	if cond := meta.FindStatusCondition(c.Status.Conditions, authv1alpha1.ReadyCondition); cond != nil {
		return string(cond.Status) + "/" + cond.Reason
	}
	return ""
}

// TestReconcileFastLifecycle walks one credential through every branch of
// its life: issue, steady state, scheduled rotation with grace, requested
// rotation, reissue of a damaged key, rebuild of a lost hash record.
func TestReconcileFastLifecycle(t *testing.T) {
	g := NewWithT(t)
	f := newFastFixture(t)
	accepts := func(key string) bool {
		rec := f.record()
		return rec != nil && rec.Accepts(credential.DigestOf(key), f.clock.Now())
	}

	// Issue: a claim, both Secrets, Ready.
	cred, err := f.reconcile() // adds the finalizer, then issues
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
	first := f.agentKey()
	g.Expect(accepts(first)).To(BeTrue())
	claim := &authv1alpha1.IdentityClaim{}
	g.Expect(f.client.Get(context.Background(), client.ObjectKey{Name: tenancy.ClaimName(tenancy.Agent(cred.Spec.AgentID))}, claim)).To(Succeed())
	g.Expect(claim.Spec.Namespace).To(Equal("team-a"))
	g.Expect(claim.Status.Credentials).To(ConsistOf("agent"))
	g.Expect(f.events()).To(ContainSubstring("Issued"))

	// Steady state: no writes at all (the claim costs nothing more).
	_, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.writes.Load()).To(BeZero())

	// Scheduled rotation: a new key; the old one valid for the grace period.
	f.clock.Step(authv1alpha1.DefaultRotationPeriod)
	cred, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	second := f.agentKey()
	g.Expect(second).NotTo(Equal(first))
	g.Expect(accepts(first) && accepts(second)).To(BeTrue())
	g.Expect(cred.Status.RotationCount).To(BeEquivalentTo(1))
	f.clock.Step(authv1alpha1.DefaultGracePeriod)
	cred, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(accepts(first)).To(BeFalse(), "the old key outlived its grace")

	// Requested rotation: the old key is revoked at once.
	cred.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "now"}
	g.Expect(f.client.Update(context.Background(), cred)).To(Succeed())
	cred, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	third := f.agentKey()
	g.Expect(accepts(second)).To(BeFalse())
	g.Expect(accepts(third)).To(BeTrue())
	g.Expect(cred.Status.LastRotationRequest).To(Equal("now"))

	// A damaged key in the agent Secret is reissued.
	s := &corev1.Secret{}
	g.Expect(f.client.Get(context.Background(), client.ObjectKey{Namespace: "team-a", Name: "agent"}, s)).To(Succeed())
	s.Data[authv1alpha1.AgentSecretAPIKey] = []byte("ak_garbage")
	g.Expect(f.client.Update(context.Background(), s)).To(Succeed())
	_, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	fourth := f.agentKey()
	g.Expect(fourth).NotTo(Equal(third))
	g.Expect(accepts(fourth) && !accepts(third)).To(BeTrue())
	g.Expect(f.events()).To(ContainSubstring("Reissued"))

	// A lost hash record is rebuilt from the agent Secret: same key.
	h := &corev1.Secret{}
	g.Expect(f.client.Get(context.Background(), client.ObjectKey{Namespace: operatorNamespace, Name: hashsecret.Name("team-a", "agent")}, h)).To(Succeed())
	g.Expect(f.client.Delete(context.Background(), h)).To(Succeed())
	_, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.agentKey()).To(Equal(fourth))
	g.Expect(accepts(fourth)).To(BeTrue())
	g.Expect(f.events()).To(ContainSubstring("HashRepaired"))
}

// TestReconcileFastInterruptedRotationIsFinished: the process dies after the
// new key reached the agent Secret but before its hash was promoted; the next
// reconcile promotes it instead of rotating again.
func TestReconcileFastInterruptedRotationIsFinished(t *testing.T) {
	g := NewWithT(t)
	f := newFastFixture(t)
	_, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	f.clock.Step(authv1alpha1.DefaultRotationPeriod)
	// Writes of a scheduled rotation: stage hash, write key, promote hash.
	var n atomic.Int64
	f.fail = func(client.Object) error {
		if n.Add(1) == 3 {
			return errors.New("injected: died before promoting")
		}
		return nil
	}
	_, err = f.reconcile()
	g.Expect(err).To(MatchError(ContainSubstring("injected")))
	g.Expect(f.record().Pending).NotTo(BeNil())
	staged := f.agentKey()
	f.fail = nil
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.agentKey()).To(Equal(staged), "the interrupted rotation was redone instead of finished")
	g.Expect(f.record().Pending).To(BeNil())
	g.Expect(cred.Status.RotationCount).To(BeEquivalentTo(1))
}

// TestReconcileFastRefusals: each reason a credential gets no key.
func TestReconcileFastRefusals(t *testing.T) {
	const agent = "bbbbbbbb-0000-4000-8000-000000000001"
	tests := []struct {
		name     string
		existing []client.Object
		fail     func(client.Object) error
		want     string // Ready status/reason
		wantErr  string
		// keyless: the credential must have no hash record either.
		keyless bool
	}{
		{name: "agent claimed elsewhere", want: "False/" + authv1alpha1.ReasonAgentIDConflict, keyless: true,
			existing: []client.Object{&authv1alpha1.IdentityClaim{ObjectMeta: metav1.ObjectMeta{Name: "agent-" + agent},
				Spec: authv1alpha1.IdentityClaimSpec{Kind: authv1alpha1.AgentIdentity, Value: agent, Namespace: "team-b"}}}},
		{name: "foreign Secret in the way", want: "False/" + authv1alpha1.ReasonSecretConflict, keyless: true,
			existing: []client.Object{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "agent"}}}},
		{name: "writing the agent Secret fails", want: "False/" + authv1alpha1.ReasonReconcileFailed, wantErr: "injected",
			fail: func(obj client.Object) error {
				if s, ok := obj.(*corev1.Secret); ok && s.Namespace == "team-a" {
					return errors.New("injected: secrets are read-only")
				}
				return nil
			}},
		{name: "a conflict does not flip Ready", want: "", wantErr: "cannot be fulfilled",
			fail: func(obj client.Object) error {
				if _, ok := obj.(*corev1.Secret); ok {
					return apierrors.NewConflict(corev1.Resource("secrets"), obj.GetName(), fmt.Errorf("stale"))
				}
				return nil
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newFastFixture(t, tt.existing...)
			f.fail = tt.fail
			cred, err := f.reconcile()
			if tt.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
			} else {
				g.Expect(err).NotTo(HaveOccurred())
			}
			g.Expect(readyReason(cred)).To(Equal(tt.want))
			g.Expect(cred.Status.KeyID).To(BeEmpty())
			g.Expect(f.agentKey()).To(BeEmpty())
			if tt.keyless {
				g.Expect(f.record()).To(BeNil(), "a refused credential has no hash record")
			}
			g.Expect(readyMessageOf(cred)).NotTo(ContainSubstring("team-b"))
		})
	}
}

func readyMessageOf(c *authv1alpha1.AgentCredential) string {
	if cond := meta.FindStatusCondition(c.Status.Conditions, authv1alpha1.ReadyCondition); cond != nil {
		return cond.Message
	}
	return ""
}

// TestReconcileFastErrorNeverHidesARefusal: a user token whose user was
// moved to another namespace loses its key even when reading the claim of
// one of its agents fails in the same reconcile (a tenant able to make
// claim reads or writes fail must not keep a key that way).
func TestReconcileFastErrorNeverHidesARefusal(t *testing.T) {
	g := NewWithT(t)
	const agent = "bbbbbbbb-0000-4000-8000-000000000002"
	f := newFastFixture(t)
	f.cred.Spec = authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "alice@example.com", Agents: []string{agent}}
	g.Expect(f.client.Update(context.Background(), f.cred)).To(Succeed())
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
	g.Expect(f.record()).NotTo(BeNil())

	// An admin moves the user away; reading the agent's claim now fails.
	userClaim := &authv1alpha1.IdentityClaim{}
	g.Expect(f.client.Get(context.Background(), client.ObjectKey{Name: tenancy.ClaimName(tenancy.User("alice@example.com"))}, userClaim)).To(Succeed())
	userClaim.Spec.Namespace = "team-b"
	g.Expect(f.client.Update(context.Background(), userClaim)).To(Succeed())
	f.failGet = func(key client.ObjectKey, _ client.Object) error {
		if key.Name == tenancy.ClaimName(tenancy.Agent(agent)) {
			return errors.New("injected: claims unreadable")
		}
		return nil
	}
	cred, err = f.reconcile()
	g.Expect(err).To(MatchError(ContainSubstring("injected")))
	g.Expect(readyReason(cred)).To(Equal("False/" + authv1alpha1.ReasonUserConflict))
	g.Expect(f.record()).To(BeNil(), "the key survived the move")
	g.Expect(cred.Status.KeyID).To(BeEmpty())
}

// TestReconcileFastClaimLimit: a namespace holding --max-claims-per-namespace
// claims claims no more identities; what it holds keeps working.
func TestReconcileFastClaimLimit(t *testing.T) {
	g := NewWithT(t)
	f := newFastFixture(t)
	f.maxClaims = 2
	f.cred.Spec = authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "bob@example.com",
		Agents: []string{"bbbbbbbb-0000-4000-8000-000000000003", "bbbbbbbb-0000-4000-8000-000000000004"}}
	g.Expect(f.client.Update(context.Background(), f.cred)).To(Succeed())
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("False/" + authv1alpha1.ReasonClaimLimitReached))
	g.Expect(readyMessageOf(cred)).To(ContainSubstring("--max-claims-per-namespace"))
	g.Expect(f.record()).To(BeNil())
	claims := &authv1alpha1.IdentityClaimList{}
	g.Expect(f.client.List(context.Background(), claims)).To(Succeed())
	g.Expect(claims.Items).To(HaveLen(2), "the namespace claimed more than its limit")
	f.maxClaims = 3
	cred, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
}

// TestReconcileFastRestartTargets: every target is restarted for the key
// once; a missing one is reported, not fatal; a failed patch is retried
// with the target named, and the key is issued regardless.
func TestReconcileFastRestartTargets(t *testing.T) {
	g := NewWithT(t)
	web := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web", Generation: 1}}
	f := newFastFixture(t, web)
	f.cred.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{
		{Kind: authv1alpha1.DeploymentKind, Name: "web"}, {Kind: authv1alpha1.DaemonSetKind, Name: "gone"},
	}
	g.Expect(f.client.Update(context.Background(), f.cred)).To(Succeed())
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
	got := &appsv1.Deployment{}
	g.Expect(f.client.Get(context.Background(), client.ObjectKeyFromObject(web), got)).To(Succeed())
	g.Expect(got.Spec.Template.Annotations).To(HaveKeyWithValue(authv1alpha1.RestartedForAnnotation, cred.Status.KeyID))
	g.Expect(cred.Status.RestartTargets).To(HaveLen(2))
	g.Expect(cred.Status.RestartTargets[0].State).To(Equal(authv1alpha1.Rolling))
	g.Expect(cred.Status.RestartTargets[1].State).To(Equal(authv1alpha1.TargetNotFound))
	c := meta.FindStatusCondition(cred.Status.Conditions, controllers.RolledOutCondition)
	g.Expect(c.Reason).To(Equal(controllers.ReasonTargetNotFound))
	g.Expect(f.events()).To(And(ContainSubstring(controllers.EventRestarted), ContainSubstring(controllers.EventTargetNotFound)))

	// Steady state: no new patch, no repeated NotFound event.
	_, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.events()).NotTo(Or(ContainSubstring(controllers.EventRestarted), ContainSubstring(controllers.EventTargetNotFound)))

	// A rotation whose restart fails: the key is issued, the error names the target.
	f.fail = func(obj client.Object) error {
		if _, ok := obj.(*appsv1.Deployment); ok {
			return apierrors.NewForbidden(appsv1.Resource("deployments"), "web", errors.New("no"))
		}
		return nil
	}
	annotate := cred.DeepCopy()
	annotate.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "now"}
	g.Expect(f.client.Update(context.Background(), annotate)).To(Succeed())
	cred, err = f.reconcile()
	g.Expect(err).To(MatchError(ContainSubstring("restarting Deployment/web")))
	g.Expect(f.agentKey()).NotTo(BeEmpty())
	g.Expect(f.record().Current.Digest.Equal(credential.DigestOf(f.agentKey()))).To(BeTrue())
	g.Expect(readyMessageOf(cred)).To(ContainSubstring("Deployment/web"))
	f.fail = nil
	cred, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.client.Get(context.Background(), client.ObjectKeyFromObject(web), got)).To(Succeed())
	g.Expect(got.Spec.Template.Annotations).To(HaveKeyWithValue(authv1alpha1.RestartedForAnnotation, cred.Status.KeyID))
}

// TestReconcileFastExpiry: no rotation past the expiry, Expired once it
// has passed, renewal when it moves.
func TestReconcileFastExpiry(t *testing.T) {
	g := NewWithT(t)
	f := newFastFixture(t)
	exp := metav1.NewTime(f.clock.Now().Add(time.Hour))
	f.cred.Spec.ExpiresAt = &exp
	g.Expect(f.client.Update(context.Background(), f.cred)).To(Succeed())
	cred, err := f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cred.Status.NextRotationTime).To(BeNil())
	key := f.agentKey()
	f.clock.Step(time.Hour)
	cred, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("False/" + authv1alpha1.ReasonExpired))
	g.Expect(f.events()).To(ContainSubstring(controllers.EventExpired))
	g.Expect(f.agentKey()).To(Equal(key), "expiry does not touch the agent Secret")
	_, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.writes.Load()).To(BeZero(), "an expired credential is left alone")
	g.Expect(f.events()).NotTo(ContainSubstring(controllers.EventExpired), "Expired is reported once")

	// The hash Secret lost while expired is rebuilt expired: no revival.
	g.Expect(f.client.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: hashsecret.Name("team-a", "agent")}})).To(Succeed())
	later := metav1.NewTime(f.clock.Now().Add(24 * time.Hour))
	cred.Spec.ExpiresAt = &later
	g.Expect(f.client.Update(context.Background(), cred)).To(Succeed())
	cred, err = f.reconcile()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
	g.Expect(f.agentKey()).NotTo(Equal(key), "extending the expiry must issue a new key")
	rec := f.record()
	g.Expect(rec.Accepts(credential.DigestOf(key), f.clock.Now())).To(BeFalse())
	g.Expect(rec.ExpiresAt).To(BeTemporally("==", later.Time))
	g.Expect(f.events()).To(ContainSubstring(controllers.EventRenewed))
}
