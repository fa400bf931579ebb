package authserver

import (
	"net/http"
	"testing"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
)

// The edges of header parsing, each case killing a single-line mutation
// (named in the case) that the end-to-end tables let live.

func TestBearerTokenEdges(t *testing.T) {
	tests := []struct {
		header  string
		token   string
		ok      bool
		wantErr *Error
	}{
		{"Bearer tok", "tok", true, nil},
		{"bearer tok", "tok", true, nil},
		{"BEARER\ttok", "tok", true, nil},
		{"  Bearer   tok  ", "tok", true, nil},
		{"Bearerxyz", "", false, nil},  // another scheme (mutation: accept any character after "Bearer")
		{"Bearer-tok", "", false, nil}, // likewise
		{"Bearer", "", false, ErrInvalidCredentials},
		{"Bearer   ", "", false, ErrInvalidCredentials},
		{"Basic dXNlcjpwYXNz", "", false, nil},
		{"Bear", "", false, nil}, // shorter than the scheme
		{"", "", false, nil},
	}
	for _, tt := range tests {
		h := http.Header{headerAuthorization: {tt.header}}
		token, ok, err := bearerToken(h)
		if token != tt.token || ok != tt.ok || err != tt.wantErr {
			t.Errorf("bearerToken(%q) = %q, %v, %v; want %q, %v, %v", tt.header, token, ok, err, tt.token, tt.ok, tt.wantErr)
		}
	}
	if _, _, err := bearerToken(http.Header{headerAuthorization: {"Bearer a", "Bearer b"}}); err != ErrConflictingCredentials {
		t.Errorf("two Authorization headers: %v", err)
	}
}

func TestIsUUIDAndLowerASCIIEdges(t *testing.T) {
	const base = "0123abcd-0000-4000-8000-00000000000"
	for c, want := range map[byte]bool{
		'0': true, '9': true, 'a': true, 'f': true, 'A': true, 'F': true,
		'/': false, ':': false, '`': false, 'g': false, '@': false, 'G': false,
	} {
		if got := isUUID(base + string(c)); got != want {
			t.Errorf("isUUID(...%q) = %v, want %v", c, got, want)
		}
	}
	for _, bad := range []string{base, base + "00", "0123abcd+0000-4000-8000-000000000000", "0123abcd-0000+4000-8000-000000000000",
		"0123abcd-0000-4000+8000-000000000000", "0123abcd-0000-4000-8000+000000000000"} {
		if isUUID(bad) {
			t.Errorf("isUUID(%q) = true", bad)
		}
	}
	for in, want := range map[string]string{"ABCDEF": "abcdef", "az@[": "az@[", "Z": "z", "A": "a", "@": "@", "[": "["} {
		if got := lowerASCII(in); got != want {
			t.Errorf("lowerASCII(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestKindMismatchIsRefused: a hash record that says APIKey but holds the
// digest of a user token (a hand-edited hash Secret) authenticates nothing
// (mutation: drop `e.Kind != kind` in verifyKey); and a user token sent as
// X-API-Key is refused before any lookup.
func TestKindMismatchIsRefused(t *testing.T) {
	token := mustGenerate(t, credential.UserToken)
	idx := NewIndex()
	idx.Put(EntryFromRecord(&hashsecret.Record{
		Credential: "team-a/forged", Type: "APIKey", AgentIDs: []string{agentA},
		Current: hashsecret.Entry{Digest: credential.DigestOf(token)},
	}))
	v := &Verifier{Index: idx}
	now := time.Now()
	if _, err := v.Verify(http.Header{headerAuthorization: {"Bearer " + token}}, now); err != ErrInvalidCredentials {
		t.Fatalf("a user token matched an APIKey record: %v", err)
	}
	if _, err := v.Verify(http.Header{headerXAPIKey: {token}}, now); err != ErrTokenInAPIKeyHeader {
		t.Fatalf("a user token sent as X-API-Key: %v", err)
	}
}

// TestRefusalsSayWhatToDo: where the shape of the value tells what went
// wrong, the 401's message says so; a well-formed unknown key gets the
// generic message, so messages never tell whether a key exists.
func TestRefusalsSayWhatToDo(t *testing.T) {
	apiKey := mustGenerate(t, credential.APIKey)
	mistyped := []byte(apiKey)
	if mistyped[10] == 'a' {
		mistyped[10] = 'b'
	} else {
		mistyped[10] = 'a'
	}
	v := &Verifier{Index: NewIndex()}
	for name, tt := range map[string]struct {
		h    http.Header
		want *Error
	}{
		"user token in X-API-Key": {http.Header{headerXAPIKey: {mustGenerate(t, credential.UserToken)}}, ErrTokenInAPIKeyHeader},
		"Bearer inside X-API-Key": {http.Header{headerXAPIKey: {"Bearer " + apiKey}}, ErrSchemeInAPIKeyHeader},
		"a typo":                  {http.Header{headerXAPIKey: {string(mistyped)}}, ErrMistypedKey},
		"a typo, as Bearer":       {http.Header{headerAuthorization: {"Bearer " + string(mistyped)}}, ErrMistypedKey},
		"well-formed but unknown": {http.Header{headerXAPIKey: {apiKey}}, ErrInvalidCredentials},
		"garbage":                 {http.Header{headerXAPIKey: {"hello"}}, ErrInvalidCredentials},
	} {
		_, err := v.Verify(tt.h, time.Now())
		if err != tt.want {
			t.Errorf("%s: %v, want %v", name, err, tt.want)
		}
		if err != nil && err.Status != http.StatusUnauthorized {
			t.Errorf("%s: status %d", name, err.Status)
		}
	}
}
