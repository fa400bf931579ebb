package controllers_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/operator"
)

// cacheView reads AgentCredentials as the manager's cache holds them
// (controllers.TrimCredential), and counts the reads of credentials that go
// around it, to the "API server".
type cacheView struct {
	cached   client.Client
	apiReads atomic.Int64
	api      client.Reader
}

func newCacheView(f *fastFixture) *cacheView {
	v := &cacheView{}
	v.cached = interceptor.NewClient(f.client, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if err := c.Get(ctx, key, obj, opts...); err != nil {
				return err
			}
			if cred, ok := obj.(*authv1alpha1.AgentCredential); ok {
				t, err := controllers.TrimCredential(cred.DeepCopy())
				if err != nil {
					return err
				}
				*cred = *t.(*authv1alpha1.AgentCredential)
			}
			return nil
		},
	})
	v.api = interceptor.NewClient(f.client, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*authv1alpha1.AgentCredential); ok {
				v.apiReads.Add(1)
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	return v
}

func (v *cacheView) reconcile(t *testing.T, f *fastFixture, maxCredentials int) (*authv1alpha1.AgentCredential, error) {
	t.Helper()
	r := &controllers.AgentCredentialReconciler{
		Client: v.cached, APIReader: v.api, Scheme: operator.Scheme(), Clock: f.clock, Recorder: f.recorder,
		OperatorNamespace: operatorNamespace, Metrics: controllers.NewMetrics(f.client), MaxCredentialsPerNamespace: maxCredentials,
	}
	v.apiReads.Store(0)
	f.writes.Store(0)
	_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(f.cred)})
	got := &authv1alpha1.AgentCredential{}
	if getErr := f.client.Get(context.Background(), client.ObjectKeyFromObject(f.cred), got); getErr != nil {
		t.Fatal(getErr)
	}
	return got, err
}

// TestReconcileFastTrimmedCredentialCache: the cache keeps no secret
// template, no foreign annotation or label and no foreign condition; the
// controller still writes the template onto the agent Secret, repairs it
// and applies a changed one — reading the credential from the API server
// only then, never in the steady state.
func TestReconcileFastTrimmedCredentialCache(t *testing.T) {
	g := NewWithT(t)
	big := strings.Repeat("x", 16<<10)
	f := newFastFixture(t)
	f.cred.Annotations = map[string]string{
		"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("{}", 100<<10),
		authv1alpha1.RotateAnnotation:                      strings.Repeat("r", 4096),
	}
	f.cred.Labels = map[string]string{"team": "a"}
	f.cred.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{
		Labels:      map[string]string{"team": "a", authv1alpha1.ManagedByLabel: "someone-else"},
		Annotations: map[string]string{"note": big},
	}
	g.Expect(f.client.Update(context.Background(), f.cred)).To(Succeed())
	v := newCacheView(f)

	trimmed := &authv1alpha1.AgentCredential{}
	g.Expect(v.cached.Get(context.Background(), client.ObjectKeyFromObject(f.cred), trimmed)).To(Succeed())
	g.Expect(trimmed.Spec.SecretTemplate).To(BeNil())
	g.Expect(trimmed.Labels).To(BeEmpty())
	g.Expect(trimmed.Annotations).To(HaveLen(3), "the rotate request and the fingerprints of the template and of the annotations")
	g.Expect(len(trimmed.Annotations[controllers.AnnotationsFingerprintAnnotation])).To(Equal(16))
	g.Expect(trimmed.RotationRequest()).To(Equal(f.cred.RotationRequest()), "a rotate request reads the same from the cache")
	g.Expect(len(trimmed.Annotations[authv1alpha1.RotateAnnotation])).To(BeNumerically("<=", authv1alpha1.MaxRotationRequestLen))

	cred, err := v.reconcile(t, f, 0)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
	s := &corev1.Secret{}
	key := client.ObjectKey{Namespace: "team-a", Name: "agent"}
	g.Expect(f.client.Get(context.Background(), key, s)).To(Succeed())
	g.Expect(s.Labels).To(HaveKeyWithValue("team", "a"))
	g.Expect(s.Labels).To(HaveKeyWithValue(authv1alpha1.ManagedByLabel, authv1alpha1.ManagedByValue))
	g.Expect(s.Annotations).To(HaveKeyWithValue("note", big))

	// Steady state: nothing read around the cache, nothing written.
	_, err = v.reconcile(t, f, 0)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(v.apiReads.Load()).To(BeZero(), "a steady-state reconcile read the credential from the API server")
	g.Expect(f.writes.Load()).To(BeZero(), f.events())

	// The tenant edits the agent Secret: repaired from the API server's template.
	g.Expect(f.client.Get(context.Background(), key, s)).To(Succeed())
	delete(s.Labels, "team")
	s.Annotations["note"] = "edited"
	g.Expect(f.client.Update(context.Background(), s)).To(Succeed())
	_, err = v.reconcile(t, f, 0)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(v.apiReads.Load()).To(BeNumerically("==", 1))
	g.Expect(f.client.Get(context.Background(), key, s)).To(Succeed())
	g.Expect(s.Labels).To(HaveKeyWithValue("team", "a"))
	g.Expect(s.Annotations).To(HaveKeyWithValue("note", big))

	// The template changes: applied.
	g.Expect(f.client.Get(context.Background(), client.ObjectKeyFromObject(f.cred), f.cred)).To(Succeed())
	f.cred.Spec.SecretTemplate.Labels["team"] = "b"
	g.Expect(f.client.Update(context.Background(), f.cred)).To(Succeed())
	_, err = v.reconcile(t, f, 0)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(f.client.Get(context.Background(), key, s)).To(Succeed())
	g.Expect(s.Labels).To(HaveKeyWithValue("team", "b"))
	_, err = v.reconcile(t, f, 0)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(v.apiReads.Load()).To(BeZero(), "steady again")
}

