package authserver

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/session"
)

var (
	now     = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	agentA  = "aaaaaaaa-0000-4000-8000-000000000001"
	agentB  = "bbbbbbbb-0000-4000-8000-000000000002"
	agentC  = "cccccccc-0000-4000-8000-000000000003"
	signing = session.Key{ID: "01020304", Secret: []byte("0123456789abcdef0123456789abcdef"), ExpiresAt: now.Add(72 * time.Hour)}
)

// fixture is an index with an API key, a single-agent user token, a
// two-agent user token, and an API key in its grace period.
type fixture struct {
	verifier                       *Verifier
	apiKey, oldAPIKey, pendingKey  string
	userToken, multiToken, revoked string
	session, expired, otherAgent   string
	// cappedSession was minted a minute ago by a credential whose
	// spec.sessionTTL has since been lowered to one minute.
	cappedSession                  string
	rotatedSession, foreignSession string
	// expiredKey belongs to a credential whose spec.expiresAt is now;
	// expiredKeySession was minted from it an hour earlier; expiringKey's
	// credential expires a second from now.
	expiredKey, expiredKeySession, expiringKey string
	// sandboxKey and sandboxToken belong to sandbox credentials (agentC);
	// sandboxSession was minted from sandboxKey.
	sandboxKey, sandboxToken, sandboxSession string
}

