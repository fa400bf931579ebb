package authserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/session"
)

type testServer struct {
	*fixture
	url   string
	clock *clocktesting.FakeClock
	reg   *prometheus.Registry
	logs  *bytes.Buffer
	srv   *Server
}

func startServer(t *testing.T, mutate ...func(*Options)) *testServer {
	t.Helper()
	f := newFixture(t)
	ts := &testServer{fixture: f, clock: clocktesting.NewFakeClock(now), reg: prometheus.NewRegistry(), logs: &bytes.Buffer{}}
	opts := Options{
		SessionTTL: time.Hour, FailureRate: 1, FailureBurst: 3, Clock: ts.clock, Registerer: ts.reg,
		Log: funcr.New(func(prefix, args string) { ts.logs.WriteString(prefix + args + "\n") }, funcr.Options{Verbosity: 2}),
	}
	for _, m := range mutate {
		m(&opts)
	}
	srv, err := New(f.verifier.Index, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetKeyring(&session.Keyring{Keys: []session.Key{signing}})
	ts.srv = srv
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	ts.url = hs.URL
	return ts
}

func (ts *testServer) do(t *testing.T, method, path string, h http.Header, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, ts.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q is not the documented JSON: %v", body, err)
	}
	return e.Error.Code
}

func TestVerifyEndpoint(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.FailureRate = 0 }) // throttling has its own test
	tests := []struct {
		name   string
		method string
		path   string
		h      http.Header
		status int
		code   string
	}{
		{"GET with API key", "GET", "/auth/verify", hdr("X-API-Key", ts.apiKey), 200, ""},
		{"POST with API key", "POST", "/auth/verify", hdr("X-API-Key", ts.apiKey), 200, ""},
		{"sub-path for auth-url style callers", "GET", "/auth/verify/some/original/path", hdr("X-API-Key", ts.apiKey), 200, ""},
		{"missing", "GET", "/auth/verify", hdr(), 401, "missing_credentials"},
		{"conflict", "GET", "/auth/verify", hdr("X-API-Key", ts.apiKey, "Api-Key", ts.oldAPIKey), 400, "conflicting_credentials"},
		{"agent required", "GET", "/auth/verify", hdr("Authorization", "Bearer "+ts.multiToken), 400, "agent_id_required"},
		{"invalid agent id", "GET", "/auth/verify", hdr("Authorization", "Bearer "+ts.multiToken, "X-Agent-ID", "x"), 400, "invalid_agent_id"},
		{"not permitted", "GET", "/auth/verify", hdr("Authorization", "Bearer "+ts.multiToken, "X-Agent-ID", agentC), 403, "agent_not_permitted"},
		{"expired session", "GET", "/auth/verify", hdr("Authorization", "Bearer "+ts.expired), 401, "expired_session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ts.do(t, tt.method, tt.path, tt.h, "")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if tt.status == 200 {
				if resp.Header.Get("X-Auth-Agent-ID") != agentA || resp.Header.Get("X-Auth-Method") != "api_key" ||
					resp.Header.Get("X-Auth-Credential") != "team-a/billing" || len(resp.Header.Get("X-Auth-Key-ID")) != 12 {
					t.Fatalf("identity headers wrong: %v", resp.Header)
				}
				// Every identity header is present, empty when it has no
				// value, so proxies that copy them overwrite client-sent ones.
				for _, h := range []string{HeaderAgentID, HeaderMethod, HeaderKeyID, HeaderCredential, HeaderUser, HeaderEnvironment} {
					if _, ok := resp.Header[h]; !ok {
						t.Fatalf("a 200 without %s: %v", h, resp.Header)
					}
				}
				return
			}
			if got := errorCode(t, body); got != tt.code {
				t.Fatalf("code %q, want %q", got, tt.code)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Fatal("error is not JSON")
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	resp, _ := ts.do(t, "GET", "/auth/verify", hdr("Authorization", "Bearer "+ts.multiToken, "X-Agent-ID", agentB), "")
	if resp.Header.Get("X-Auth-User") != "alice@example.com" || resp.Header.Get("X-Auth-Method") != "user_token" {
		t.Fatalf("user token identity headers wrong: %v", resp.Header)
	}
	if n := testutil.ToFloat64(ts.srv.metrics.requests.WithLabelValues("verify", "api_key", "live", "200")); n != 3 {
		t.Fatalf("agentcred_auth_requests_total{verify,api_key,live,200} = %v, want 3", n)
	}
	if testutil.CollectAndCount(ts.reg, "agentcred_auth_request_duration_seconds") == 0 {
		t.Fatal("no duration histogram")
	}
}

// TestRefusalsAreLabelledWithTheAttemptedMethod: a refused request counts
// under the method its credential's shape attempted (environment none), so
// a dashboard tells a broken API-key client from a broken session client;
// one without a credential, or with several, counts under none.
func TestRefusalsAreLabelledWithTheAttemptedMethod(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.FailureBurst = 100 })
	mistyped := ts.apiKey[:len(ts.apiKey)-1] + "0"
	if mistyped == ts.apiKey {
		mistyped = ts.apiKey[:len(ts.apiKey)-1] + "1"
	}
	review := func(token string) string {
		raw, _ := json.Marshal(authnv1.TokenReview{TypeMeta: metaTypeTokenReview(), Spec: authnv1.TokenReviewSpec{Token: token}})
		return string(raw)
	}
	for _, tt := range []struct {
		name, verb, path string
		h                http.Header
		body             string
		endpoint, method string
		code             string
	}{
		{"mistyped API key", "GET", "/auth/verify", hdr("X-API-Key", mistyped), "", "verify", "api_key", "401"},
		{"unknown user token", "GET", "/auth/verify", hdr("Authorization", "Bearer ap_unknown"), "", "verify", "user_token", "401"},
		{"user token in X-API-Key", "GET", "/auth/verify", hdr("X-API-Key", "ap_unknown"), "", "verify", "user_token", "401"},
		{"expired session", "GET", "/auth/verify", hdr("Authorization", "Bearer "+ts.expired), "", "verify", "session", "401"},
		{"no credential", "GET", "/auth/verify", hdr(), "", "verify", "none", "401"},
		{"two credentials", "GET", "/auth/verify", hdr("X-API-Key", ts.apiKey, "Authorization", "Bearer ap_x"), "", "verify", "none", "400"},
		{"no known shape", "GET", "/auth/verify", hdr("Authorization", "Bearer eyJhbGciOi"), "", "verify", "none", "401"},
		{"session minted from a wrong key", "POST", "/auth/authenticate", hdr("X-API-Key", mistyped), "", "authenticate", "api_key", "401"},
		{"wrong verb", "GET", "/auth/authenticate", hdr("X-API-Key", ts.apiKey), "", "authenticate", "api_key", "405"},
		{"unknown key in a TokenReview", "POST", "/tokenreview", hdr(), review("ak_wrong"), "tokenreview", "api_key", "200"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			counter := ts.srv.metrics.requests.WithLabelValues(tt.endpoint, tt.method, environmentNone, tt.code)
			before := testutil.ToFloat64(counter)
			resp, body := ts.do(t, tt.verb, tt.path, tt.h, tt.body)
			if strconv.Itoa(resp.StatusCode) != tt.code {
				t.Fatalf("status %d, want %s (%s)", resp.StatusCode, tt.code, body)
			}
			if got := testutil.ToFloat64(counter) - before; got != 1 {
				t.Fatalf(`agentcred_auth_requests_total{endpoint=%q,method=%q,environment="none",code=%q} grew by %v, want 1`, tt.endpoint, tt.method, tt.code, got)
			}
		})
	}
}

