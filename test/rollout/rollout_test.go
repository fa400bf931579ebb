// Package rollout proves restart targets on a cluster where workloads
// really roll out: kube-apiserver and etcd (envtest), kube-controller-manager
// (Deployment and ReplicaSet controllers, garbage collector) and kwok as the
// kubelet, with the operator in-process under a fake clock and its auth
// endpoint on loopback.
package rollout

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/harness"
)

const (
	timeout  = 60 * time.Second
	interval = 100 * time.Millisecond
)

var (
	k8s       client.Client
	authURL   string
	fakeClock = clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx       = context.Background()
	logs      = &harness.SyncBuffer{}
	cluster   *harness.RolloutCluster
)

func TestMain(m *testing.M) {
	os.Exit(harness.Run(harness.RunInput{M: m, Setup: func(ctx context.Context, env *harness.Env) (func() error, error) {
		k8s = env.Client
		rc, err := harness.StartRolloutCluster(env, logs)
		if err != nil {
			return nil, err
		}
		cluster = rc
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: harness.KwokNode, Labels: map[string]string{"type": "kwok"}}}
		if err := k8s.Create(ctx, node); err != nil {
			return rc.Stop, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return rc.Stop, err
		}
		authURL = "http://" + ln.Addr().String()
		o := harness.OperatorOptions()
		o.EnableAuthEndpoint = true
		o.FailureRate = 0
		_, stopOperator, err := harness.StartOperator(ctx, env.Config, o, operator.Deps{Clock: fakeClock, AuthListener: ln})
		if err != nil {
			return rc.Stop, err
		}
		return func() error {
			err := stopOperator()
			if os.Getenv("AGENTCRED_ROLLOUT_LOGS") != "" {
				fmt.Fprint(os.Stderr, logs.String())
			}
			return joinErr(err, rc.Stop())
		}, nil
	}}))
}

func joinErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func credentialFor(ns, name string, agent int, target string) *authv1alpha1.AgentCredential {
	return &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: authv1alpha1.AgentCredentialSpec{
			AgentID: fmt.Sprintf("7e570000-0000-4000-8000-%012d", agent),
			Rotation: authv1alpha1.RotationSpec{
				RestartTargets: []authv1alpha1.RestartTarget{{Kind: authv1alpha1.DeploymentKind, Name: target}},
			},
		},
	}
}

func get(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
}

func waitReady(t *testing.T, cred *authv1alpha1.AgentCredential) *authv1alpha1.AgentCredential {
	t.Helper()
	return harness.WaitReady(t, k8s, cred, metav1.ConditionTrue, authv1alpha1.ReasonIssued, timeout)
}

func targetState(t *testing.T, cred *authv1alpha1.AgentCredential) func() authv1alpha1.RolloutState {
	return func() authv1alpha1.RolloutState {
		c := cred.DeepCopy()
		get(t, c)
		if len(c.Status.RestartTargets) != 1 {
			return ""
		}
		return c.Status.RestartTargets[0].State
	}
}

// poke makes the controller reconcile after the fake clock moved.
func poke(t *testing.T, cred *authv1alpha1.AgentCredential) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"test.agrenting.io/poke":"%d"}}}`, time.Now().UnixNano())
	if err := k8s.Patch(ctx, cred.DeepCopy(), client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

func setPaused(t *testing.T, d *appsv1.Deployment, paused bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"paused":%t}}`, paused)
	if err := k8s.Patch(ctx, d.DeepCopy(), client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

func agentKey(t *testing.T, ns, secret string) string {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secret}}
	get(t, s)
	return string(s.Data[authv1alpha1.AgentSecretAPIKey])
}

// verify is the status /auth/verify answers for key.
func verify(key string) int { return harness.VerifyStatus(authURL, key) }

func waitKeyChange(t *testing.T, cred *authv1alpha1.AgentCredential, old string) *authv1alpha1.AgentCredential {
	t.Helper()
	NewWithT(t).Eventually(func() string { c := cred.DeepCopy(); get(t, c); return c.Status.KeyID }).
		WithTimeout(timeout).WithPolling(interval).ShouldNot(Equal(old))
	return waitReady(t, cred)
}

