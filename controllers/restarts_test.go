package controllers_test

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/test/harness"
)

// envDeployment is a consumer reading the key of Secret secretName from an
// environment variable. This suite has no Deployment controller: tests
// write the status a finished rollout would have (rolledOut).
func envDeployment(ns, name, secretName string) *appsv1.Deployment {
	return harness.KeyConsumer(ns, name, secretName, "")
}

func getDeployment(t *testing.T, d *appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	out := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(d), out); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitRestartedFor waits until the Deployment's pod template names keyID.
func waitRestartedFor(t *testing.T, d *appsv1.Deployment, keyID string) *appsv1.Deployment {
	t.Helper()
	var out *appsv1.Deployment
	NewWithT(t).Eventually(func() string {
		out = getDeployment(t, d)
		return out.Spec.Template.Annotations[authv1alpha1.RestartedForAnnotation]
	}).WithTimeout(timeout).WithPolling(interval).Should(Equal(keyID))
	return out
}

// rolledOut writes the status the Deployment controller reports once every
// replica runs the current template.
func rolledOut(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	cur := getDeployment(t, d)
	cur.Status = appsv1.DeploymentStatus{ObservedGeneration: cur.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
	if err := k8s.Status().Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
}

func targetState(t *testing.T, cred *authv1alpha1.AgentCredential) func() authv1alpha1.RolloutState {
	return func() authv1alpha1.RolloutState {
		s := get(t, cred).Status.RestartTargets
		if len(s) != 1 {
			return ""
		}
		return s[0].State
	}
}

func withTargets(targets ...authv1alpha1.RestartTarget) func(*authv1alpha1.AgentCredential) {
	return func(c *authv1alpha1.AgentCredential) { c.Spec.Rotation.RestartTargets = targets }
}

func TestRestartTargetsAndRolloutAwareGrace(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	deploy := envDeployment(ns, "billing", "billing-agent")
	create(t, deploy)
	cred := apiKeyCredential(ns, "billing-agent", withTargets(authv1alpha1.RestartTarget{Kind: authv1alpha1.DeploymentKind, Name: "billing"}))
	create(t, cred)
	cred = waitReady(t, cred)

	// Issue restarts the target and the status follows its rollout.
	d := waitRestartedFor(t, deploy, cred.Status.KeyID)
	g.Expect(d.Spec.Template.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef.Name).To(Equal("billing-agent"), "nothing else of the workload changes")
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).Should(Equal(authv1alpha1.Rolling))
	rolledOut(t, deploy)
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).Should(Equal(authv1alpha1.RolledOut))
	g.Expect(meta.IsStatusConditionTrue(get(t, cred).Status.Conditions, controllers.RolledOutCondition)).To(BeTrue())

	// No restart loop: reconciling again leaves the Deployment alone.
	generation := getDeployment(t, deploy).Generation
	pokeAndWaitForReconcile(t, cred)
	g.Expect(getDeployment(t, deploy).Generation).To(Equal(generation))

	// A scheduled rotation restarts the target again; while it rolls, the
	// previous key outlives its 10-minute grace, up to --max-grace.
	oldKey := string(agentSecret(t, ns, "billing-agent").Data[authv1alpha1.AgentSecretAPIKey])
	issued := cred.Status.LastRotationTime.Time
	fakeClock.SetTime(issued.Add(90 * 24 * time.Hour))
	rotatedAt := fakeClock.Now()
	poke(t, cred)
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	waitRestartedFor(t, deploy, cred.Status.KeyID)
	g.Eventually(func() time.Time { return hashRecord(t, cred).Previous.ExpiresAt }).WithTimeout(timeout).
		Should(BeTemporally("==", rotatedAt.Add(controllers.DefaultMaxGrace)))
	g.Eventually(func() *metav1.Time { return get(t, cred).Status.PreviousKeyExpiresAt }).WithTimeout(timeout).
		Should(HaveField("Time", BeTemporally("==", rotatedAt.Add(controllers.DefaultMaxGrace))))
	g.Expect(targetState(t, cred)()).To(Equal(authv1alpha1.Rolling))
	g.Expect(meta.FindStatusCondition(get(t, cred).Status.Conditions, controllers.RolledOutCondition).Reason).To(Equal(controllers.ReasonRolloutPending))

	fakeClock.SetTime(rotatedAt.Add(time.Hour))
	pokeAndWaitForReconcile(t, cred)
	rec := hashRecord(t, cred)
	g.Expect(rec.Accepts(credential.DigestOf(oldKey), fakeClock.Now())).To(BeTrue(), "the previous key must live while the target rolls out")

	// The rollout completing ends the grace at once (gracePeriod has
	// passed): the Deployment's own event triggers it, no poke.
	rolledOut(t, deploy)
	g.Eventually(func() *hashsecret.Entry { return hashRecord(t, cred).Previous }).WithTimeout(timeout).Should(BeNil())
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).Should(Equal(authv1alpha1.RolledOut))

	// A rollout that never completes: the cap revokes, with a Warning.
	cred = get(t, cred)
	fakeClock.SetTime(cred.Status.LastRotationTime.Add(90 * 24 * time.Hour))
	rotatedAt = fakeClock.Now()
	poke(t, cred)
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	g.Eventually(func() time.Time { return hashRecord(t, cred).Previous.ExpiresAt }).WithTimeout(timeout).
		Should(BeTemporally("==", rotatedAt.Add(controllers.DefaultMaxGrace)))
	fakeClock.SetTime(rotatedAt.Add(controllers.DefaultMaxGrace))
	poke(t, cred)
	g.Eventually(func() *hashsecret.Entry { return hashRecord(t, cred).Previous }).WithTimeout(timeout).Should(BeNil())
	waitEvent(t, cred, controllers.EventGraceCapReached)
	g.Expect(targetState(t, cred)()).To(Equal(authv1alpha1.Rolling))
}