func TestFailedAttemptsAreThrottledPerClient(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	attacker := hdr("X-API-Key", "ak_wrong", "X-Forwarded-For", "203.0.113.7")
	for i := range 3 {
		if resp, _ := ts.do(t, "GET", "/auth/verify", attacker, ""); resp.StatusCode != 401 {
			t.Fatalf("attempt %d: status %d, want 401 within the burst", i, resp.StatusCode)
		}
	}
	resp, body := ts.do(t, "GET", "/auth/verify", attacker, "")
	if resp.StatusCode != 429 || errorCode(t, body) != "rate_limited" || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("after the burst: %d %s Retry-After=%q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	// A valid key from the same address is never throttled.
	ok := hdr("X-API-Key", ts.apiKey, "X-Forwarded-For", "203.0.113.7")
	if resp, _ := ts.do(t, "GET", "/auth/verify", ok, ""); resp.StatusCode != 200 {
		t.Fatalf("a valid key was throttled: %d", resp.StatusCode)
	}
	// Another client behind the same proxy is unaffected.
	if resp, _ := ts.do(t, "GET", "/auth/verify", hdr("X-API-Key", "ak_wrong", "X-Forwarded-For", "198.51.100.1"), ""); resp.StatusCode != 401 {
		t.Fatalf("an innocent client was throttled: %d", resp.StatusCode)
	}
	// Time refills the bucket.
	ts.clock.Step(time.Second)
	if resp, _ := ts.do(t, "GET", "/auth/verify", attacker, ""); resp.StatusCode != 401 {
		t.Fatalf("after a second: %d, want 401", resp.StatusCode)
	}
}

// TestThrottlingHasNoGaps: failed TokenReviews drain the same budget as
// failed verifications; an IPv6 client cannot get fresh buckets by moving
// within its /64; a full table evicts the least recently used client only,
// never resetting the bucket of a client being throttled.
func TestThrottlingHasNoGaps(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	review, _ := json.Marshal(authnv1.TokenReview{TypeMeta: metaTypeTokenReview(), Spec: authnv1.TokenReviewSpec{Token: "ak_wrong"}})
	from := func(addr string) http.Header { return hdr("X-Forwarded-For", addr) }
	for i := range 3 {
		if resp, _ := ts.do(t, "POST", "/tokenreview", from("203.0.113.9"), string(review)); resp.StatusCode != 200 {
			t.Fatalf("review %d: %d, want 200 (unauthenticated) within the burst", i, resp.StatusCode)
		}
	}
	// Past the burst a review is still answered 200, unauthenticated with
	// the throttling message: kube-apiserver retries a 429.
	resp, body := ts.do(t, "POST", "/tokenreview", from("203.0.113.9"), string(review))
	if resp.StatusCode != 200 || !strings.Contains(body, `"error":"`+ErrRateLimited.Message+`"`) || strings.Contains(body, `"authenticated":true`) {
		t.Fatalf("failed reviews past the burst: %d %s", resp.StatusCode, body)
	}
	// And the budget is the one /auth/verify spends.
	if resp, _ := ts.do(t, "GET", "/auth/verify", hdr("X-API-Key", "ak_wrong", "X-Forwarded-For", "203.0.113.9"), ""); resp.StatusCode != 429 {
		t.Fatalf("a guess at /auth/verify after failed reviews: %d, want 429", resp.StatusCode)
	}
	good, _ := json.Marshal(authnv1.TokenReview{TypeMeta: metaTypeTokenReview(), Spec: authnv1.TokenReviewSpec{Token: ts.apiKey}})
	if _, out := ts.do(t, "POST", "/tokenreview", from("203.0.113.9"), string(good)); !strings.Contains(out, `"authenticated":true`) {
		t.Fatalf("a valid token was throttled: %s", out)
	}
	// The same /64, other addresses: one bucket.
	for i := range 3 {
		ts.do(t, "GET", "/auth/verify", hdr("X-API-Key", "ak_wrong", "X-Forwarded-For", fmt.Sprintf("2001:db8:1:2::%x", i+1)), "")
	}
	if resp, _ := ts.do(t, "GET", "/auth/verify", hdr("X-API-Key", "ak_wrong", "X-Forwarded-For", "2001:db8:1:2:ffff::1"), ""); resp.StatusCode != 429 {
		t.Fatalf("a fresh address in the same /64 got a fresh bucket: %d", resp.StatusCode)
	}
	if resp, _ := ts.do(t, "GET", "/auth/verify", hdr("X-API-Key", "ak_wrong", "X-Forwarded-For", "2001:db8:1:3::1"), ""); resp.StatusCode != 401 {
		t.Fatalf("another /64 was throttled: %d", resp.StatusCode)
	}
}

func TestLimiterEvictsLeastRecentlyUsed(t *testing.T) {
	l := NewFailureLimiter(1, 2)
	l.MaxClients = 3
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	victim, attacker := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("203.0.113.1")
	l.Fail(victim, now)
	for range 2 {
		l.Fail(attacker, now)
	}
	if ok, _ := l.Fail(attacker, now); ok {
		t.Fatal("the attacker's burst did not run out")
	}
	// Fresh clients fill the table; the attacker keeps failing, so it stays.
	for i := range 10 {
		l.Fail(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), now)
		if ok, _ := l.Fail(attacker, now); ok {
			t.Fatalf("filling the table un-throttled the attacker (after %d fresh clients)", i+1)
		}
	}
	if n := l.clients(); n > 3 {
		t.Fatalf("%d buckets, want at most 3", n)
	}
}

