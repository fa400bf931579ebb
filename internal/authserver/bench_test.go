package authserver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/session"
)

// benchIndex indexes n API keys, n user tokens for three agents each, and
// returns some of their keys.
func benchIndex(b *testing.B, n int) (*Verifier, []string, []string, []string) {
	b.Helper()
	idx := NewIndex()
	apiKeys := make([]string, 0, 1024)
	userTokens := make([]string, 0, 1024)
	agents := make([]string, 0, 1024)
	for i := range n {
		agent := fmt.Sprintf("aaaaaaaa-0000-4000-8000-%012d", i)
		key := mustGenerate(b, credential.APIKey)
		idx.Put(EntryFromRecord(&hashsecret.Record{
			Credential: fmt.Sprintf("ns-%d/agent-%d", i%100, i), Type: "APIKey", AgentIDs: []string{agent},
			Current: hashsecret.Entry{Digest: credential.DigestOf(key)},
		}))
		token := mustGenerate(b, credential.UserToken)
		idx.Put(EntryFromRecord(&hashsecret.Record{
			Credential: fmt.Sprintf("ns-%d/user-%d", i%100, i), Type: "UserToken", User: "user@example.com",
			AgentIDs: []string{agentB, agent, agentC},
			Current:  hashsecret.Entry{Digest: credential.DigestOf(token)},
		}))
		if len(apiKeys) < cap(apiKeys) {
			apiKeys, userTokens, agents = append(apiKeys, key), append(userTokens, token), append(agents, agent)
		}
	}
	ring := &session.Keyring{Keys: []session.Key{signing}}
	return &Verifier{Index: idx, Keyring: func() *session.Keyring { return ring }}, apiKeys, userTokens, agents
}

// BenchmarkVerify measures the verification decision with 100,000 API keys
// and 100,000 user tokens indexed.
func BenchmarkVerify(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		v, apiKeys, userTokens, agents := benchIndex(b, n)
		headers := make([]http.Header, len(apiKeys))
		for i, k := range apiKeys {
			headers[i] = http.Header{"X-Api-Key": {k}}
		}
		b.Run(fmt.Sprintf("api_key/credentials=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := v.Verify(headers[i%len(headers)], now); err != nil {
					b.Fatal(err)
				}
			}
		})
		tokenHeaders := make([]http.Header, len(userTokens))
		for i, tok := range userTokens {
			tokenHeaders[i] = http.Header{"Authorization": {"Bearer " + tok}, "X-Agent-Id": {agents[i]}}
		}
		b.Run(fmt.Sprintf("user_token/credentials=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := v.Verify(tokenHeaders[i%len(tokenHeaders)], now); err != nil {
					b.Fatal(err)
				}
			}
		})
		sessionHeaders := make([]http.Header, 0, len(apiKeys))
		for i, k := range apiKeys {
			e, _ := v.Index.Lookup(credential.DigestOf(k), now)
			tok, err := session.Mint(session.Claims{AgentID: agents[i], KeyID: credential.KeyID(k), Credential: e.Credential,
				IssuedAt: now, ExpiresAt: now.Add(time.Hour)}, signing)
			if err != nil {
				b.Fatal(err)
			}
			sessionHeaders = append(sessionHeaders, http.Header{"Authorization": {"Bearer " + tok}})
		}
		b.Run(fmt.Sprintf("session/credentials=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := v.Verify(sessionHeaders[i%len(sessionHeaders)], now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyHTTP measures a whole /auth/verify request through the
// handler (no network) next to a bare handler that returns 200, as a ceiling.
func BenchmarkVerifyHTTP(b *testing.B) {
	v, apiKeys, _, _ := benchIndex(b, 100000)
	srv, err := New(v.Index, Options{FailureRate: 0})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	bare := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	reqs := make([]*http.Request, len(apiKeys))
	for i, k := range apiKeys {
		reqs[i] = httptest.NewRequest("GET", "/auth/verify", nil)
		reqs[i].Header.Set("X-API-Key", k)
	}
	for name, handler := range map[string]http.Handler{"bare": bare, "verify": h} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				w := httptest.NewRecorder()
				handler.ServeHTTP(w, reqs[i%len(reqs)])
				if w.Code != http.StatusOK {
					b.Fatal(w.Code)
				}
			}
		})
	}
}
