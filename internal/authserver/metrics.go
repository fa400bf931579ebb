package authserver

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type serverMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentcred_auth_requests_total",
			Help: "Requests to the auth endpoint by endpoint, authentication method and HTTP status code.",
		}, []string{"endpoint", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentcred_auth_request_duration_seconds",
			Help:    "Time to answer a request to the auth endpoint, by endpoint.",
			Buckets: []float64{0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1},
		}, []string{"endpoint"}),
	}
}

func (m *serverMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

var statusText = map[int]string{200: "200", 400: "400", 401: "401", 403: "403", 405: "405", 429: "429", 500: "500", 503: "503"}

func (m *serverMetrics) observe(endpoint string, o outcome, d time.Duration) {
	code, ok := statusText[o.status]
	if !ok {
		code = strconv.Itoa(o.status)
	}
	m.requests.WithLabelValues(endpoint, string(o.method), code).Inc()
	m.duration.WithLabelValues(endpoint).Observe(d.Seconds())
}
