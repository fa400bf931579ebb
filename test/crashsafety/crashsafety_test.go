// Package crashsafety proves the controller's write ordering: a rotation is
// interrupted at each of its API writes in turn (that write and every later
// one fail, as when the process dies), and after every interruption the agent
// Secret holds a key the hash Secret accepts, and the next reconciles converge.
package crashsafety_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

const operatorNamespace = harness.OperatorNamespace

var (
	cached    client.Client // the manager's cache-backed client, as the controller uses it
	apiReader client.Reader
	direct    client.Client // reads the API server's truth for assertions
	scheme    = controlplane.Scheme()
	fakeClock = clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx       = context.Background()
)

func TestMain(m *testing.M) {
	os.Exit(harness.Run(harness.RunInput{M: m, Setup: func(ctx context.Context, env *harness.Env) (func() error, error) {
		// A manager with a cache and the identity indexes but no controller:
		// the test drives Reconcile itself so nothing else writes.
		mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
			Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
			Cache: controllers.CacheOptions(operatorNamespace),
		})
		if err != nil {
			return nil, err
		}
		if err := identityindex.Register(ctx, mgr.GetFieldIndexer()); err != nil {
			return nil, err
		}
		go func() { _ = mgr.Start(ctx) }()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return nil, errors.New("cache did not sync")
		}
		// Informers start on first use; touch every kind so they sync now.
		_ = mgr.GetClient().List(ctx, &corev1.SecretList{})
		_ = mgr.GetClient().List(ctx, &authv1alpha1.AgentCredentialList{})
		_ = mgr.GetClient().List(ctx, &authv1alpha1.IdentityClaimList{})
		cached, apiReader, direct = mgr.GetClient(), mgr.GetAPIReader(), env.Client
		return nil, nil
	}}))
}

var errCrash = errors.New("injected crash: the process died before this write")

// crashingClient lets writes through until the failFrom-th (0: never),
// then fails that one and all later ones, like a process that died at that
// point. writes counts the writes attempted.
type crashingClient struct {
	client.Client
	writes *atomic.Int64
}

func newCrashingClient(failFrom int64) crashingClient {
	writes := &atomic.Int64{}
	c := interceptor.NewClient(watchless{cached}, harness.BeforeWrites(func(client.Object) error {
		if n := writes.Add(1); failFrom > 0 && n >= failFrom {
			return errCrash
		}
		return nil
	}))
	return crashingClient{Client: c, writes: writes}
}

// watchless adapts the manager's client to the interface the interceptor
// wraps; the reconciler never watches through it.
type watchless struct{ client.Client }

func (watchless) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("not supported")
}

func reconciler(c client.Client) *controllers.AgentCredentialReconciler {
	return &controllers.AgentCredentialReconciler{
		Client: c, APIReader: apiReader, Scheme: scheme, Clock: fakeClock,
		Recorder: events.NewFakeRecorder(1000), OperatorNamespace: operatorNamespace,
		Metrics: controllers.NewMetrics(cached),
	}
}

// converge reconciles with a healthy client until a reconcile succeeds and
// writes nothing.
func converge(t *testing.T, cred *authv1alpha1.AgentCredential) {
	t.Helper()
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cred)}
	NewWithT(t).Eventually(func() error {
		c := newCrashingClient(0)
		if _, err := reconciler(c).Reconcile(ctx, req); err != nil {
			return err
		}
		if n := c.writes.Load(); n > 0 {
			return fmt.Errorf("reconcile still wrote %d times", n)
		}
		return nil
	}).WithTimeout(20 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
}

// state is what the API server holds for a credential.
type state struct {
	agentKey string // "" when the agent Secret or its key is missing
	record   *hashsecret.Record
	status   authv1alpha1.AgentCredentialStatus
}

func read(t *testing.T, cred *authv1alpha1.AgentCredential) state {
	t.Helper()
	var st state
	s := &corev1.Secret{}
	err := direct.Get(ctx, client.ObjectKey{Namespace: cred.Namespace, Name: cred.SecretName()}, s)
	if err == nil {
		st.agentKey = string(s.Data[authv1alpha1.AgentSecretAPIKey])
	} else if !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	h := &corev1.Secret{}
	err = direct.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: hashsecret.Name(cred.Namespace, cred.Name)}, h)
	if err == nil {
		rec, perr := hashsecret.Parse(h.Data)
		if perr != nil {
			t.Fatalf("the hash Secret is unreadable after an interruption: %v", perr)
		}
		st.record = rec
	} else if !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	c := &authv1alpha1.AgentCredential{}
	if err := direct.Get(ctx, client.ObjectKeyFromObject(cred), c); err != nil {
		t.Fatal(err)
	}
	st.status = c.Status
	return st
}

// assertInvariant: whatever the agent Secret holds, if it holds a key, the
// hash Secret accepts it.
// The value the test itself put there (a corrupted key) is exempt: the
// invariant is about what the controller writes.
func assertInvariant(t *testing.T, st state, where string) {
	t.Helper()
	if st.agentKey == "" || st.agentKey == corrupted {
		return
	}
	if _, err := credential.Parse(st.agentKey); err != nil {
		t.Fatalf("%s: the agent Secret holds a malformed key", where)
	}
	if st.record == nil || !st.record.Accepts(credential.DigestOf(st.agentKey), fakeClock.Now()) {
		t.Fatalf("%s: the agent Secret holds key %s that the hash Secret does not accept", where, credential.KeyID(st.agentKey))
	}
}

