package listener

import "github.com/prometheus/client_golang/prometheus"

// Metrics is an Observer exporting the listeners' connections.
type Metrics struct {
	open    *prometheus.GaugeVec
	refused *prometheus.CounterVec
}

// NewMetrics returns unregistered metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentcred_listener_open_connections",
			Help: "Connections open on each listener.",
		}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentcred_listener_refused_connections_total",
			Help: "Connections closed on accept because their source (per_source) or the listener (total) was at its bound.",
		}, []string{"listener", "reason"}),
	}
}

// Register adds the metrics to r.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.open, m.refused} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Refused counts a refused connection.
func (m *Metrics) Refused(listener, reason string) { m.refused.WithLabelValues(listener, reason).Inc() }

// Open moves the open-connection gauge.
func (m *Metrics) Open(listener string, delta int) {
	m.open.WithLabelValues(listener).Add(float64(delta))
}
