package authserver

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/session"
)

// Method is how a request authenticated, reported in X-Auth-Method.
type Method string

// Authentication methods.
const (
	MethodAPIKey    Method = "api_key"
	MethodUserToken Method = "user_token"
	MethodSession   Method = "session"
	// MethodNone labels metrics of requests that did not authenticate.
	MethodNone Method = "none"
)

// Identity is who a request authenticated as.
type Identity struct {
	AgentID string
	Method  Method
	// KeyID is the keyID of the key presented, or for a session of the key that minted it.
	KeyID string
	// Credential is namespace/name of the AgentCredential.
	Credential string
	User       string
	// Entry is the index entry the credential matched.
	Entry *Entry
}

// Error is a refusal with its HTTP status and the code of SPEC §6. Messages
// never contain a credential or a header value.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Refusals. Each is a fixed value so the hot path does not allocate.
var (
	ErrConflictingCredentials = &Error{http.StatusBadRequest, "conflicting_credentials", "send exactly one credential: X-API-Key, Api-Key or Authorization: Bearer"}
	ErrInvalidAgentID         = &Error{http.StatusBadRequest, "invalid_agent_id", "X-Agent-ID must be a single agent UUID"}
	ErrAgentIDRequired        = &Error{http.StatusBadRequest, "agent_id_required", "this token acts for several agents; pick one with X-Agent-ID"}
	ErrMissingCredentials     = &Error{http.StatusUnauthorized, "missing_credentials", "no credential: send X-API-Key, Api-Key or Authorization: Bearer"}
	ErrInvalidCredentials     = &Error{http.StatusUnauthorized, "invalid_credentials", "the credential is not valid"}
	ErrExpiredSession         = &Error{http.StatusUnauthorized, "expired_session", "the session token has expired; authenticate again"}
	ErrExpiredCredentials     = &Error{http.StatusUnauthorized, "expired_credentials", "the credential has expired (spec.expiresAt); ask for a new one"}
	ErrRevokedSession         = &Error{http.StatusUnauthorized, "invalid_credentials", "the session was ended by a rotation or revocation of the key that minted it"}
	ErrAgentNotPermitted      = &Error{http.StatusForbidden, "agent_not_permitted", "this credential may not act as the agent in X-Agent-ID"}
	ErrRateLimited            = &Error{http.StatusTooManyRequests, "rate_limited", "too many failed attempts; retry later"}

	// Where the shape alone tells what went wrong, say so — without ever
	// revealing whether a well-formed key exists (that is always the
	// generic ErrInvalidCredentials).
	ErrTokenInAPIKeyHeader  = &Error{http.StatusUnauthorized, "invalid_credentials", "X-API-Key and Api-Key take API keys (ak_…); send a user or session token as Authorization: Bearer"}
	ErrSchemeInAPIKeyHeader = &Error{http.StatusUnauthorized, "invalid_credentials", "X-API-Key takes the key alone, without a scheme such as Bearer"}
	ErrMistypedKey          = &Error{http.StatusUnauthorized, "invalid_credentials", "the key's checksum does not match: it was mistyped, truncated or changed"}
)

// Canonical header names, read straight from the map so lookups don't allocate.
const (
	headerXAPIKey       = "X-Api-Key"
	headerAPIKey        = "Api-Key"
	headerAuthorization = "Authorization"
	headerAgentID       = "X-Agent-Id"
)

// Verifier decides whether request headers carry a valid credential.
type Verifier struct {
	Index *Index
	// Keyring returns the current session signing keys (nil: none yet).
	Keyring func() *session.Keyring
}

// presented is the one credential a request carries.
type presented struct {
	token string
	// viaAPIKeyHeader: it came in X-API-Key or Api-Key, which carry API keys only.
	viaAPIKeyHeader bool
}

// extractCredential applies "exactly one credential per request".
func extractCredential(h http.Header) (presented, *Error) {
	apiKey, err := apiKeyHeader(h)
	if err != nil {
		return presented{}, err
	}
	bearer, hasBearer, err := bearerToken(h)
	if err != nil {
		return presented{}, err
	}
	if apiKey != "" && hasBearer {
		return presented{}, ErrConflictingCredentials
	}
	if apiKey != "" {
		return presented{token: apiKey, viaAPIKeyHeader: true}, nil
	}
	if hasBearer {
		return presented{token: bearer}, nil
	}
	return presented{}, ErrMissingCredentials
}

// apiKeyHeader reads X-API-Key and its alias Api-Key. Repeating a header, or
// sending both with different values, is a conflict.
func apiKeyHeader(h http.Header) (string, *Error) {
	a, b := h[headerXAPIKey], h[headerAPIKey]
	if len(a) > 1 || len(b) > 1 {
		return "", ErrConflictingCredentials
	}
	var key string
	if len(a) == 1 {
		key = strings.TrimSpace(a[0])
	}
	if len(b) == 1 {
		other := strings.TrimSpace(b[0])
		if len(a) == 1 && other != key {
			return "", ErrConflictingCredentials
		}
		key = other
	}
	if (len(a) == 1 || len(b) == 1) && key == "" {
		return "", ErrInvalidCredentials
	}
	return key, nil
}

// bearerToken reads Authorization: Bearer. Other schemes (Basic, say) are
// not ours and are ignored, so they can pass through to an upstream.
func bearerToken(h http.Header) (string, bool, *Error) {
	v := h[headerAuthorization]
	if len(v) == 0 {
		return "", false, nil
	}
	if len(v) > 1 {
		return "", false, ErrConflictingCredentials
	}
	const scheme = "bearer"
	s := strings.TrimSpace(v[0])
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return "", false, nil
	}
	rest := s[len(scheme):]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return "", false, nil // e.g. "Bearerish", another scheme
	}
	token := strings.TrimSpace(rest)
	if token == "" {
		return "", false, ErrInvalidCredentials
	}
	return token, true, nil
}

