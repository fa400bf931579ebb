package controllers

// Metrics are served only to callers the API server authenticates and
// authorizes (--metrics-secure), which takes TokenReviews and
// SubjectAccessReviews:
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/rotation"
)

// Metrics are the controller's Prometheus metrics.
type Metrics struct {
	// RotationsTotal counts issued keys by reason: issue, scheduled, requested, reissue.
	RotationsTotal *prometheus.CounterVec
	// NextRotation is each credential's next scheduled rotation as a Unix time.
	NextRotation *prometheus.GaugeVec
	// Expiration is each expiring credential's spec.expiresAt as a Unix time.
	Expiration *prometheus.GaugeVec
	// Ready is 1 while a credential's Ready condition is True, else 0.
	Ready       *prometheus.GaugeVec
	credentials *credentialsCollector
}

// NewMetrics creates the metrics; reader lists AgentCredentials (the
// manager's cache) for agentcred_credentials at scrape time.
func NewMetrics(reader client.Reader) *Metrics {
	return &Metrics{
		RotationsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentcred_rotations_total",
			Help: "Keys issued by agentcred, by reason (issue, scheduled, requested, reissue, renew).",
		}, []string{"reason"}),
		NextRotation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentcred_credential_next_rotation_timestamp_seconds",
			Help: "When each credential's key is next rotated on schedule, as a Unix time.",
		}, []string{"namespace", "name"}),
		Expiration: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentcred_credential_expiration_timestamp_seconds",
			Help: "When each credential with spec.expiresAt stops authenticating for good, as a Unix time.",
		}, []string{"namespace", "name"}),
		Ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentcred_credential_ready",
			Help: "1 while the credential's Ready condition is True, 0 otherwise (with the reason in its status).",
		}, []string{"namespace", "name"}),
		credentials: &credentialsCollector{reader: reader, desc: prometheus.NewDesc(
			"agentcred_credentials", "AgentCredentials in the cluster, by type and environment.", []string{"type", "environment"}, nil)},
	}
}

// Register registers every metric with reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.RotationsTotal, m.NextRotation, m.Expiration, m.Ready, m.credentials} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *Metrics) forget(cred *authv1alpha1.AgentCredential) {
	m.NextRotation.DeleteLabelValues(cred.Namespace, cred.Name)
	m.Expiration.DeleteLabelValues(cred.Namespace, cred.Name)
	m.Ready.DeleteLabelValues(cred.Namespace, cred.Name)
}

func metricReason(r rotation.Reason) string {
	switch r {
	case rotation.Issue:
		return "issue"
	case rotation.Scheduled:
		return "scheduled"
	case rotation.Requested:
		return "requested"
	case rotation.Reissue:
		return "reissue"
	case rotation.Renew:
		return "renew"
	default:
		return "unknown"
	}
}

// credentialsCollector counts AgentCredentials by type when scraped, from
// the cache, so the figure is always current and costs no API call.
type credentialsCollector struct {
	reader client.Reader
	desc   *prometheus.Desc
}

func (c *credentialsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *credentialsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list := &authv1alpha1.AgentCredentialList{}
	// Read-only: counting needs no copy of every cached credential.
	if err := c.reader.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	type key struct {
		t authv1alpha1.CredentialType
		e authv1alpha1.Environment
	}
	counts := map[key]int{}
	for _, t := range []authv1alpha1.CredentialType{authv1alpha1.APIKeyType, authv1alpha1.UserTokenType} {
		for _, e := range []authv1alpha1.Environment{authv1alpha1.LiveEnvironment, authv1alpha1.SandboxEnvironment} {
			counts[key{t, e}] = 0
		}
	}
	for i := range list.Items {
		counts[key{list.Items[i].CredentialType(), list.Items[i].Environment()}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(k.t), string(k.e))
	}
}