func TestRequestedRotationRestartsTargetsAndRevokesAtOnce(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	deploy := envDeployment(ns, "api", "api-agent")
	create(t, deploy)
	cred := apiKeyCredential(ns, "api-agent", withTargets(authv1alpha1.RestartTarget{Kind: authv1alpha1.DeploymentKind, Name: "api"}))
	create(t, cred)
	cred = waitReady(t, cred)
	waitRestartedFor(t, deploy, cred.Status.KeyID)

	annotate(t, cred, authv1alpha1.RotateAnnotation, "leaked")
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	waitRestartedFor(t, deploy, cred.Status.KeyID)
	g.Expect(hashRecord(t, cred).Previous).To(BeNil(), "a requested rotation revokes at once, rolling targets or not")
}

func TestMissingRestartTargetIsReportedNotFatal(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "ghostly", withTargets(authv1alpha1.RestartTarget{Kind: authv1alpha1.StatefulSetKind, Name: "ghost"}))
	create(t, cred)
	cred = waitReady(t, cred)
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).Should(Equal(authv1alpha1.TargetNotFound))
	c := meta.FindStatusCondition(get(t, cred).Status.Conditions, controllers.RolledOutCondition)
	g.Expect(c).NotTo(BeNil())
	g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(c.Reason).To(Equal(controllers.ReasonTargetNotFound))
	g.Expect(c.Message).To(ContainSubstring("StatefulSet/ghost"))
	waitEvent(t, cred, controllers.EventTargetNotFound)

	// The target appearing is noticed without a poke, and restarted.
	labels := map[string]string{"app": "ghost"}
	ss := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ghost"},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "example.com/x:1"}}}},
		},
	}
	create(t, ss)
	g.Eventually(func() string {
		out := &appsv1.StatefulSet{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ss), out)).To(Succeed())
		return out.Spec.Template.Annotations[authv1alpha1.RestartedForAnnotation]
	}).WithTimeout(timeout).WithPolling(interval).Should(Equal(cred.Status.KeyID))
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).Should(Equal(authv1alpha1.Rolling))
}

