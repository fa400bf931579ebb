package authserver

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values the server reports; the counters for their combinations are
// resolved once, so a request costs no label hashing.
var (
	endpoints = []string{"verify", "authenticate", "tokenreview", "grpc"}
	// identities are the (method, environment) pairs a request can end
	// with: a credential of either environment, a refused attempt at a
	// method (environment none), or none at all.
	identities = []identity{
		{MethodAPIKey, "live"}, {MethodAPIKey, "sandbox"}, {MethodAPIKey, environmentNone},
		{MethodUserToken, "live"}, {MethodUserToken, "sandbox"}, {MethodUserToken, environmentNone},
		{MethodSession, "live"}, {MethodSession, "sandbox"}, {MethodSession, environmentNone},
		{MethodNone, environmentNone},
	}
	statuses = []int{200, 400, 401, 403, 405, 429, 500, 503}
)

// environmentNone labels requests that did not authenticate.
const environmentNone = "none"

// identity is how a request authenticated, as metrics label it.
type identity struct {
	method      Method
	environment string
}

type serverMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// counters[endpoint][identity][status] for the known label values.
	counters  [][][]prometheus.Counter
	observers []prometheus.Observer
}

func newServerMetrics() *serverMetrics {
	m := &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentcred_auth_requests_total",
			Help: "Requests to the auth endpoint by endpoint, authentication method (of a refused request: the method its credential's shape attempted, none if it carried none or several), the credential's environment (live, sandbox; none when it did not authenticate) and HTTP status code.",
		}, []string{"endpoint", "method", "environment", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentcred_auth_request_duration_seconds",
			Help:    "Time to answer a request to the auth endpoint, by endpoint.",
			Buckets: []float64{0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1},
		}, []string{"endpoint"}),
	}
	m.counters = make([][][]prometheus.Counter, len(endpoints))
	m.observers = make([]prometheus.Observer, len(endpoints))
	for e, endpoint := range endpoints {
		m.observers[e] = m.duration.WithLabelValues(endpoint)
		m.counters[e] = make([][]prometheus.Counter, len(identities))
		for ii, id := range identities {
			m.counters[e][ii] = make([]prometheus.Counter, len(statuses))
			for si, status := range statuses {
				m.counters[e][ii][si] = m.requests.WithLabelValues(endpoint, string(id.method), id.environment, strconv.Itoa(status))
			}
		}
	}
	return m
}

func (m *serverMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func indexOf[T comparable](list []T, v T) int {
	for i, x := range list {
		if x == v {
			return i
		}
	}
	return -1
}

func (m *serverMetrics) observe(endpoint int, o outcome, d time.Duration) {
	m.observers[endpoint].Observe(d.Seconds())
	id := o.identity()
	ii, si := indexOf(identities, id), indexOf(statuses, o.status)
	if ii < 0 || si < 0 {
		m.requests.WithLabelValues(endpoints[endpoint], string(id.method), id.environment, strconv.Itoa(o.status)).Inc()
		return
	}
	m.counters[endpoint][ii][si].Inc()
}

// registerIndexMetrics exports the hash index's state, read at scrape time.
func registerIndexMetrics(reg prometheus.Registerer, index *Index) error {
	synced := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "agentcred_auth_index_synced",
		Help: "1 once the auth endpoint's hash index holds every hash Secret that existed when it started (/readyz passes), else 0.",
	}, func() float64 {
		if index.Synced() {
			return 1
		}
		return 0
	})
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "agentcred_auth_index_credentials",
		Help: "Credentials in the auth endpoint's hash index.",
	}, func() float64 { return float64(index.Len()) })
	for _, c := range []prometheus.Collector{synced, size} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// certificateExpiryDesc is the expiry of the certificate the endpoint
// serves, as its certificate watcher holds it: a pod whose certificate
// files stopped being renewed shows it here before clients refuse it.
var certificateExpiryDesc = prometheus.NewDesc("agentcred_auth_certificate_expiration_timestamp_seconds",
	"When the TLS certificate the auth endpoint serves expires (Unix seconds); absent without TLS.", nil, nil)

// certificateExpiry exports certificateExpiryDesc at scrape time, and
// nothing while the endpoint serves no certificate.
type certificateExpiry struct{ s *Server }

func (c certificateExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- certificateExpiryDesc }

func (c certificateExpiry) Collect(ch chan<- prometheus.Metric) {
	w := c.s.served.Load()
	if w == nil {
		return
	}
	cert, err := w.GetCertificate(nil)
	if err != nil || cert == nil || cert.Leaf == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(certificateExpiryDesc, prometheus.GaugeValue, float64(cert.Leaf.NotAfter.Unix()))
}