func TestClientAddress(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 192.168.1.1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		remote, xff, want string
	}{
		{"203.0.113.9:1234", "", "203.0.113.9"},
		{"203.0.113.9:1234", "1.2.3.4", "203.0.113.9"}, // untrusted peer: XFF ignored
		{"10.1.2.3:80", "1.2.3.4", "1.2.3.4"},
		{"10.1.2.3:80", "6.6.6.6, 1.2.3.4, 10.9.9.9", "1.2.3.4"}, // right-most untrusted
		{"192.168.1.1:80", "garbage", "192.168.1.1"},
		{"10.1.2.3:80", "", "10.1.2.3"},
		{"[::ffff:10.1.2.3]:80", "5.6.7.8", "5.6.7.8"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := ClientAddress(r, trusted); got.String() != tt.want {
			t.Errorf("ClientAddress(%s, %q) = %s, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
	if _, err := ParseTrustedProxies("10.0.0.0/33"); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestAuthenticateMintsSessions(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.SessionTTL = 2 * time.Hour; o.FailureRate = 0 })
	resp, body := ts.do(t, "POST", "/auth/authenticate", hdr("X-API-Key", ts.apiKey), "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var tok tokenResponse
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Token, "as_") || tok.TokenType != "Bearer" || tok.AgentID != agentA || tok.ExpiresIn != 7200 {
		t.Fatalf("token response %+v", tok)
	}
	if _, err := time.Parse(time.RFC3339, tok.ExpiresAt); err != nil {
		t.Fatalf("expires_at %q: %v", tok.ExpiresAt, err)
	}
	resp, _ = ts.do(t, "GET", "/auth/verify", hdr("Authorization", "Bearer "+tok.Token), "")
	if resp.StatusCode != 200 || resp.Header.Get("X-Auth-Method") != "session" || resp.Header.Get("X-Auth-Agent-ID") != agentA {
		t.Fatalf("minted session did not verify: %d %v", resp.StatusCode, resp.Header)
	}
	ts.clock.Step(2 * time.Hour)
	resp, body = ts.do(t, "GET", "/auth/verify", hdr("Authorization", "Bearer "+tok.Token), "")
	if resp.StatusCode != 401 || errorCode(t, body) != "expired_session" {
		t.Fatalf("after its TTL: %d %s", resp.StatusCode, body)
	}

	// Multi-agent tokens need X-Agent-ID to mint.
	resp, body = ts.do(t, "POST", "/auth/authenticate", hdr("Authorization", "Bearer "+ts.multiToken), "")
	if resp.StatusCode != 400 || errorCode(t, body) != "agent_id_required" {
		t.Fatalf("multi-agent mint without X-Agent-ID: %d %s", resp.StatusCode, body)
	}
	resp, body = ts.do(t, "POST", "/auth/authenticate", hdr("Authorization", "Bearer "+ts.multiToken, "X-Agent-ID", agentB), "")
	if resp.StatusCode != 200 || !strings.Contains(body, agentB) {
		t.Fatalf("multi-agent mint: %d %s", resp.StatusCode, body)
	}
	// Only the current key mints: a key in its grace period is refused.
	ts.clock.SetTime(now)
	resp, body = ts.do(t, "POST", "/auth/authenticate", hdr("X-API-Key", ts.oldAPIKey), "")
	if resp.StatusCode != 401 || errorCode(t, body) != "invalid_credentials" {
		t.Fatalf("mint with a key in grace: %d %s", resp.StatusCode, body)
	}
	resp, body = ts.do(t, "POST", "/auth/authenticate", hdr("Authorization", "Bearer "+ts.session), "")
	if resp.StatusCode != 401 || !strings.Contains(body, "not a session token") {
		t.Fatalf("mint with a session: %d %s", resp.StatusCode, body)
	}
	// GET is not allowed.
	if resp, _ := ts.do(t, "GET", "/auth/authenticate", hdr("X-API-Key", ts.apiKey), ""); resp.StatusCode != 405 {
		t.Fatalf("GET /auth/authenticate: %d", resp.StatusCode)
	}
	for _, secret := range []string{ts.apiKey, ts.multiToken, tok.Token} {
		if strings.Contains(ts.logs.String(), secret) {
			t.Fatal("the server logged a credential")
		}
	}
}

func TestAuthenticateCapsTTLPerCredential(t *testing.T) {
	ts := startServer(t)
	e, _ := ts.verifier.Index.ByCredential("team-a/billing")
	capped := *e
	capped.SessionTTL = 5 * time.Minute
	ts.verifier.Index.Put(&capped)
	_, body := ts.do(t, "POST", "/auth/authenticate", hdr("X-API-Key", ts.apiKey), "")
	var tok tokenResponse
	_ = json.Unmarshal([]byte(body), &tok)
	if tok.ExpiresIn != 300 {
		t.Fatalf("expires_in = %d, want 300 (spec.sessionTTL caps --session-ttl)", tok.ExpiresIn)
	}
}

func TestAuthenticateWithoutSigningKeys(t *testing.T) {
	ts := startServer(t)
	ts.srv.SetKeyring(nil)
	resp, body := ts.do(t, "POST", "/auth/authenticate", hdr("X-API-Key", ts.apiKey), "")
	if resp.StatusCode != 503 || errorCode(t, body) != "sessions_unavailable" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

func TestTokenReview(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.TokenReviewAudiences = []string{"api", "other"} })
	reviewFor := func(token string, audiences ...string) authnv1.TokenReview {
		body, _ := json.Marshal(authnv1.TokenReview{
			TypeMeta: metaTypeTokenReview(), Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences},
		})
		resp, out := ts.do(t, "POST", "/tokenreview", hdr("Content-Type", "application/json"), string(body))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		var r authnv1.TokenReview
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	review := func(token string) authnv1.TokenReview { return reviewFor(token, "api") }
	r := review(ts.apiKey)
	if !r.Status.Authenticated || r.Status.User.Username != "agentcred:agent:"+agentA || r.Status.User.UID != agentA ||
		r.Status.User.Groups[1] != "agentcred:namespace:team-a" || r.Status.User.Groups[2] != "agentcred:environment:live" || r.Status.Audiences[0] != "api" {
		t.Fatalf("API key review: %+v", r.Status)
	}
	r = review(ts.multiToken)
	if !r.Status.Authenticated || r.Status.User.Username != "agentcred:user:alice@example.com" || len(r.Status.User.Extra[ExtraAgentIDs]) != 2 {
		t.Fatalf("user token review: %+v", r.Status)
	}
	r = review("ak_nope")
	if r.Status.Authenticated || r.Status.Error == "" {
		t.Fatalf("bad token review: %+v", r.Status)
	}
	// Audiences: only the configured ones are vouched for; none asked is
	// the caller's own audience.
	if r = reviewFor(ts.apiKey, "vault"); r.Status.Authenticated || r.Status.User.Username != "" || !strings.Contains(r.Status.Error, "--tokenreview-audiences") {
		t.Fatalf("a review for another audience was vouched for: %+v", r.Status)
	}
	if r = reviewFor(ts.apiKey, "vault", "other"); !r.Status.Authenticated || len(r.Status.Audiences) != 1 || r.Status.Audiences[0] != "other" {
		t.Fatalf("mixed audiences: %+v", r.Status)
	}
	if r = reviewFor(ts.apiKey); !r.Status.Authenticated || len(r.Status.Audiences) != 0 {
		t.Fatalf("no audiences asked: %+v", r.Status)
	}
	none := startServer(t)
	none.verifier = ts.verifier
	raw, _ := json.Marshal(authnv1.TokenReview{TypeMeta: metaTypeTokenReview(), Spec: authnv1.TokenReviewSpec{Token: ts.apiKey, Audiences: []string{"api"}}})
	if _, out := none.do(t, "POST", "/tokenreview", hdr(), string(raw)); strings.Contains(out, `"authenticated":true`) {
		t.Fatalf("with no --tokenreview-audiences a review for an audience was vouched for: %s", out)
	}
	resp, body := ts.do(t, "POST", "/tokenreview", hdr(), "{not json")
	if resp.StatusCode != 400 || errorCode(t, body) != "invalid_request" {
		t.Fatalf("garbage review: %d %s", resp.StatusCode, body)
	}
}

func TestReadyzFollowsTheIndex(t *testing.T) {
	ts := startServer(t)
	if resp, _ := ts.do(t, "GET", "/readyz", nil, ""); resp.StatusCode != 503 {
		t.Fatalf("readyz before sync: %d", resp.StatusCode)
	}
	ts.verifier.Index.MarkSynced()
	if resp, _ := ts.do(t, "GET", "/readyz", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("readyz after sync: %d", resp.StatusCode)
	}
	if resp, _ := ts.do(t, "GET", "/healthz", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
}

func TestSessionsEndWithTheCredentialsExpiry(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.SessionTTL = time.Hour; o.FailureRate = 0 })
	resp, body := ts.do(t, "POST", "/auth/authenticate", hdr("X-API-Key", ts.expiringKey), "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var tok tokenResponse
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresIn != 1 || tok.ExpiresAt != now.Add(time.Second).Format(time.RFC3339) {
		t.Fatalf("a session must not outlive spec.expiresAt: %+v", tok)
	}
	ts.clock.Step(time.Second)
	resp, body = ts.do(t, "GET", "/auth/verify", hdr("Authorization", "Bearer "+tok.Token), "")
	// The session ran out with its credential; asking for a new one says why.
	if resp.StatusCode != 401 || errorCode(t, body) != "expired_session" {
		t.Fatalf("after the credential's expiry: %d %s", resp.StatusCode, body)
	}
	resp, body = ts.do(t, "POST", "/auth/authenticate", hdr("X-API-Key", ts.expiringKey), "")
	if resp.StatusCode != 401 || errorCode(t, body) != "expired_credentials" ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `error_description="credential expired"`) {
		t.Fatalf("minting with an expired key: %d %s %v", resp.StatusCode, body, resp.Header)
	}
}

