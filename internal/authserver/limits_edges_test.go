package authserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"

	"github.com/agrenting/agentcred/internal/credential"
)

// The throttle's arithmetic and the endpoint's size limits, to the exact
// value, so that an off-by-one or a wrong operator is caught.

func TestFailureLimiterArithmetic(t *testing.T) {
	l := NewFailureLimiter(0.5, 1)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	addr := netip.MustParseAddr("203.0.113.5")
	if ok, _ := l.Fail(addr, now); !ok {
		t.Fatal("the burst of 1 was refused")
	}
	ok, wait := l.Fail(addr, now)
	if ok || wait != 2*time.Second {
		t.Fatalf("empty bucket: %v, wait %v; want refused, 2s (one token at 0.5/s)", ok, wait)
	}
	if got := retryAfterSeconds(wait); got != 2 {
		t.Fatalf("Retry-After for 2s = %d", got)
	}
	// Half a token after one second: still refused, one more second to go.
	if ok, wait := l.Fail(addr, now.Add(time.Second)); ok || wait != time.Second {
		t.Fatalf("after 1s: %v, %v; want refused, 1s", ok, wait)
	}
	if ok, _ := l.Fail(addr, now.Add(3*time.Second)); !ok {
		t.Fatal("a refilled token was refused")
	}
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2} {
		if got := retryAfterSeconds(d); got != want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestClientAddressAcrossHeaderLines(t *testing.T) {
	trusted, _ := ParseTrustedProxies("10.0.0.0/8")
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.1:80"
	r.Header.Add("X-Forwarded-For", "6.6.6.6, 1.2.3.4")
	r.Header.Add("X-Forwarded-For", "10.0.0.2")
	if got := ClientAddress(r, trusted).String(); got != "1.2.3.4" {
		t.Fatalf("ClientAddress over two header lines = %s, want 1.2.3.4 (the right-most untrusted, on the earlier line)", got)
	}
}

func TestTokenReviewBodyLimit(t *testing.T) {
	ts := startServer(t)
	review, _ := json.Marshal(authnv1.TokenReview{TypeMeta: metaTypeTokenReview(), Spec: authnv1.TokenReviewSpec{Token: ts.apiKey}})
	pad := func(n int) string { return string(review) + strings.Repeat(" ", n-len(review)) }
	if resp, body := ts.do(t, "POST", "/tokenreview", hdr(), pad(maxTokenReviewBody)); resp.StatusCode != 200 || !strings.Contains(body, `"authenticated":true`) {
		t.Fatalf("a review of exactly %d bytes: %d %s", maxTokenReviewBody, resp.StatusCode, body)
	}
	if resp, _ := ts.do(t, "POST", "/tokenreview", hdr(), pad(maxTokenReviewBody+1)); resp.StatusCode != 400 {
		t.Fatalf("a review one byte over the limit: %d", resp.StatusCode)
	}
}

func TestErrorAndMetricsFallbacks(t *testing.T) {
	if got := ErrRateLimited.Error(); got != "rate_limited: "+ErrRateLimited.Message {
		t.Fatalf("Error() = %q", got)
	}
	m := newServerMetrics()
	m.observe(0, outcome{method: MethodNone, status: http.StatusTeapot}, time.Millisecond)
	if n := testutil.ToFloat64(m.requests.WithLabelValues(endpoints[0], string(MethodNone), environmentNone, "418")); n != 1 {
		t.Fatalf("an unlisted status was counted %v times, want 1", n)
	}
	m.observe(1, outcome{method: MethodSession, status: http.StatusOK, environment: credential.Sandbox}, time.Millisecond)
	if n := testutil.ToFloat64(m.requests.WithLabelValues(endpoints[1], string(MethodSession), "sandbox", "200")); n != 1 {
		t.Fatalf("a sandbox session was counted %v times, want 1", n)
	}
	m.observe(1, outcome{method: "", status: http.StatusOK}, time.Millisecond)
	if n := testutil.ToFloat64(m.requests.WithLabelValues(endpoints[1], string(MethodNone), environmentNone, "200")); n != 1 {
		t.Fatalf("an outcome without a method was counted %v times as none, want 1", n)
	}
	if indexOf([]int{1, 2}, 3) != -1 || indexOf([]int{1, 2}, 2) != 1 {
		t.Fatal("indexOf")
	}
}

func TestSessionTTLDefaultsToAnHour(t *testing.T) {
	srv, err := New(NewIndex(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if srv.opts.SessionTTL != time.Hour {
		t.Fatalf("default session TTL %v", srv.opts.SessionTTL)
	}
}

// TestEveryErrorIsJSON: unknown paths and wrong methods answer in the same
// JSON error format as every other error, with Allow on a 405, and 405s are
// counted for their endpoint.
func TestEveryErrorIsJSON(t *testing.T) {
	ts := startServer(t)
	for _, tt := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/nope", 404, "not_found", ""},
		{"GET", "/auth", 404, "not_found", ""},
		{"GET", "/auth/authenticate", 405, "method_not_allowed", "POST"},
		{"PUT", "/tokenreview", 405, "method_not_allowed", "POST"},
		{"POST", "/healthz", 405, "method_not_allowed", "GET"},
		{"DELETE", "/readyz", 405, "method_not_allowed", "GET"},
	} {
		resp, body := ts.do(t, tt.method, tt.path, hdr(), "")
		if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/json" || errorCode(t, body) != tt.code {
			t.Errorf("%s %s: %d %q %s", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if resp.Header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, resp.Header.Get("Allow"), tt.allow)
		}
	}
	if n := testutil.ToFloat64(ts.srv.metrics.requests.WithLabelValues("authenticate", string(MethodNone), environmentNone, "405")); n != 1 {
		t.Errorf("405s on /auth/authenticate counted %v times, want 1", n)
	}
	// HEAD of a GET endpoint still works.
	if resp, _ := ts.do(t, "HEAD", "/healthz", hdr(), ""); resp.StatusCode != 200 {
		t.Errorf("HEAD /healthz: %d", resp.StatusCode)
	}
}

// TestHTTPServerBounds: every phase of a connection has a deadline and
// headers a size limit.
func TestHTTPServerBounds(t *testing.T) {
	srv := (&Server{}).httpServer()
	if srv.ReadHeaderTimeout != 5*time.Second || srv.ReadTimeout != 10*time.Second || srv.WriteTimeout != 10*time.Second ||
		srv.IdleTimeout != 30*time.Second || srv.MaxHeaderBytes != 32<<10 {
		t.Fatalf("server bounds: %+v", srv)
	}
}

// TestAuthRequestMode: /auth/verify?mode=auth_request answers every refusal
// with 401 or 403 and the real status and code in headers; an unknown mode
// is a 400.
func TestAuthRequestMode(t *testing.T) {
	ts := startServer(t)
	if resp, _ := ts.do(t, "GET", "/auth/verify?mode=auth_request", hdr("X-API-Key", "ak_wrong"), ""); resp.StatusCode != 401 || resp.Header.Get(HeaderErrorStatus) != "401" {
		t.Fatalf("a wrong key in auth_request mode: %d", resp.StatusCode)
	}
	// Two more guesses spend the client's burst of 3.
	for range 2 {
		ts.do(t, "GET", "/auth/verify?mode=auth_request", hdr("X-API-Key", "ak_wrong"), "")
	}
	for _, tt := range []struct {
		h            http.Header
		status       int
		realStatus   string
		code         string
		wantRetryHdr bool
	}{
		// Real refusals keep their own answer although the burst is spent:
		// only guesses are throttled.
		{hdr("X-API-Key", ts.apiKey, "Authorization", "Bearer x"), 401, "400", "conflicting_credentials", false},
		{hdr("Authorization", "Bearer "+ts.multiToken), 401, "400", "agent_id_required", false},
		{hdr("Authorization", "Bearer "+ts.multiToken, "X-Agent-ID", agentC), 403, "403", "agent_not_permitted", false},
		{hdr("X-API-Key", "ak_wrong"), 401, "429", "rate_limited", true},
	} {
		resp, body := ts.do(t, "GET", "/auth/verify?mode=auth_request", tt.h, "")
		if resp.StatusCode != tt.status || resp.Header.Get(HeaderErrorStatus) != tt.realStatus || resp.Header.Get(HeaderErrorCode) != tt.code {
			t.Errorf("%v: %d %s=%q %s=%q %s", tt.h, resp.StatusCode, HeaderErrorStatus, resp.Header.Get(HeaderErrorStatus), HeaderErrorCode, resp.Header.Get(HeaderErrorCode), body)
		}
		if tt.wantRetryHdr && resp.Header.Get("Retry-After") == "" {
			t.Errorf("%v: no Retry-After", tt.h)
		}
	}
	if resp, _ := ts.do(t, "GET", "/auth/verify?mode=auth_request", hdr("X-API-Key", ts.apiKey), ""); resp.StatusCode != 200 || resp.Header.Get(HeaderErrorStatus) != "" {
		t.Errorf("a valid key in auth_request mode: %d", resp.StatusCode)
	}
	if resp, body := ts.do(t, "GET", "/auth/verify?mode=nginx", hdr("X-API-Key", ts.apiKey), ""); resp.StatusCode != 400 || errorCode(t, body) != "invalid_request" {
		t.Errorf("unknown mode: %d %s", resp.StatusCode, body)
	}
}

func TestIndexMetricsAreRegistered(t *testing.T) {
	ts := startServer(t)
	want := map[string]float64{"agentcred_auth_index_synced": 0, "agentcred_auth_index_credentials": float64(ts.verifier.Index.Len())}
	families, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if v, ok := want[f.GetName()]; ok {
			if got := f.GetMetric()[0].GetGauge().GetValue(); got != v {
				t.Errorf("%s = %v, want %v", f.GetName(), got, v)
			}
			delete(want, f.GetName())
		}
	}
	if len(want) > 0 {
		t.Fatalf("not registered: %v", want)
	}
	ts.verifier.Index.MarkSynced()
	families, err = ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "agentcred_auth_index_synced" && f.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Fatal("agentcred_auth_index_synced stayed 0 after the index synced")
		}
	}
}
