package scale

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/internal/rollout"
	"github.com/agrenting/agentcred/test/harness"
)

// hostileCredential is as large as the schema lets a tenant make it: a
// secretTemplate of 3 × 16,000-character annotations (under the 64 KiB
// bound) and a 150 KiB kubectl last-applied-configuration annotation.
func hostileCredential(ns string, i int) *authv1alpha1.AgentCredential {
	c := credential(ns, i)
	c.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("a", 150<<10)}
	c.Labels = map[string]string{"padding": strings.Repeat("l", 63)}
	c.Spec.SecretTemplate = &authv1alpha1.SecretTemplate{Annotations: map[string]string{}}
	for j := range 3 {
		c.Spec.SecretTemplate.Annotations[fmt.Sprintf("pad.example.com/k%d", j)] = strings.Repeat("t", 16000)
	}
	return c
}

// hostileDeployment carries a 200 KiB restarted-for value on its pod template.
func hostileDeployment(ns string, i int) *appsv1.Deployment {
	labels := map[string]string{"app": "hostile"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("hostile-%d", i)},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{authv1alpha1.RestartedForAnnotation: strings.Repeat("r", 200<<10)}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app"}}},
			},
		},
	}
}

// BenchmarkHostileObjectsCostLittle: a tenant creates N AgentCredentials as
// large as the schema allows and N Deployments with a 200 KiB
// restarted-for annotation (issue 23 item 3), about 390 KiB of metadata
// each pair. The operator, in-process with
// --max-credentials-per-namespace=N-5, caches them trimmed. The benchmark
// first creates N plain credentials in another namespace, so that what a
// credential costs anyway (its hash Secret, claim, queue entry, metrics,
// event) is measured apart from what its size adds. At N = 1,000 the
// hostile credentials must cost less than 10 MiB more than the plain ones,
// and the hostile Deployments less than 10 MiB (before the trims: about
// 200 MiB each). The bound is enforced on the way: the newest credentials
// beyond it get no key, and deleting the oldest lets the first of them in.
func BenchmarkHostileObjectsCostLittle(b *testing.B) {
	n := scaleN()
	const limitMargin = 5
	limit := max(n-limitMargin, 1)
	for b.Loop() {
		cfg := rest.CopyConfig(env.Config)
		cfg.QPS, cfg.Burst = 1000, 2000
		o := harness.OperatorOptions()
		o.MaxConcurrentReconciles, o.MaxClaimsPerNamespace, o.MaxCredentialsPerNamespace = 4, 0, limit
		op, stopOp, err := harness.StartOperator(ctx, cfg, o, operator.Deps{ManagerOptions: func(mo *ctrl.Options) { mo.Logger = logr.Discard() }})
		if err != nil {
			b.Fatal(err)
		}
		cached := op.GetClient()
		states := func(ns string) (ready, over int) {
			list := &authv1alpha1.AgentCredentialList{}
			if err := cached.List(ctx, list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
				return 0, 0
			}
			for i := range list.Items {
				c := meta.FindStatusCondition(list.Items[i].Status.Conditions, authv1alpha1.ReadyCondition)
				switch {
				case c == nil:
				case c.Status == metav1.ConditionTrue:
					ready++
				case c.Reason == controllers.ReasonCredentialLimitReached:
					over++
				}
			}
			return ready, over
		}
		wantOver := n - limit
		settled := func(ns string, wantOver int) {
			waitCount(b, func() int {
				if ready, over := states(ns); over == wantOver {
					return ready
				}
				return 0
			}, limit)
		}
		time.Sleep(2 * time.Second) //nolint:forbidigo // let the manager's informers settle before measuring
		start := heap()

		plain := newNamespace(b, "plain")
		if err := parallel(n, func(i int) error { return k8s.Create(ctx, credential(plain, i)) }); err != nil {
			b.Fatal(err)
		}
		settled(plain, wantOver)
		afterPlain := heap()

		ns := newNamespace(b, "hostile")
		if err := parallel(n, func(i int) error { return k8s.Create(ctx, hostileCredential(ns, i)) }); err != nil {
			b.Fatal(err)
		}
		settled(ns, wantOver)
		afterHostile := heap()
		if err := parallel(n, func(i int) error { return k8s.Create(ctx, hostileDeployment(ns, i)) }); err != nil {
			b.Fatal(err)
		}
		waitCount(b, func() int {
			list := &appsv1.DeploymentList{}
			if err := cached.List(ctx, list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
				return 0
			}
			return len(list.Items)
		}, n)
		afterDeployments := heap()
		plainGrew := int64(afterPlain) - int64(start)
		hostileGrew := int64(afterHostile) - int64(afterPlain)
		deploymentsGrew := int64(afterDeployments) - int64(afterHostile)

		// What the cache holds is what the controller reads.
		creds := &authv1alpha1.AgentCredentialList{}
		if err := cached.List(ctx, creds, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		for i := range creds.Items {
			c := &creds.Items[i]
			if c.Spec.SecretTemplate != nil || len(c.Labels) > 0 || len(c.Annotations["kubectl.kubernetes.io/last-applied-configuration"]) > 0 {
				b.Fatalf("credential %s is cached with its template, labels or last-applied annotation", c.Name)
			}
		}
		deployments := &appsv1.DeploymentList{}
		if err := cached.List(ctx, deployments, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		for i := range deployments.Items {
			if v := rollout.RestartedFor(&deployments.Items[i]); v != "" {
				b.Fatalf("Deployment %s is cached with a %d-byte restarted-for value", deployments.Items[i].Name, len(v))
			}
		}

		// The bound: no hash Secret beyond it; the oldest going lets the next in.
		hashes := &corev1.SecretList{}
		if err := k8s.List(ctx, hashes, client.InNamespace(operatorNamespace), client.MatchingLabels{authv1alpha1.CredentialNamespaceLabel: ns}); err != nil {
			b.Fatal(err)
		}
		if len(hashes.Items) != limit {
			b.Fatalf("%d hash Secrets for %d credentials under a bound of %d, want %d", len(hashes.Items), n, limit, limit)
		}
		if wantOver > 0 {
			if err := k8s.Delete(ctx, &authv1alpha1.AgentCredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: oldest(b, ns)}}); err != nil {
				b.Fatal(err)
			}
			settled(ns, wantOver-1)
		}

		if err := stopOp(); err != nil {
			b.Fatal(err)
		}
		if err := k8s.DeleteAllOf(ctx, &appsv1.Deployment{}, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		purge(b, plain)
		purge(b, ns)
		mib := func(v int64) float64 { return float64(v) / 1024 / 1024 }
		b.ReportMetric(mib(plainGrew), "plain-credentials-heap-MiB")
		b.ReportMetric(mib(hostileGrew), "hostile-credentials-heap-MiB")
		b.ReportMetric(mib(hostileGrew-plainGrew), "hostile-minus-plain-heap-MiB")
		b.ReportMetric(mib(deploymentsGrew), "hostile-deployments-heap-MiB")
		b.ReportMetric(float64(n)*(150<<10+3*16000+200<<10)/1024/1024, "hostile-metadata-MiB")
		if n >= 1000 && (hostileGrew-plainGrew >= 10<<20 || deploymentsGrew >= 10<<20) {
			b.Fatalf("%d hostile credentials cost %.1f MiB more than %d plain ones, %d hostile Deployments %.1f MiB (target < 10 MiB each)",
				n, mib(hostileGrew-plainGrew), n, n, mib(deploymentsGrew))
		}
	}
}

// oldest names the credential of ns that comes first for the bound.
func oldest(b *testing.B, ns string) string {
	b.Helper()
	list := &authv1alpha1.AgentCredentialList{}
	if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
		b.Fatal(err)
	}
	first := &list.Items[0]
	for i := range list.Items {
		c := &list.Items[i]
		if c.CreationTimestamp.Before(&first.CreationTimestamp) || (c.CreationTimestamp.Equal(&first.CreationTimestamp) && c.Name < first.Name) {
			first = c
		}
	}
	return first.Name
}