// TestReconcileFastTrimmedConditions: conditions agentcred does not write
// and oversized messages stay out of the cache; the next status write
// replaces them.
func TestReconcileFastTrimmedConditions(t *testing.T) {
	g := NewWithT(t)
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "n", OwnerReferences: []metav1.OwnerReference{{Name: "o"}}, Finalizers: []string{"a", "b"}},
		Status: authv1alpha1.AgentCredentialStatus{
			Conditions: []metav1.Condition{
				{Type: "Padding", Message: strings.Repeat("p", 32<<10)},
				{Type: authv1alpha1.ReadyCondition, Message: strings.Repeat("m", 32<<10)},
			},
			RestartTargets:      []authv1alpha1.RestartTargetStatus{{Name: "x", Message: "y"}},
			LastRotationRequest: strings.Repeat("l", 4096),
		},
	}
	out, err := controllers.TrimCredential(cred)
	g.Expect(err).NotTo(HaveOccurred())
	t2 := out.(*authv1alpha1.AgentCredential)
	g.Expect(t2.Status.Conditions).To(HaveLen(1))
	g.Expect(len(t2.Status.Conditions[0].Message)).To(BeNumerically("<=", 1024+len("…")))
	g.Expect(t2.Status.RestartTargets).To(BeEmpty(), "status for restart targets the spec does not name")
	g.Expect(len(t2.Status.LastRotationRequest)).To(BeNumerically("<=", authv1alpha1.MaxRotationRequestLen+len("…")))
	g.Expect(t2.OwnerReferences).To(BeEmpty())
	g.Expect(t2.Finalizers).To(Equal([]string{"a", "b"}), "finalizers are written back with merge patches, so they stay whole")
	g.Expect(cred.Status.Conditions).To(HaveLen(2), "the transform must not change the object it was given")
}