func mustGenerate(t testing.TB, k credential.Kind) string {
	t.Helper()
	key, err := credential.Generate(k)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newFixture(t testing.TB) *fixture {
	f := &fixture{
		apiKey: mustGenerate(t, credential.APIKey), oldAPIKey: mustGenerate(t, credential.APIKey),
		pendingKey: mustGenerate(t, credential.APIKey), revoked: mustGenerate(t, credential.APIKey),
		userToken: mustGenerate(t, credential.UserToken), multiToken: mustGenerate(t, credential.UserToken),
	}
	idx := NewIndex()
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-a/billing", Type: "APIKey", AgentIDs: []string{agentA},
		Current:  hashsecret.Entry{Digest: credential.DigestOf(f.apiKey)},
		Previous: &hashsecret.Entry{Digest: credential.DigestOf(f.oldAPIKey), ExpiresAt: now.Add(time.Minute)},
		Pending:  &hashsecret.Entry{Digest: credential.DigestOf(f.pendingKey)},
	}))
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-a/expired-grace", Type: "APIKey", AgentIDs: []string{agentC},
		Current:  hashsecret.Entry{Digest: credential.DigestOf(mustGenerate(t, credential.APIKey))},
		Previous: &hashsecret.Entry{Digest: credential.DigestOf(f.revoked), ExpiresAt: now},
	}))
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-a/bob", Type: "UserToken", AgentIDs: []string{agentB}, User: "bob@example.com",
		Current: hashsecret.Entry{Digest: credential.DigestOf(f.userToken)},
	}))
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-a/alice", Type: "UserToken", AgentIDs: []string{agentA, strings.ToUpper(agentB)}, User: "alice@example.com",
		Current: hashsecret.Entry{Digest: credential.DigestOf(f.multiToken)},
	}))
	cappedKey := mustGenerate(t, credential.APIKey)
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-a/capped", Type: "APIKey", AgentIDs: []string{agentA}, SessionTTL: time.Minute,
		Current: hashsecret.Entry{Digest: credential.DigestOf(cappedKey)},
	}))
	f.expiredKey, f.expiringKey = mustGenerate(t, credential.APIKey), mustGenerate(t, credential.APIKey)
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-a/expired", Type: "APIKey", AgentIDs: []string{agentA}, ExpiresAt: now,
		Current: hashsecret.Entry{Digest: credential.DigestOf(f.expiredKey)},
	}))
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-a/expiring", Type: "APIKey", AgentIDs: []string{agentA}, ExpiresAt: now.Add(time.Second),
		Current: hashsecret.Entry{Digest: credential.DigestOf(f.expiringKey)},
	}))
	f.sandboxKey, f.sandboxToken = mustGenerateIn(t, credential.APIKey, credential.Sandbox), mustGenerateIn(t, credential.UserToken, credential.Sandbox)
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-s/tester", Type: "APIKey", AgentIDs: []string{agentC}, Environment: "sandbox",
		Current: hashsecret.Entry{Digest: credential.DigestOf(f.sandboxKey)},
	}))
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-s/qa", Type: "UserToken", AgentIDs: []string{agentC}, User: "qa@example.com", Environment: "sandbox",
		Current: hashsecret.Entry{Digest: credential.DigestOf(f.sandboxToken)},
	}))
	ring := &session.Keyring{Keys: []session.Key{signing}}
	f.verifier = &Verifier{Index: idx, Keyring: func() *session.Keyring { return ring }}
	mint := func(agent, keyID, cred string, exp time.Time, key session.Key) string {
		tok, err := session.Mint(session.Claims{AgentID: agent, KeyID: keyID, Credential: cred, IssuedAt: now.Add(-time.Minute), ExpiresAt: exp}, key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	f.session = mint(agentA, credential.KeyID(f.apiKey), "team-a/billing", now.Add(time.Hour), signing)
	f.expired = mint(agentA, credential.KeyID(f.apiKey), "team-a/billing", now, signing)
	f.otherAgent = mint(agentC, credential.KeyID(f.apiKey), "team-a/billing", now.Add(time.Hour), signing)
	f.rotatedSession = mint(agentA, credential.KeyID(f.oldAPIKey), "team-a/billing", now.Add(time.Hour), signing)
	f.cappedSession = mint(agentA, credential.KeyID(cappedKey), "team-a/capped", now.Add(time.Hour), signing)
	f.expiredKeySession = mint(agentA, credential.KeyID(f.expiredKey), "team-a/expired", now.Add(time.Hour), signing)
	f.sandboxSession = mint(agentC, credential.KeyID(f.sandboxKey), "team-s/tester", now.Add(time.Hour), signing)
	f.foreignSession = mint(agentA, credential.KeyID(f.apiKey), "team-a/billing", now.Add(time.Hour),
		session.Key{ID: "05060708", Secret: []byte("ffffffffffffffffffffffffffffffff"), ExpiresAt: now.Add(time.Hour)})
	return f
}

func mustGenerateIn(t testing.TB, k credential.Kind, env credential.Environment) string {
	t.Helper()
	key, err := credential.GenerateIn(k, env)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	typo := f.apiKey[:20] + "x" + f.apiKey[21:]
	if typo == f.apiKey {
		typo = f.apiKey[:20] + "y" + f.apiKey[21:]
	}
	unknown := mustGenerate(t, credential.APIKey)
	tests := []struct {
		name       string
		h          http.Header
		wantErr    *Error
		wantAgent  string
		wantMethod Method
	}{
		// API keys
		{"X-API-Key", hdr("X-API-Key", f.apiKey), nil, agentA, MethodAPIKey},
		{"Api-Key alias", hdr("Api-Key", f.apiKey), nil, agentA, MethodAPIKey},
		{"both aliases, same key", hdr("X-API-Key", f.apiKey, "Api-Key", f.apiKey), nil, agentA, MethodAPIKey},
		{"API key as bearer", hdr("Authorization", "Bearer "+f.apiKey), nil, agentA, MethodAPIKey},
		{"lower-case bearer scheme", hdr("Authorization", "bearer "+f.apiKey), nil, agentA, MethodAPIKey},
		{"API key with its own agent", hdr("X-API-Key", f.apiKey, "X-Agent-ID", agentA), nil, agentA, MethodAPIKey},
		{"API key with its agent upper-case", hdr("X-API-Key", f.apiKey, "X-Agent-ID", strings.ToUpper(agentA)), nil, agentA, MethodAPIKey},
		{"previous key in grace", hdr("X-API-Key", f.oldAPIKey), nil, agentA, MethodAPIKey},
		{"staged key", hdr("X-API-Key", f.pendingKey), nil, agentA, MethodAPIKey},
		{"previous key after grace", hdr("X-API-Key", f.revoked), ErrInvalidCredentials, "", ""},
		{"key of a credential past expiresAt", hdr("X-API-Key", f.expiredKey), ErrExpiredCredentials, "", ""},
		{"key a second before expiresAt", hdr("X-API-Key", f.expiringKey), nil, agentA, MethodAPIKey},
		{"sandbox API key", hdr("X-API-Key", f.sandboxKey), nil, agentC, MethodAPIKey},
		{"sandbox user token", hdr("Authorization", "Bearer "+f.sandboxToken), nil, agentC, MethodUserToken},
		{"sandbox user token in X-API-Key", hdr("X-API-Key", f.sandboxToken), ErrTokenInAPIKeyHeader, "", ""},
		{"sandbox key with a broken checksum", hdr("X-API-Key", f.sandboxKey[:len(f.sandboxKey)-1]+flipChar(f.sandboxKey[len(f.sandboxKey)-1])), ErrMistypedKey, "", ""},
		{"sandbox session", hdr("Authorization", "Bearer "+f.sandboxSession), nil, agentC, MethodSession},
		{"unknown key", hdr("X-API-Key", unknown), ErrInvalidCredentials, "", ""},
		{"typo fails the checksum", hdr("X-API-Key", typo), ErrMistypedKey, "", ""},
		{"API key for another agent", hdr("X-API-Key", f.apiKey, "X-Agent-ID", agentB), ErrAgentNotPermitted, "", ""},
		{"user token in X-API-Key", hdr("X-API-Key", f.userToken), ErrTokenInAPIKeyHeader, "", ""},
		{"garbage in X-API-Key", hdr("X-API-Key", "hunter2"), ErrInvalidCredentials, "", ""},
		{"empty X-API-Key", hdr("X-API-Key", ""), ErrInvalidCredentials, "", ""},
		// Conflicts and absence
		{"both aliases, different keys", hdr("X-API-Key", f.apiKey, "Api-Key", f.oldAPIKey), ErrConflictingCredentials, "", ""},
		{"X-API-Key twice", hdr("X-API-Key", f.apiKey, "X-API-Key", f.apiKey), ErrConflictingCredentials, "", ""},
		{"API key and bearer", hdr("X-API-Key", f.apiKey, "Authorization", "Bearer "+f.userToken), ErrConflictingCredentials, "", ""},
		{"two Authorization headers", hdr("Authorization", "Bearer "+f.apiKey, "Authorization", "Bearer "+f.apiKey), ErrConflictingCredentials, "", ""},
		{"nothing", hdr(), ErrMissingCredentials, "", ""},
		{"Basic auth is not ours", hdr("Authorization", "Basic dXNlcjpwYXNz"), ErrMissingCredentials, "", ""},
		{"Basic auth next to an API key", hdr("Authorization", "Basic dXNlcjpwYXNz", "X-API-Key", f.apiKey), nil, agentA, MethodAPIKey},
		{"empty bearer", hdr("Authorization", "Bearer "), ErrInvalidCredentials, "", ""},
		{"foreign bearer token", hdr("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"), ErrInvalidCredentials, "", ""},
		// User tokens and X-Agent-ID
		{"single-agent token, no X-Agent-ID", hdr("Authorization", "Bearer "+f.userToken), nil, agentB, MethodUserToken},
		{"multi-agent token, no X-Agent-ID", hdr("Authorization", "Bearer "+f.multiToken), ErrAgentIDRequired, "", ""},
		{"multi-agent token, listed agent", hdr("Authorization", "Bearer "+f.multiToken, "X-Agent-ID", agentA), nil, agentA, MethodUserToken},
		{"multi-agent token, listed agent stored upper-case", hdr("Authorization", "Bearer "+f.multiToken, "X-Agent-ID", agentB), nil, agentB, MethodUserToken},
		{"multi-agent token, unlisted agent", hdr("Authorization", "Bearer "+f.multiToken, "X-Agent-ID", agentC), ErrAgentNotPermitted, "", ""},
		{"X-Agent-ID not a UUID", hdr("Authorization", "Bearer "+f.multiToken, "X-Agent-ID", "agent-1"), ErrInvalidAgentID, "", ""},
		{"X-Agent-ID twice", hdr("Authorization", "Bearer "+f.multiToken, "X-Agent-ID", agentA, "X-Agent-ID", agentB), ErrInvalidAgentID, "", ""},
		{"X-Agent-ID checked before the key", hdr("X-API-Key", unknown, "X-Agent-ID", "nope"), ErrInvalidAgentID, "", ""},
		// Sessions
		{"session", hdr("Authorization", "Bearer "+f.session), nil, agentA, MethodSession},
		{"session with its agent", hdr("Authorization", "Bearer "+f.session, "X-Agent-ID", agentA), nil, agentA, MethodSession},
		{"session with another agent", hdr("Authorization", "Bearer "+f.session, "X-Agent-ID", agentB), ErrAgentNotPermitted, "", ""},
		{"expired session", hdr("Authorization", "Bearer "+f.expired), ErrExpiredSession, "", ""},
		{"session of a rotated key", hdr("Authorization", "Bearer "+f.rotatedSession), ErrRevokedSession, "", ""},
		{"session older than a lowered spec.sessionTTL", hdr("Authorization", "Bearer "+f.cappedSession), ErrExpiredSession, "", ""},
		{"session for an agent the credential lacks", hdr("Authorization", "Bearer "+f.otherAgent), ErrRevokedSession, "", ""},
		{"session minted before its credential expired", hdr("Authorization", "Bearer "+f.expiredKeySession), ErrExpiredCredentials, "", ""},
		{"session signed with an unknown key", hdr("Authorization", "Bearer "+f.foreignSession), ErrInvalidCredentials, "", ""},
		{"truncated session", hdr("Authorization", "Bearer "+f.session[:40]), ErrInvalidCredentials, "", ""},
		{"session in X-API-Key", hdr("X-API-Key", f.session), ErrTokenInAPIKeyHeader, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.verifier.Verify(tt.h, now)
			if err != tt.wantErr {
				t.Fatalf("Verify error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if id.AgentID != tt.wantAgent || id.Method != tt.wantMethod {
				t.Fatalf("Verify = agent %s method %s, want %s %s", id.AgentID, id.Method, tt.wantAgent, tt.wantMethod)
			}
			if id.Credential == "" || len(id.KeyID) != credential.KeyIDLen {
				t.Fatalf("identity lacks credential or keyID: %+v", id)
			}
		})
	}
}

func TestErrorStatusCodes(t *testing.T) {
	want := map[*Error]int{
		ErrConflictingCredentials: 400, ErrInvalidAgentID: 400, ErrAgentIDRequired: 400,
		ErrMissingCredentials: 401, ErrInvalidCredentials: 401, ErrExpiredSession: 401, ErrRevokedSession: 401, ErrExpiredCredentials: 401,
		ErrAgentNotPermitted: 403, ErrRateLimited: 429,
	}
	for e, status := range want {
		if e.Status != status {
			t.Errorf("%s has status %d, want %d", e.Code, e.Status, status)
		}
	}
}

func TestVerifyTokenForTokenReview(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		token   string
		wantErr *Error
		agent   string
		user    string
	}{
		{"api key", f.apiKey, nil, agentA, ""},
		{"single-agent user token", f.userToken, nil, agentB, "bob@example.com"},
		{"multi-agent user token authenticates the user", f.multiToken, nil, "", "alice@example.com"},
		{"session", f.session, nil, agentA, ""},
		{"empty", "", ErrMissingCredentials, "", ""},
		{"garbage", "abc", ErrInvalidCredentials, "", ""},
		{"unknown user token", mustGenerate(t, credential.UserToken), ErrInvalidCredentials, "", ""},
	}
	for _, tt := range tests {
		id, err := f.verifier.VerifyToken(tt.token, now)
		if err != tt.wantErr || id.AgentID != tt.agent || id.User != tt.user {
			t.Errorf("%s: VerifyToken = %+v, %v", tt.name, id, err)
		}
	}
}