func TestRestartTargetsStayInTheCredentialsNamespace(t *testing.T) {
	g := NewWithT(t)
	victim := newNamespace(t)
	deploy := envDeployment(victim, "payments", "payments")
	create(t, deploy)
	attacker := newNamespace(t)
	cred := apiKeyCredential(attacker, "payments", withTargets(authv1alpha1.RestartTarget{Kind: authv1alpha1.DeploymentKind, Name: "payments"}))
	create(t, cred)
	cred = waitReady(t, cred)
	g.Eventually(targetState(t, cred)).WithTimeout(timeout).Should(Equal(authv1alpha1.TargetNotFound))
	g.Expect(getDeployment(t, deploy).Spec.Template.Annotations).NotTo(HaveKey(authv1alpha1.RestartedForAnnotation),
		"a credential restarted a workload in another namespace")
}

func TestExpiry(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	expiresAt := fakeClock.Now().Add(time.Hour).UTC().Truncate(time.Second)
	cred := apiKeyCredential(ns, "temporary", func(c *authv1alpha1.AgentCredential) {
		c.Spec.ExpiresAt = &metav1.Time{Time: expiresAt}
	})
	create(t, cred)
	cred = waitReady(t, cred)
	g.Expect(cred.Status.NextRotationTime).To(BeNil(), "no rotation is scheduled past the expiry")
	g.Expect(readyMessage(cred)).To(ContainSubstring("expires at " + expiresAt.Format(time.RFC3339)))
	g.Expect(hashRecord(t, cred).ExpiresAt).To(BeTemporally("==", expiresAt))
	g.Expect(testutil.ToFloat64(testMetrics.Expiration.WithLabelValues(ns, "temporary"))).To(BeEquivalentTo(expiresAt.Unix()))
	oldKey := string(agentSecret(t, ns, "temporary").Data[authv1alpha1.AgentSecretAPIKey])

	fakeClock.SetTime(expiresAt)
	poke(t, cred)
	cred = waitCondition(t, cred, metav1.ConditionFalse, authv1alpha1.ReasonExpired)
	waitEvent(t, cred, controllers.EventExpired)
	g.Expect(readyMessage(cred)).To(ContainSubstring("expired at " + expiresAt.Format(time.RFC3339)))
	g.Expect(hashRecord(t, cred).Expired(fakeClock.Now())).To(BeTrue())

	// A later rotate request does not revive it.
	annotate(t, cred, authv1alpha1.RotateAnnotation, "please")
	pokeAndWaitForReconcile(t, cred)
	g.Expect(get(t, cred).Status.KeyID).To(Equal(cred.Status.KeyID))

	// Extending the expiry issues a new key; the expired one stays dead.
	later := fakeClock.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	patch := client.MergeFrom(get(t, cred))
	ext := get(t, cred)
	ext.Spec.ExpiresAt = &metav1.Time{Time: later}
	g.Expect(k8s.Patch(ctx, ext, patch)).To(Succeed())
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	waitEvent(t, cred, controllers.EventRenewed)
	rec := hashRecord(t, cred)
	g.Expect(rec.ExpiresAt).To(BeTemporally("==", later))
	g.Expect(rec.Accepts(credential.DigestOf(oldKey), fakeClock.Now())).To(BeFalse())
	newKey := string(agentSecret(t, ns, "temporary").Data[authv1alpha1.AgentSecretAPIKey])
	g.Expect(rec.Accepts(credential.DigestOf(newKey), fakeClock.Now())).To(BeTrue())
	g.Expect(rec.Expired(fakeClock.Now())).To(BeFalse())
}

func TestExpiryAfterTheNextRotationKeepsTheSchedule(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	expiresAt := fakeClock.Now().Add(200 * 24 * time.Hour).UTC().Truncate(time.Second)
	cred := apiKeyCredential(ns, "long", func(c *authv1alpha1.AgentCredential) {
		c.Spec.ExpiresAt = &metav1.Time{Time: expiresAt}
	})
	create(t, cred)
	cred = waitReady(t, cred)
	g.Expect(cred.Status.NextRotationTime).NotTo(BeNil())
	g.Expect(cred.Status.NextRotationTime.Time).To(BeTemporally("==", cred.Status.LastRotationTime.Add(90*24*time.Hour)))
}