var nameCounter atomic.Int64

const corrupted = "ak_garbage"

func TestEveryInterruptionOfARotationConverges(t *testing.T) {
	scenarios := []struct {
		name string
		// prepare makes a rotation due on a converged credential and
		// returns a check that the cache has seen it.
		prepare func(t *testing.T, cred *authv1alpha1.AgentCredential) func(Gomega)
		// revokesOld: whether the key before the rotation must stop working.
		revokesOld bool
		fresh      bool
		// renews: the key before is expired and must never verify again,
		// at any interruption.
		renews bool
	}{
		{name: "first issue", fresh: true},
		{name: "scheduled rotation", prepare: func(t *testing.T, cred *authv1alpha1.AgentCredential) func(Gomega) {
			fakeClock.Step(91 * 24 * time.Hour)
			return func(Gomega) {}
		}},
		{name: "requested rotation", revokesOld: true, prepare: func(t *testing.T, cred *authv1alpha1.AgentCredential) func(Gomega) {
			value := fmt.Sprintf("request-%d", nameCounter.Add(1))
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, authv1alpha1.RotateAnnotation, value)
			if err := direct.Patch(ctx, cred, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
				t.Fatal(err)
			}
			return func(g Gomega) {
				c := &authv1alpha1.AgentCredential{}
				g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(cred), c)).To(Succeed())
				g.Expect(c.Annotations[authv1alpha1.RotateAnnotation]).To(Equal(value))
			}
		}},
		{name: "reissue after the agent Secret was corrupted", revokesOld: true, prepare: func(t *testing.T, cred *authv1alpha1.AgentCredential) func(Gomega) {
			s := &corev1.Secret{}
			if err := direct.Get(ctx, client.ObjectKey{Namespace: cred.Namespace, Name: cred.SecretName()}, s); err != nil {
				t.Fatal(err)
			}
			s.Data[authv1alpha1.AgentSecretAPIKey] = []byte(corrupted)
			if err := direct.Update(ctx, s); err != nil {
				t.Fatal(err)
			}
			return func(g Gomega) {
				// The cache holds agent Secrets without data: wait for the version.
				c := &corev1.Secret{}
				g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(s), c)).To(Succeed())
				g.Expect(c.ResourceVersion).To(Equal(s.ResourceVersion))
			}
		}},
		{name: "renewal after expiry", revokesOld: true, renews: true, prepare: func(t *testing.T, cred *authv1alpha1.AgentCredential) func(Gomega) {
			// Expire the credential, let the controller settle on it, then
			// move the expiry into the future.
			setExpiry(t, cred, fakeClock.Now())
			converge(t, cred)
			later := fakeClock.Now().Add(time.Hour)
			setExpiry(t, cred, later)
			return func(g Gomega) {
				c := &authv1alpha1.AgentCredential{}
				g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(cred), c)).To(Succeed())
				g.Expect(c.ExpiresAt()).To(BeTemporally("==", later))
			}
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			g := NewWithT(t)
			interrupted := 0
			for failFrom := int64(1); failFrom < 20; failFrom++ {
				ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "crash-"}}
				g.Expect(direct.Create(ctx, ns)).To(Succeed())
				cred := &authv1alpha1.AgentCredential{
					// The finalizer is there from the start so that the
					// interrupted reconcile's first write is key work.
					ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "agent", Finalizers: []string{authv1alpha1.CleanupFinalizer}},
					Spec:       authv1alpha1.AgentCredentialSpec{AgentID: fmt.Sprintf("6f1c2b1e-0000-4000-8000-%012d", nameCounter.Add(1))},
				}
				g.Expect(direct.Create(ctx, cred)).To(Succeed())
				g.Eventually(func() error {
					return cached.Get(ctx, client.ObjectKeyFromObject(cred), &authv1alpha1.AgentCredential{})
				}).Should(Succeed())
				req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cred)}
				var before state
				if !sc.fresh {
					converge(t, cred)
					before = read(t, cred)
					seen := sc.prepare(t, cred)
					g.Eventually(seen).WithTimeout(10 * time.Second).Should(Succeed())
				}

				crashing := newCrashingClient(failFrom)
				_, err := reconciler(crashing).Reconcile(ctx, req)
				after := read(t, cred)
				assertInvariant(t, after, fmt.Sprintf("interrupted at write %d", failFrom))
				if !sc.fresh && before.agentKey != "" && after.agentKey == "" {
					t.Fatalf("interrupted at write %d: the agent Secret lost its key", failFrom)
				}
				if sc.renews && after.record.Accepts(credential.DigestOf(before.agentKey), fakeClock.Now()) && !after.record.Expired(fakeClock.Now()) {
					t.Fatalf("interrupted at write %d: the expired key verifies again", failFrom)
				}
				if err == nil || !errors.Is(err, errCrash) {
					// The rotation needed fewer writes than failFrom: every write point is covered.
					g.Expect(err).NotTo(HaveOccurred())
					break
				}
				interrupted++

				converge(t, cred)
				final := read(t, cred)
				assertInvariant(t, final, "after convergence")
				g.Expect(final.agentKey).NotTo(BeEmpty())
				g.Expect(final.record.Pending).To(BeNil(), "a staged key was left behind")
				g.Expect(final.record.Current.Digest.Equal(credential.DigestOf(final.agentKey))).To(BeTrue())
				g.Expect(final.status.KeyID).To(Equal(credential.KeyID(final.agentKey)))
				if sc.renews {
					g.Expect(final.record.Expired(fakeClock.Now())).To(BeFalse(), "the renewed key does not authenticate")
				}
				if !sc.fresh {
					g.Expect(final.agentKey).NotTo(Equal(before.agentKey), "the rotation did not happen")
					g.Expect(final.status.RotationCount).To(Equal(before.status.RotationCount+1), "rotated more or less than once")
					oldAccepted := final.record.Accepts(credential.DigestOf(before.agentKey), fakeClock.Now())
					if sc.revokesOld {
						g.Expect(oldAccepted).To(BeFalse(), "the old key survived a revoking rotation")
					} else {
						g.Expect(oldAccepted).To(BeTrue(), "the old key lost its grace period")
					}
				}
			}
			// Staging, the agent Secret write and the promotion are at least three writes.
			g.Expect(interrupted).To(BeNumerically(">=", 3), "too few write points were interrupted")
			t.Logf("interrupted at %d write points", interrupted)
		})
	}
}