func TestEnvVarConsumerKeepsWorkingThroughAScheduledRotation(t *testing.T) {
	g := NewWithT(t)
	ns := harness.NewNamespace(t, k8s, "rollout")
	deploy := harness.KeyConsumer(ns, "billing", "billing-agent", harness.KwokNode)
	g.Expect(k8s.Create(ctx, deploy)).To(Succeed())
	cred := credentialFor(ns, "billing-agent", 1, "billing")
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	cred = waitReady(t, cred)

	// The issue restarted the Deployment and its pods really rolled out,
	// each reading the Secret through an environment variable.
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).WithPolling(interval).Should(Equal(authv1alpha1.RolledOut))
	pods := &corev1.PodList{}
	g.Expect(k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app": "billing"})).To(Succeed())
	running := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		running++
		g.Expect(p.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef.Name).To(Equal("billing-agent"))
		g.Expect(p.Annotations).To(HaveKeyWithValue(authv1alpha1.RestartedForAnnotation, cred.Status.KeyID))
	}
	g.Expect(running).To(Equal(2))
	oldKey := agentKey(t, ns, "billing-agent")
	g.Expect(verify(oldKey)).To(Equal(http.StatusOK))

	// Hold the next rollout (kubectl rollout pause), rotate on schedule and
	// pass the 10-minute grace: the old key, which the running pods still
	// hold, keeps working.
	setPaused(t, deploy, true)
	fakeClock.SetTime(cred.Status.LastRotationTime.Add(90 * 24 * time.Hour))
	poke(t, cred)
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	newKey := agentKey(t, ns, "billing-agent")
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).WithPolling(interval).Should(Equal(authv1alpha1.Rolling))
	fakeClock.Step(time.Hour)
	poke(t, cred)
	g.Consistently(func() int { return verify(oldKey) }).WithTimeout(2 * time.Second).WithPolling(200 * time.Millisecond).Should(Equal(http.StatusOK))
	g.Expect(verify(newKey)).To(Equal(http.StatusOK))

	// Resume: the Deployment rolls to the new template, and the old key
	// dies as soon as the rollout completes — nothing pokes the credential.
	setPaused(t, deploy, false)
	g.Eventually(func() int { return verify(oldKey) }).WithTimeout(timeout).WithPolling(interval).Should(Equal(http.StatusUnauthorized))
	// The status follows the revocation in the same reconcile, a patch later.
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).WithPolling(interval).Should(Equal(authv1alpha1.RolledOut))
	g.Expect(verify(newKey)).To(Equal(http.StatusOK))
	g.Expect(k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app": "billing"})).To(Succeed())
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			g.Expect(p.Annotations).To(HaveKeyWithValue(authv1alpha1.RestartedForAnnotation, cred.Status.KeyID))
		}
	}
}

func TestRolloutThatNeverCompletesIsCappedByMaxGrace(t *testing.T) {
	g := NewWithT(t)
	ns := harness.NewNamespace(t, k8s, "stuck")
	// Its pods are bound to a node that does not exist: they never run.
	deploy := harness.KeyConsumer(ns, "stuck", "stuck-agent", "no-such-node")
	g.Expect(k8s.Create(ctx, deploy)).To(Succeed())
	cred := credentialFor(ns, "stuck-agent", 2, "stuck")
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	cred = waitReady(t, cred)
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).WithPolling(interval).Should(Equal(authv1alpha1.Rolling))
	oldKey := agentKey(t, ns, "stuck-agent")

	fakeClock.SetTime(cred.Status.LastRotationTime.Add(90 * 24 * time.Hour))
	rotatedAt := fakeClock.Now()
	poke(t, cred)
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	fakeClock.SetTime(rotatedAt.Add(controllers.DefaultMaxGrace - time.Minute))
	poke(t, cred)
	g.Consistently(func() int { return verify(oldKey) }).WithTimeout(2 * time.Second).WithPolling(200 * time.Millisecond).Should(Equal(http.StatusOK))

	fakeClock.SetTime(rotatedAt.Add(controllers.DefaultMaxGrace))
	poke(t, cred)
	g.Eventually(func() int { return verify(oldKey) }).WithTimeout(timeout).WithPolling(interval).Should(Equal(http.StatusUnauthorized))
	g.Eventually(func() []string {
		list := &eventsv1.EventList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace(ns))).To(Succeed())
		var reasons []string
		for _, e := range list.Items {
			if e.Regarding.Name == cred.Name {
				reasons = append(reasons, e.Reason+": "+e.Note)
			}
		}
		return reasons
	}).WithTimeout(timeout).WithPolling(interval).Should(ContainElement(And(
		HavePrefix(controllers.EventGraceCapReached), ContainSubstring("Deployment/stuck"))))
}

func TestGarbageCollectorDeletesWhatTheCredentialOwns(t *testing.T) {
	g := NewWithT(t)
	ns := harness.NewNamespace(t, k8s, "gc")
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "short-lived"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: "7e570000-0000-4000-8000-000000000003"},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	cred = waitReady(t, cred)
	agent := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "short-lived"}}
	get(t, agent)
	g.Expect(metav1.IsControlledBy(agent, cred)).To(BeTrue())
	// Something agentcred does not know about, owned by the credential:
	// only the garbage collector removes it.
	extra := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "notes", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: authv1alpha1.GroupVersion.String(), Kind: "AgentCredential", Name: cred.Name, UID: cred.UID,
	}}}}
	g.Expect(k8s.Create(ctx, extra)).To(Succeed())

	g.Expect(k8s.Delete(ctx, cred)).To(Succeed())
	hash := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: harness.OperatorNamespace, Name: hashsecret.Name(ns, cred.Name)}}
	for _, obj := range []client.Object{agent, hash, extra} {
		g.Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj))
		}).WithTimeout(timeout).WithPolling(interval).Should(BeTrue(), "%s/%s survived its credential", obj.GetNamespace(), obj.GetName())
	}
	g.Expect(cluster.Check(ctx)).To(Succeed())
}