// TestEnvironmentRoutes: every environment × route combination of
// ?environment=, on /auth/verify (plain and forward-auth) and
// /auth/authenticate, and X-Auth-Environment on every 200.
func TestEnvironmentRoutes(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.FailureRate = 0 })
	creds := map[string]struct {
		h   http.Header
		env string
	}{
		"live key":        {hdr("X-API-Key", ts.apiKey), "live"},
		"live session":    {hdr("Authorization", "Bearer "+ts.session), "live"},
		"sandbox key":     {hdr("X-API-Key", ts.sandboxKey), "sandbox"},
		"sandbox token":   {hdr("Authorization", "Bearer "+ts.sandboxToken), "sandbox"},
		"sandbox session": {hdr("Authorization", "Bearer "+ts.sandboxSession), "sandbox"},
	}
	for name, c := range creds {
		for _, route := range []string{"", "live", "sandbox"} {
			for _, mode := range []string{"", "auth_request"} {
				q := []string{}
				if route != "" {
					q = append(q, "environment="+route)
				}
				if mode != "" {
					q = append(q, "mode="+mode)
				}
				path := "/auth/verify"
				if len(q) > 0 {
					path += "?" + strings.Join(q, "&")
				}
				t.Run(name+" "+path, func(t *testing.T) {
					resp, body := ts.do(t, "GET", path, c.h, "")
					if route == "" || route == c.env {
						if resp.StatusCode != 200 || resp.Header.Get(HeaderEnvironment) != c.env {
							t.Fatalf("%d, X-Auth-Environment %q: %s", resp.StatusCode, resp.Header.Get(HeaderEnvironment), body)
						}
						return
					}
					if resp.StatusCode != 403 || errorCode(t, body) != "environment_not_permitted" {
						t.Fatalf("a %s credential on a %s-only route: %d %s", c.env, route, resp.StatusCode, body)
					}
					if mode == "auth_request" && resp.Header.Get(HeaderErrorCode) != "environment_not_permitted" {
						t.Fatalf("forward-auth refusal lacks %s: %v", HeaderErrorCode, resp.Header)
					}
				})
			}
		}
	}
	// Minting: the same rule; a sandbox key mints sandbox sessions.
	for _, tt := range []struct {
		path, key string
		status    int
	}{
		{"/auth/authenticate?environment=live", ts.apiKey, 200},
		{"/auth/authenticate?environment=live", ts.sandboxKey, 403},
		{"/auth/authenticate?environment=sandbox", ts.sandboxKey, 200},
		{"/auth/authenticate?environment=sandbox", ts.apiKey, 403},
		{"/auth/authenticate?environment=prod", ts.apiKey, 400},
	} {
		resp, body := ts.do(t, "POST", tt.path, hdr("X-API-Key", tt.key), "")
		if resp.StatusCode != tt.status {
			t.Errorf("POST %s: %d, want %d (%s)", tt.path, resp.StatusCode, tt.status, body)
		}
	}
	resp, body := ts.do(t, "POST", "/auth/authenticate", hdr("X-API-Key", ts.sandboxKey), "")
	var tok tokenResponse
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &tok) != nil {
		t.Fatalf("minting from a sandbox key: %d %s", resp.StatusCode, body)
	}
	resp, _ = ts.do(t, "GET", "/auth/verify?environment=live", hdr("Authorization", "Bearer "+tok.Token), "")
	if resp.StatusCode != 403 {
		t.Fatalf("a sandbox key's session passed a live-only route: %d", resp.StatusCode)
	}
	if n := testutil.ToFloat64(ts.srv.metrics.requests.WithLabelValues("authenticate", "api_key", "sandbox", "200")); n < 2 {
		t.Fatalf("sandbox mints counted %v times, want at least 2", n)
	}
}

