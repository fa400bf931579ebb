package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/test/controlplane"
)

// TestAlertRulesUseExportedMetrics: every alert in config/prometheus parses
// as PromQL and names only metrics this operator really exports — gathered
// from the running operator (its own registry and controller-runtime's,
// which the binary serves together) after a credential with an expiry was
// issued and the endpoint answered.
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	g := NewWithT(t)
	raw, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "config", "prometheus", "rules.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	rule := &monitoringv1.PrometheusRule{}
	g.Expect(yaml.UnmarshalStrict(raw, rule)).To(Succeed(), "rules.yaml must be a valid PrometheusRule")

	ns := newNamespace(t)
	exp := metav1.NewTime(fakeClock.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second))
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alerting"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: newAgentID(), ExpiresAt: &exp},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	waitReady(t, cred)
	// One without an expiry: its next rotation is exported.
	plain := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alerting-plain"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: newAgentID()},
	}
	g.Expect(k8s.Create(ctx, plain)).To(Succeed())
	waitReady(t, plain)
	eventuallyStatus(t, 401, "GET", "/auth/verify", "X-API-Key", "ak_nope")

	exported := map[string]bool{}
	for _, families := range [][]string{gatherNames(t, reg), gatherNames(t, ctrlmetrics.Registry)} {
		for _, n := range families {
			exported[n] = true
		}
	}
	alerts := 0
	for _, group := range rule.Spec.Groups {
		for _, r := range group.Rules {
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr.String())
			g.Expect(err).NotTo(HaveOccurred(), "alert %s: %s", r.Alert, r.Expr.String())
			var names []string
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				if vs, ok := node.(*parser.VectorSelector); ok {
					names = append(names, vs.Name)
				}
				return nil
			})
			g.Expect(names).NotTo(BeEmpty(), "alert %s uses no metric", r.Alert)
			for _, n := range names {
				g.Expect(exported).To(HaveKey(n), "alert %s uses %s, which the operator does not export", r.Alert, n)
			}
			g.Expect(r.Annotations).To(HaveKey("summary"), "alert %s", r.Alert)
			alerts++
		}
	}
	g.Expect(alerts).To(BeNumerically(">=", 8))
}

// gatherNames are the metric family names g exports now.
func gatherNames(t *testing.T, g prometheus.Gatherer) []string {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(families))
	for _, f := range families {
		names = append(names, f.GetName())
	}
	return names
}