// setExpiry sets spec.expiresAt and waits until the cache has it.
func setExpiry(t *testing.T, cred *authv1alpha1.AgentCredential, at time.Time) {
	t.Helper()
	at = at.UTC().Truncate(time.Second)
	patch := fmt.Sprintf(`{"spec":{"expiresAt":%q}}`, at.Format(time.RFC3339))
	if err := direct.Patch(ctx, cred.DeepCopy(), client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		c := &authv1alpha1.AgentCredential{}
		g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(cred), c)).To(Succeed())
		g.Expect(c.ExpiresAt()).To(BeTemporally("==", at))
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

// TestRequeueAfterFollowsTheSchedule checks what Reconcile asks for: come
// back at the next rotation, or at the end of a grace period if sooner.
func TestRequeueAfterFollowsTheSchedule(t *testing.T) {
	g := NewWithT(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "requeue-"}}
	g.Expect(direct.Create(ctx, ns)).To(Succeed())
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "agent"},
		Spec: authv1alpha1.AgentCredentialSpec{
			AgentID:  fmt.Sprintf("6f1c2b1e-0000-4000-8000-%012d", nameCounter.Add(1)),
			Rotation: authv1alpha1.RotationSpec{Period: &metav1.Duration{Duration: 48 * time.Hour}},
		},
	}
	g.Expect(direct.Create(ctx, cred)).To(Succeed())
	g.Eventually(func() error {
		return cached.Get(ctx, client.ObjectKeyFromObject(cred), &authv1alpha1.AgentCredential{})
	}).Should(Succeed())
	converge(t, cred)
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cred)}
	next := read(t, cred).status.NextRotationTime.Time

	fakeClock.SetTime(next.Add(-time.Hour))
	res, err := reconciler(cached).Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).To(Equal(time.Hour))

	// Due: rotate; then the grace period (default 10m) ends first.
	fakeClock.SetTime(next)
	converge(t, cred)
	res, err = reconciler(cached).Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.RequeueAfter).To(Equal(10 * time.Minute))
}

// laggingClient is a cache that has not seen a credential yet.
type laggingClient struct{ client.Client }

func (c laggingClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*authv1alpha1.AgentCredential); ok {
		return apierrors.NewNotFound(authv1alpha1.GroupVersion.WithResource("agentcredentials").GroupResource(), key.Name)
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// TestLaggingCacheNeverRevokesALiveKey: a reconcile whose cache does not
// show the credential must not take its hash Secret for an orphan.
func TestLaggingCacheNeverRevokesALiveKey(t *testing.T) {
	g := NewWithT(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "lag-"}}
	g.Expect(direct.Create(ctx, ns)).To(Succeed())
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "agent"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: fmt.Sprintf("6f1c2b1e-0000-4000-8000-%012d", nameCounter.Add(1))},
	}
	g.Expect(direct.Create(ctx, cred)).To(Succeed())
	g.Eventually(func() error {
		return cached.Get(ctx, client.ObjectKeyFromObject(cred), &authv1alpha1.AgentCredential{})
	}).Should(Succeed())
	converge(t, cred)
	_, err := reconciler(laggingClient{cached}).Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cred)})
	g.Expect(err).NotTo(HaveOccurred())
	st := read(t, cred)
	g.Expect(st.record).NotTo(BeNil(), "the hash Secret of a live credential was deleted as an orphan")
	assertInvariant(t, st, "after a lagging reconcile")
}
