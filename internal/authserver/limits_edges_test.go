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
	// Clients: IPv4 (also when mapped into IPv6) by address, IPv6 by /64.
	for in, want := range map[string]string{"198.51.100.7": "198.51.100.7/32", "::ffff:198.51.100.7": "198.51.100.7/32", "2001:db8:1:2:3::4": "2001:db8:1:2::/64"} {
		if got := ClientOf(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("ClientOf(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestClientAddressAcrossHeaderLines(t *testing.T) {
	trusted, _ := ParseTrustedProxies("10.0.0.0/8")
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.1:80"
	r.Header.Add("X-Forwarded-For", "6.6.6.6")
	r.Header.Add("X-Forwarded-For", "1.2.3.4, 10.0.0.2")
	if got := ClientAddress(r, trusted).String(); got != "1.2.3.4" {
		t.Fatalf("ClientAddress over two header lines = %s, want 1.2.3.4", got)
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
	m.observe(0, outcome{MethodNone, http.StatusTeapot}, time.Millisecond)
	if n := testutil.ToFloat64(m.requests.WithLabelValues(endpoints[0], string(MethodNone), "418")); n != 1 {
		t.Fatalf("an unlisted status was counted %v times, want 1", n)
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
