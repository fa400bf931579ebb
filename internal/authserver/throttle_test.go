package authserver

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
)

// mistype changes one character of a key's body, so its checksum fails.
func mistype(key string) string {
	b := []byte(key)
	i := len(b) / 2
	if b[i] == 'a' {
		b[i] = 'b'
	} else {
		b[i] = 'a'
	}
	return string(b)
}

// forge changes the last character of a session token's signature.
func forge(token string) string {
	b := []byte(token)
	if b[len(b)-1] == 'A' {
		b[len(b)-1] = 'B'
	} else {
		b[len(b)-1] = 'A'
	}
	return string(b)
}

// TestOnlyGuessesAreThrottled is the throttling rule, one row per refusal:
// once a client has spent its failure budget, a guess (unknown, mistyped or
// forged credential) is answered 429, and every real refusal keeps its own
// answer — the review's reproduction was a valid key asking for another
// agent answered 429 instead of 403 after 80 bad keys from its address.
// Each row runs on HTTP and on gRPC, which share the rule.
func TestOnlyGuessesAreThrottled(t *testing.T) {
	f := startGRPC(t, func(o *Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	for i, tt := range []struct {
		name  string
		h     http.Header
		guess bool
		code  string // the refusal's own code
	}{
		{"unknown key", hdr("X-API-Key", mustGenerate(t, credential.APIKey)), true, "invalid_credentials"},
		{"garbage", hdr("X-API-Key", "ak_wrong"), true, "invalid_credentials"},
		{"mistyped key", hdr("X-API-Key", mistype(f.apiKey)), true, "invalid_credentials"},
		{"forged session", hdr("Authorization", "Bearer "+forge(f.session)), true, "invalid_credentials"},
		{"another agent's ID", hdr("Authorization", "Bearer "+f.multiToken, "X-Agent-ID", agentC), false, "agent_not_permitted"},
		{"no agent ID for several agents", hdr("Authorization", "Bearer "+f.multiToken), false, "agent_id_required"},
		{"expired session", hdr("Authorization", "Bearer "+f.expired), false, "expired_session"},
		{"expired credential", hdr("X-API-Key", f.expiredKey), false, "expired_credentials"},
		{"session of a rotated key", hdr("Authorization", "Bearer "+f.rotatedSession), false, "invalid_credentials"},
		{"two credentials", hdr("X-API-Key", f.apiKey, "Authorization", "Bearer "+f.userToken), false, "conflicting_credentials"},
		{"no credential", hdr(), false, "missing_credentials"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A client of its own (behind the trusted proxy) spends its
			// burst of 3 with guesses.
			client := fmt.Sprintf("203.0.113.%d", i+1)
			for range 3 {
				f.do(t, "GET", "/auth/verify", hdr("X-API-Key", "ak_wrong", "X-Forwarded-For", client), "")
			}
			h := tt.h.Clone()
			h.Set("X-Forwarded-For", client)
			resp, body := f.do(t, "GET", "/auth/verify", h, "")
			want := tt.code
			if tt.guess {
				want = "rate_limited"
			}
			if got := errorCode(t, body); got != want {
				t.Errorf("HTTP: %d %s, want %s", resp.StatusCode, got, want)
			}
			if tt.guess != (resp.Header.Get("Retry-After") != "") {
				t.Errorf("HTTP: Retry-After=%q on a %s", resp.Header.Get("Retry-After"), want)
			}
			// gRPC: a downstream client of its own, as Envoy reports it.
			client = fmt.Sprintf("198.51.100.%d", i+1)
			headers := map[string]string{}
			for k, v := range tt.h {
				headers[strings.ToLower(k)] = v[0]
			}
			for range 3 {
				_, _ = f.client.Check(context.Background(), checkRequest(map[string]string{"x-api-key": "ak_wrong"}, nil, client))
			}
			r, err := f.client.Check(context.Background(), checkRequest(headers, nil, client))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.GetStatus().GetMessage(); got != want {
				t.Errorf("gRPC: %s, want %s", got, want)
			}
		})
	}
}

// TestVerifyAsksEnvoyToDropTheCredential: every 200 of /auth/verify carries
// x-envoy-auth-headers-to-remove naming every credential header, so Envoy's
// HTTP ext_authz (and the Envoy Gateway and Istio HTTP providers) does not
// forward the caller's key to the upstream; the gRPC answer removes the
// same headers.
func TestVerifyAsksEnvoyToDropTheCredential(t *testing.T) {
	f := startGRPC(t)
	for _, h := range []http.Header{
		hdr("X-API-Key", f.apiKey), hdr("Api-Key", f.apiKey), hdr("Authorization", "Bearer "+f.session),
		hdr("Authorization", "Bearer "+f.multiToken, "X-Agent-ID", agentA),
	} {
		for _, path := range []string{"/auth/verify", "/auth/verify/orders?mode=auth_request"} {
			resp, _ := f.do(t, "GET", path, h, "")
			if resp.StatusCode != 200 || resp.Header.Get("X-Envoy-Auth-Headers-To-Remove") != "x-api-key, api-key, authorization" {
				t.Errorf("%s %v: %d x-envoy-auth-headers-to-remove=%q", path, h, resp.StatusCode, resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"))
			}
		}
	}
	if got := strings.Join(credentialHeaders, ", "); got != "x-api-key, api-key, authorization" {
		t.Fatalf("the gRPC answer removes %q", got)
	}
}

// TestOldConnectionsAreClosedAfterTheirResponse: a keep-alive connection
// older than maxConnectionAge is told Connection: close with its next
// response (which is still answered); a younger one is not.
func TestOldConnectionsAreClosedAfterTheirResponse(t *testing.T) {
	opened := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		age   time.Duration
		close bool
	}{{0, false}, {maxConnectionAge, false}, {maxConnectionAge + time.Second, true}} {
		r := httptest.NewRequest("GET", "/auth/verify", nil)
		r = r.WithContext(context.WithValue(r.Context(), connOpenedKey{}, opened))
		w := httptest.NewRecorder()
		closeIfOld(w, r, opened.Add(tt.age))
		if got := w.Header().Get("Connection") == "close"; got != tt.close {
			t.Errorf("age %v: Connection: close = %v, want %v", tt.age, got, tt.close)
		}
	}
	// A connection no Listener accepted (zero time) is never closed for age.
	w := httptest.NewRecorder()
	closeIfOld(w, httptest.NewRequest("GET", "/", nil), opened)
	if w.Header().Get("Connection") != "" {
		t.Fatal("a request without an accept time was told to close")
	}
}