// TestReconcileFastCredentialLimit: with --max-credentials-per-namespace=2
// the two oldest credentials of a namespace get keys; a third gets none
// (Ready=False CredentialLimitReached, a Warning event, no hash Secret, no
// agent Secret) until an older one is deleted.
func TestReconcileFastCredentialLimit(t *testing.T) {
	g := NewWithT(t)
	older := func(name string, age time.Duration) *authv1alpha1.AgentCredential {
		return &authv1alpha1.AgentCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, UID: k8stypes.UID("uid-" + name),
				CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(-age))},
			Spec: authv1alpha1.AgentCredentialSpec{AgentID: "bbbbbbbb-0000-4000-8000-0000000000" + map[string]string{"one": "21", "two": "22", "aaa": "23", "zzz": "24"}[name]},
		}
	}
	first, second := older("one", 2*time.Hour), older("two", time.Hour)
	f := newFastFixture(t, first, second, older("zzz", 0))
	v := newCacheView(f)

	cred, err := v.reconcile(t, f, 2)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("False/" + controllers.ReasonCredentialLimitReached))
	g.Expect(readyMessageOf(cred)).To(ContainSubstring("--max-credentials-per-namespace"))
	g.Expect(f.events()).To(ContainSubstring("--max-credentials-per-namespace"))
	g.Expect(f.record()).To(BeNil(), "a hash Secret for a credential beyond the bound")
	g.Expect(f.agentKey()).To(BeEmpty(), "a key for a credential beyond the bound")

	// Same creation time as "zzz": the name decides, and "agent" comes first.
	cred, err = v.reconcile(t, f, 3)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/"+authv1alpha1.ReasonIssued), readyMessageOf(cred))

	// Back under a bound of 2, then an older one goes: the key comes back.
	cred, err = v.reconcile(t, f, 2)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("False/" + controllers.ReasonCredentialLimitReached))
	g.Expect(f.record()).To(BeNil(), "the key of a credential pushed beyond the bound must be revoked")
	g.Expect(f.client.Delete(context.Background(), first)).To(Succeed())
	cred, err = v.reconcile(t, f, 2)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
	g.Expect(f.record()).NotTo(BeNil())

	// A name before "agent" at the same time comes first.
	g.Expect(f.client.Create(context.Background(), older("aaa", 0))).To(Succeed())
	cred, err = v.reconcile(t, f, 2)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("False/" + controllers.ReasonCredentialLimitReached))
	// 0: no limit.
	cred, err = v.reconcile(t, f, 0)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(readyReason(cred)).To(Equal("True/" + authv1alpha1.ReasonIssued))
}

// TestTrimmedCredentialStillChangesWithAnyAnnotation: the cache drops
// foreign annotations but keeps a digest of them, so adding or changing one
// (a person or tool nudging the credential) still changes the cached copy
// and re-reconciles it, as before the trim.
func TestTrimmedCredentialStillChangesWithAnyAnnotation(t *testing.T) {
	g := NewWithT(t)
	cred := &authv1alpha1.AgentCredential{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "n", Annotations: map[string]string{"a": "1"}}}
	trim := func(c *authv1alpha1.AgentCredential) map[string]string {
		out, err := controllers.TrimCredential(c.DeepCopy())
		g.Expect(err).NotTo(HaveOccurred())
		return out.(*authv1alpha1.AgentCredential).Annotations
	}
	first := trim(cred)
	g.Expect(first).NotTo(HaveKey("a"))
	cred.Annotations["a"] = "2"
	g.Expect(trim(cred)).NotTo(Equal(first), "a changed annotation must change the cached copy")
	cred.Annotations = map[string]string{"a": "1", "b": ""}
	g.Expect(trim(cred)).NotTo(Equal(first), "an added annotation must change the cached copy")
	cred.Annotations = map[string]string{"a": "1"}
	g.Expect(trim(cred)).To(Equal(first), "the same annotations give the same copy")
	cred.Annotations = nil
	g.Expect(trim(cred)).To(BeEmpty())
}