func TestIndexReplaceAndRemove(t *testing.T) {
	idx := NewIndex()
	k1, k2 := mustGenerate(t, credential.APIKey), mustGenerate(t, credential.APIKey)
	rec := &hashsecret.Record{Credential: "a/b", Type: "APIKey", AgentIDs: []string{agentA}, Current: hashsecret.Entry{Digest: credential.DigestOf(k1)}}
	idx.Put(EntryFromRecord(rec))
	rec.Current.Digest = credential.DigestOf(k2)
	idx.Put(EntryFromRecord(rec))
	if _, ok := idx.Lookup(credential.DigestOf(k1), now); ok {
		t.Fatal("a replaced key still verifies")
	}
	if _, ok := idx.Lookup(credential.DigestOf(k2), now); !ok {
		t.Fatal("the new key does not verify")
	}
	idx.Remove("a/b")
	if _, ok := idx.Lookup(credential.DigestOf(k2), now); ok || idx.Len() != 0 {
		t.Fatal("a removed credential still verifies")
	}
}

// FuzzVerify feeds arbitrary header values; Verify must never panic and
// must answer with one of the documented refusals or a real identity.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	f.Add(fx.apiKey, "", "", "")
	f.Add("", "", "Bearer "+fx.multiToken, agentA)
	f.Add("", fx.apiKey, "Bearer "+fx.session, "")
	f.Add("\xff\x00", "ak_", "Bearer as_", "--------")
	f.Add(fx.sandboxKey, "", "", "")
	f.Add("", "", "Bearer "+fx.sandboxToken, agentC)
	f.Add(fx.expiredKey, "", "", "")
	f.Add("ak_test_", "", "Bearer ap_test_", "")
	documented := map[*Error]bool{
		ErrConflictingCredentials: true, ErrInvalidAgentID: true, ErrAgentIDRequired: true, ErrMissingCredentials: true,
		ErrInvalidCredentials: true, ErrExpiredSession: true, ErrRevokedSession: true, ErrAgentNotPermitted: true,
		ErrTokenInAPIKeyHeader: true, ErrSchemeInAPIKeyHeader: true, ErrMistypedKey: true, ErrExpiredCredentials: true,
	}
	f.Fuzz(func(t *testing.T, xAPIKey, apiKey, authorization, agentID string) {
		h := http.Header{}
		for k, v := range map[string]string{"X-Api-Key": xAPIKey, "Api-Key": apiKey, "Authorization": authorization, "X-Agent-Id": agentID} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		id, err := fx.verifier.Verify(h, now)
		if err != nil {
			if !documented[err] {
				t.Fatalf("undocumented refusal %v", err)
			}
			return
		}
		if id.AgentID == "" || id.Credential == "" {
			t.Fatalf("success without an identity: %+v", id)
		}
	})
}

func flipChar(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

// FuzzParseQuery: any query string gets a documented answer, and a route
// restriction is only ever live or sandbox.
func FuzzParseQuery(f *testing.F) {
	for _, seed := range []string{"", "mode=auth_request", "environment=live", "environment=sandbox&mode=auth_request",
		"environment=", "environment=live&environment=x", "&&=&", "mode=auth_request%26environment=live", "environment=live;mode=x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := parseQuery(raw)
		if err != nil {
			if err != ErrUnknownMode && err != ErrUnknownEnvironment {
				t.Fatalf("undocumented refusal %v", err)
			}
			return
		}
		if q.environment != nil && *q.environment != credential.Live && *q.environment != credential.Sandbox {
			t.Fatalf("unknown environment %v accepted", *q.environment)
		}
		if q.environment != nil && !strings.Contains(raw, "environment="+q.environment.String()) {
			t.Fatalf("%q restricted the route to %s", raw, q.environment)
		}
	})
}