// requestedAgent reads X-Agent-ID: absent, or exactly one UUID.
func requestedAgent(h http.Header) (string, *Error) {
	v := h[headerAgentID]
	switch len(v) {
	case 0:
		return "", nil
	case 1:
		id := strings.TrimSpace(v[0])
		if !isUUID(id) {
			return "", ErrInvalidAgentID
		}
		return lowerASCII(id), nil
	default:
		return "", ErrInvalidAgentID
	}
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHex(c) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// lowerASCII lower-cases without allocating when s is already lower-case.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// Verify decides whether the headers carry exactly one valid credential and
// for which agent, at now.
func (v *Verifier) Verify(h http.Header, now time.Time) (Identity, *Error) {
	cred, err := extractCredential(h)
	if err != nil {
		return Identity{}, err
	}
	agentID, err := requestedAgent(h)
	if err != nil {
		return Identity{}, err
	}
	kind := credential.KindOf(cred.token)
	if cred.viaAPIKeyHeader && kind != credential.APIKey {
		return Identity{}, apiKeyHeaderMisuse(cred.token, kind)
	}
	switch kind {
	case credential.APIKey, credential.UserToken:
		return v.verifyKey(cred.token, kind, agentID, now)
	case credential.Session:
		return v.verifySession(cred.token, agentID, now)
	default:
		return Identity{}, ErrInvalidCredentials
	}
}

// methodOf is the method a credential of kind authenticates with
// (MethodNone for no known kind).
func methodOf(kind credential.Kind) Method {
	switch kind {
	case credential.APIKey:
		return MethodAPIKey
	case credential.UserToken:
		return MethodUserToken
	case credential.Session:
		return MethodSession
	default:
		return MethodNone
	}
}

// attempted is the method a refused request tried, told by the shape of
// the one credential it carries: MethodNone when it carries none, several,
// or one of no known shape. For metrics only; it never authenticates.
func attempted(h http.Header) Method {
	cred, err := extractCredential(h)
	if err != nil {
		return MethodNone
	}
	return methodOf(credential.KindOf(cred.token))
}

// apiKeyHeaderMisuse says what is wrong with a non-API-key value in
// X-API-Key, when its shape tells.
func apiKeyHeaderMisuse(token string, kind credential.Kind) *Error {
	if kind == credential.UserToken || kind == credential.Session {
		return ErrTokenInAPIKeyHeader
	}
	if scheme, _, ok := strings.Cut(token, " "); ok && strings.EqualFold(scheme, "bearer") {
		return ErrSchemeInAPIKeyHeader
	}
	return ErrInvalidCredentials
}

func (v *Verifier) verifyKey(token string, kind credential.Kind, agentID string, now time.Time) (Identity, *Error) {
	// The checksum rejects typos and garbage before any lookup.
	if _, err := credential.Parse(token); err != nil {
		if errors.Is(err, credential.ErrChecksum) {
			return Identity{}, ErrMistypedKey
		}
		return Identity{}, ErrInvalidCredentials
	}
	digest := credential.DigestOf(token)
	e, ok := v.Index.Lookup(digest, now)
	if !ok || e.Kind != kind {
		return Identity{}, ErrInvalidCredentials
	}
	if e.Expired(now) {
		return Identity{}, ErrExpiredCredentials
	}
	agent, err := chooseAgent(e, agentID)
	if err != nil {
		return Identity{}, err
	}
	return Identity{AgentID: agent, Method: methodOf(kind), KeyID: digest.KeyID(), Credential: e.Credential, User: e.User, Entry: e}, nil
}

// chooseAgent applies X-Agent-ID: required when the credential acts for
// several agents, and must be one of them when given.
func chooseAgent(e *Entry, requested string) (string, *Error) {
	if requested == "" {
		if len(e.AgentIDs) == 1 {
			return e.AgentIDs[0], nil
		}
		return "", ErrAgentIDRequired
	}
	if !e.HasAgent(requested) {
		return "", ErrAgentNotPermitted
	}
	return requested, nil
}

func (v *Verifier) verifySession(token, agentID string, now time.Time) (Identity, *Error) {
	var ring *session.Keyring
	if v.Keyring != nil {
		ring = v.Keyring()
	}
	claims, err := session.Parse(token, ring, now)
	if errors.Is(err, session.ErrExpired) {
		return Identity{}, ErrExpiredSession
	}
	if err != nil {
		return Identity{}, ErrInvalidCredentials
	}
	// A session lives only as long as the key that minted it is current.
	e, ok := v.Index.ByCredential(claims.Credential)
	if !ok || e.Current.KeyID() != claims.KeyID || !e.HasAgent(claims.AgentID) {
		return Identity{}, ErrRevokedSession
	}
	if e.Expired(now) {
		return Identity{}, ErrExpiredCredentials
	}
	// spec.sessionTTL applies to sessions already minted: lowering it
	// shortens them (they were minted under the old cap).
	if e.SessionTTL > 0 && !now.Before(claims.IssuedAt.Add(e.SessionTTL)) {
		return Identity{}, ErrExpiredSession
	}
	if agentID != "" && agentID != claims.AgentID {
		return Identity{}, ErrAgentNotPermitted
	}
	return Identity{AgentID: claims.AgentID, Method: MethodSession, KeyID: claims.KeyID, Credential: e.Credential, User: e.User, Entry: e}, nil
}