func TestQueryParameters(t *testing.T) {
	tests := []struct {
		raw     string
		forward bool
		env     string // "", live, sandbox
		err     *Error
	}{
		{"", false, "", nil},
		{"mode=auth_request", true, "", nil},
		{"mode=", false, "", nil},
		{"mode=other", false, "", ErrUnknownMode},
		{"environment=live", false, "live", nil},
		{"environment=sandbox&mode=auth_request", true, "sandbox", nil},
		{"mode=auth_request&environment=live&x=1", true, "live", nil},
		{"environment=", false, "", ErrUnknownEnvironment},
		{"environment=LIVE", false, "", ErrUnknownEnvironment},
		{"environment=staging", false, "", ErrUnknownEnvironment},
		{"environment", false, "", ErrUnknownEnvironment},
		{"environment=live&environment=sandbox", false, "sandbox", nil},
		{"unrelated=1&&", false, "", nil},
	}
	for _, tt := range tests {
		q, err := parseQuery(tt.raw)
		if err != tt.err {
			t.Errorf("%q: error %v, want %v", tt.raw, err, tt.err)
			continue
		}
		got := ""
		if q.environment != nil {
			got = q.environment.String()
		}
		if err == nil && (q.forward != tt.forward || got != tt.env) {
			t.Errorf("%q: forward %v env %q, want %v %q", tt.raw, q.forward, got, tt.forward, tt.env)
		}
		for _, env := range []credential.Environment{credential.Live, credential.Sandbox} {
			if want := got == "" || got == env.String(); err == nil && q.permits(env) != want {
				t.Errorf("%q permits %s = %v", tt.raw, env, !want)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = parseQuery("mode=auth_request&environment=live") }); n != 0 {
		t.Errorf("parseQuery allocated %v times", n)
	}
}
