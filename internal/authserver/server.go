package authserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/listener"
	"github.com/agrenting/agentcred/internal/session"
)

// Identity headers set on a successful /auth/verify.
const (
	HeaderAgentID    = "X-Auth-Agent-Id"
	HeaderMethod     = "X-Auth-Method"
	HeaderKeyID      = "X-Auth-Key-Id"
	HeaderCredential = "X-Auth-Credential"
	HeaderUser       = "X-Auth-User"
	// HeaderEnvironment is live or sandbox: the credential's environment.
	HeaderEnvironment = "X-Auth-Environment"
)

// HeaderEnvoyHeadersToRemove, on every 200 of /auth/verify, asks Envoy's
// HTTP ext_authz filter to drop the caller's credential before the request
// goes upstream (the gRPC answer does the same with headers_to_remove): the
// upstream learns the identity from X-Auth-*, never the key.
const HeaderEnvoyHeadersToRemove = "X-Envoy-Auth-Headers-To-Remove"

// credentialHeaderList is its value: one shared slice, never written.
var credentialHeaderList = []string{strings.Join(credentialHeaders, ", ")}

// Options configure the server.
type Options struct {
	// Addr to listen on, e.g. ":8082". Ignored when Listener is set.
	Addr string
	// Listener, if set, is used instead of listening on Addr (tests).
	Listener net.Listener
	// TLSCertFile and TLSKeyFile switch on TLS when both are set. The
	// files are watched: a renewed certificate is served without a restart.
	TLSCertFile, TLSKeyFile string
	// MaxConnections bounds concurrent connections (0: DefaultMaxConnections),
	// so a flood of slow or idle clients cannot exhaust a small pod's memory.
	MaxConnections int
	// SessionTTL is the lifetime of minted sessions, capped per credential by spec.sessionTTL.
	SessionTTL time.Duration
	// TrustedProxies may set X-Forwarded-For.
	TrustedProxies []netip.Prefix
	// TokenReviewAudiences are the audiences TokenReviews are vouched for
	// (besides the caller's implicit one, when a review names none).
	TokenReviewAudiences []string
	// FailureRate and FailureBurst configure throttling of failed attempts.
	FailureRate  float64
	FailureBurst int
	Clock        clock.PassiveClock
	Log          logr.Logger
	// Connections, if set, observes the server's listeners (shared with the
	// process's other listeners and registered by its owner); nil: the
	// server makes its own and registers it with Registerer.
	Connections *listener.Metrics
	// Registerer receives the server's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// GRPC, if set, also serves Envoy ext_authz over gRPC (AddToManager).
	GRPC *GRPCOptions
}

// DefaultMaxConnections is the default bound on concurrent connections.
const DefaultMaxConnections = 1024

// Server is the auth HTTP endpoint. It is a controller-runtime Runnable that
// runs on every replica, leader or not.
type Server struct {
	opts     Options
	index    *Index
	keyring  atomic.Pointer[session.Keyring]
	verifier *Verifier
	limiter  *FailureLimiter
	metrics  *serverMetrics
	conns    *listener.Metrics
	handler  http.Handler
	// served is the certificate watcher the TLS servers share, once the
	// first of them started it (tlsOnce).
	served  atomic.Pointer[certwatcher.CertWatcher]
	tlsOnce sync.Once
	tlsCfg  *tls.Config
	tlsErr  error
}

// New returns a server answering from index.
func New(index *Index, opts Options) (*Server, error) {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = time.Hour
	}
	s := &Server{opts: opts, index: index, limiter: NewFailureLimiter(opts.FailureRate, opts.FailureBurst)}
	s.verifier = &Verifier{Index: index, Keyring: s.keyring.Load}
	s.metrics = newServerMetrics()
	s.conns = opts.Connections
	if s.conns == nil {
		s.conns = listener.NewMetrics()
		if opts.Registerer != nil {
			if err := s.conns.Register(opts.Registerer); err != nil {
				return nil, fmt.Errorf("registering auth metrics: %w", err)
			}
		}
	}
	if opts.Registerer != nil {
		if err := s.metrics.register(opts.Registerer); err != nil {
			return nil, fmt.Errorf("registering auth metrics: %w", err)
		}
		if err := registerIndexMetrics(opts.Registerer, index); err != nil {
			return nil, fmt.Errorf("registering auth metrics: %w", err)
		}
		if err := opts.Registerer.Register(certificateExpiry{s}); err != nil {
			return nil, fmt.Errorf("registering auth metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/auth/verify", s.instrument(endpointVerify, s.handleVerify))
	mux.HandleFunc("/auth/verify/", s.instrument(endpointVerify, s.handleVerify))
	mux.HandleFunc("POST /auth/authenticate", s.instrument(endpointAuthenticate, s.handleAuthenticate))
	mux.HandleFunc("POST /tokenreview", s.instrument(endpointTokenReview, s.handleTokenReview))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	// Every error is JSON, 404 and 405 included (the mux's own are plain
	// text). A more specific method pattern above wins over these.
	mux.HandleFunc("/auth/authenticate", s.instrument(endpointAuthenticate, methodNotAllowed(s, http.MethodPost)))
	mux.HandleFunc("/tokenreview", s.instrument(endpointTokenReview, methodNotAllowed(s, http.MethodPost)))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { methodNotAllowed(s, http.MethodGet)(w, r) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { methodNotAllowed(s, http.MethodGet)(w, r) })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { s.writeError(w, ErrNotFound) })
	s.handler = mux
	return s, nil
}

// SetKeyring replaces the session signing keys.
func (s *Server) SetKeyring(k *session.Keyring) { s.keyring.Store(k) }

// Handler serves every endpoint.
func (s *Server) Handler() http.Handler { return s.handler }

// NeedLeaderElection is false: every replica serves.
func (s *Server) NeedLeaderElection() bool { return false }

// httpServer is the endpoint's http.Server: bounded header size and
// timeouts for every phase, so slow or idle clients cannot hold
// connections (and memory) for long.
func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connOpenedKey{}, listener.Opened(c))
		},
	}
}

// connOpenedKey holds, in a request's context, when its connection was
// accepted (listener.Opened).
type connOpenedKey struct{}

// closeIfOld ends a keep-alive connection older than maxConnectionAge after
// this response (Connection: close), so no client holds one for ever and
// clients rebalance across replicas after a scale-up; the request itself is
// answered as usual.
func closeIfOld(w http.ResponseWriter, r *http.Request, now time.Time) {
	if opened, _ := r.Context().Value(connOpenedKey{}).(time.Time); !opened.IsZero() && now.Sub(opened) > maxConnectionAge {
		w.Header().Set("Connection", "close")
	}
}

// tlsConfig is the TLS configuration of both servers (nil without
// certificate files): one certificate watcher, started by the first server
// to ask (the manager starts both with the same ctx) and kept until ctx
// ends, so a renewed certificate is served without a restart.
func (s *Server) tlsConfig(ctx context.Context) (*tls.Config, error) {
	if s.opts.TLSCertFile == "" || s.opts.TLSKeyFile == "" {
		return nil, nil
	}
	s.tlsOnce.Do(func() {
		watcher, err := certwatcher.New(s.opts.TLSCertFile, s.opts.TLSKeyFile)
		if err != nil {
			s.tlsErr = err
			return
		}
		go func() {
			if err := watcher.Start(ctx); err != nil {
				s.opts.Log.Error(err, "Stopped watching the TLS certificate")
			}
		}()
		s.served.Store(watcher)
		s.tlsCfg = &tls.Config{GetCertificate: watcher.GetCertificate, MinVersion: tls.VersionTLS12}
	})
	return s.tlsCfg, s.tlsErr
}

// Listener names in agentcred_listener_* metrics.
const (
	listenerHTTP        = "auth_http"
	listenerGRPC        = "auth_grpc"
	listenerGRPCStreams = "auth_grpc_streams"
)

// listen returns ln (or a new TCP listener on addr when ln is nil) bounded
// by l: every listener of the auth endpoint is made here.
func (s *Server) listen(ln net.Listener, addr string, l listener.Limits) (*listener.Listener, error) {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, err
		}
	}
	return listener.Wrap(ln, l, s.conns), nil
}

// Start serves until ctx is done, then shuts down gracefully.
func (s *Server) Start(ctx context.Context) error {
	maxConns := s.opts.MaxConnections
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	bounded, err := s.listen(s.opts.Listener, s.opts.Addr, listener.Limits{
		Name: listenerHTTP, Max: maxConns, Trusted: s.opts.TrustedProxies,
	})
	if err != nil {
		return fmt.Errorf("auth endpoint: %w", err)
	}
	srv := s.httpServer()
	var ln net.Listener = bounded
	tlsConfig, err := s.tlsConfig(ctx)
	if err != nil {
		return fmt.Errorf("auth endpoint TLS: %w", err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s.opts.Log.Info("Serving auth endpoint", "address", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			return err
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

func (s *Server) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	if !s.index.Synced() {
		http.Error(w, "hash index not synced", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok"))
}

// outcome is what a handler reports for metrics.
type outcome struct {
	method Method
	status int
	// environment of the credential (meaningless when method is MethodNone).
	environment credential.Environment
	// attempted is, when the request did not authenticate (method is
	// MethodNone), the method it tried, if its credential's shape tells.
	attempted Method
}

// identity is the outcome's (method, environment) label pair: a request
// that did not authenticate is labelled with the method it attempted and
// environment none.
func (o outcome) identity() identity {
	if o.method == MethodNone || o.method == "" {
		if o.attempted == "" {
			return identity{MethodNone, environmentNone}
		}
		return identity{o.attempted, environmentNone}
	}
	return identity{o.method, o.environment.String()}
}

// Indices into endpoints, for metrics.
const (
	endpointVerify = iota
	endpointAuthenticate
	endpointTokenReview
	endpointGRPC
)

func (s *Server) instrument(endpoint int, h func(http.ResponseWriter, *http.Request) outcome) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		closeIfOld(w, r, start)
		o := h(w, r)
		if o.method == MethodNone && o.attempted == "" {
			o.attempted = attempted(r.Header)
		}
		s.metrics.observe(endpoint, o, time.Since(start))
	}
}

// authorize verifies r and applies throttling of failures.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (Identity, *Error) {
	now := s.opts.Clock.Now()
	id, verr := s.verifier.Verify(r.Header, now)
	if verr == nil {
		return id, nil
	}
	verr, wait := s.throttle(verr, ClientAddress(r, s.opts.TrustedProxies), now)
	if wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
	}
	return Identity{}, verr
}

// throttle is the one rule of failure throttling, for every transport: a
// guess — a credential that is unknown, mistyped (bad checksum) or badly
// signed — drains the client's budget, and past it is answered
// ErrRateLimited with the wait; every other refusal (agent_not_permitted,
// expired_session, …) is a real answer about a real credential, keeps it,
// and costs the client nothing, so a guesser behind the same address or
// proxy cannot turn other callers' answers into 429s.
func (s *Server) throttle(verr *Error, client netip.Addr, now time.Time) (*Error, time.Duration) {
	if verr != ErrInvalidCredentials && verr != ErrMistypedKey {
		return verr, 0
	}
	if ok, wait := s.limiter.Fail(client, now); !ok {
		return ErrRateLimited, wait
	}
	return verr, 0
}

// Response headers of ?mode=auth_request refusals.
const (
	HeaderErrorStatus = "X-Auth-Error-Status"
	HeaderErrorCode   = "X-Auth-Error-Code"
)

// Refusals of the query parameters.
var (
	// ErrUnknownMode: /auth/verify?mode= names no mode.
	ErrUnknownMode = &Error{http.StatusBadRequest, "invalid_request", "unknown mode: the only one is mode=auth_request"}
	// ErrUnknownEnvironment: ?environment= is neither live nor sandbox.
	ErrUnknownEnvironment = &Error{http.StatusBadRequest, "invalid_request", "unknown environment: use environment=live or environment=sandbox"}
	// ErrEnvironmentNotPermitted: a valid credential of the other environment.
	ErrEnvironmentNotPermitted = &Error{http.StatusForbidden, "environment_not_permitted", "this route does not accept credentials of this environment (see X-Auth-Environment on /auth/verify)"}
)

func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) outcome {
	q, qerr := parseQuery(r.URL.RawQuery)
	if qerr != nil {
		return s.writeError(w, qerr)
	}
	id, err := s.authorize(w, r)
	if err == nil && !q.permits(id.Entry.Environment) {
		err = ErrEnvironmentNotPermitted
	}
	if err != nil {
		if q.forward {
			return s.writeForwardAuthError(w, err)
		}
		return s.writeError(w, err)
	}
	// The identity headers share one backing array: one allocation per
	// response instead of one per header (this is the hot path).
	vals := [...]string{id.AgentID, string(id.Method), id.KeyID, id.Credential, id.User, id.Entry.Environment.String()}
	all := vals[:]
	h := w.Header()
	h[HeaderAgentID] = all[0:1:1]
	h[HeaderMethod] = all[1:2:2]
	h[HeaderKeyID] = all[2:3:3]
	h[HeaderCredential] = all[3:4:4]
	// Present even when empty: proxies that copy the auth response's
	// headers upstream then overwrite a client-sent X-Auth-User.
	h[HeaderUser] = all[4:5:5]
	h[HeaderEnvironment] = all[5:6:6]
	h[HeaderEnvoyHeadersToRemove] = credentialHeaderList
	w.WriteHeader(http.StatusOK)
	return outcome{method: id.Method, status: http.StatusOK, environment: id.Entry.Environment}
}

// query is what the query string of /auth/verify and /auth/authenticate asks.
type query struct {
	// forward: mode=auth_request.
	forward bool
	// environment, when set, is the only environment the route accepts.
	environment *credential.Environment
}

var (
	liveOnly    = credential.Live
	sandboxOnly = credential.Sandbox
)

func (q query) permits(env credential.Environment) bool {
	return q.environment == nil || *q.environment == env
}

// parseQuery reads mode= and environment= without allocating (the hot path
// of a forward-auth route); other parameters are ignored. Values are taken
// literally: the valid ones need no escaping.
func parseQuery(raw string) (query, *Error) {
	var q query
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		name, value, _ := strings.Cut(pair, "=")
		switch name {
		case "mode":
			if value != "" && value != "auth_request" {
				return q, ErrUnknownMode
			}
			q.forward = value == "auth_request"
		case "environment":
			switch value {
			case "live":
				q.environment = &liveOnly
			case "sandbox":
				q.environment = &sandboxOnly
			default:
				return q, ErrUnknownEnvironment
			}
		}
	}
	return q, nil
}

// tokenResponse is the body of a successful POST /auth/authenticate.
type tokenResponse struct {
	Token     string `json:"token"`
	TokenType string `json:"token_type"`
	ExpiresAt string `json:"expires_at"`
	ExpiresIn int64  `json:"expires_in"`
	AgentID   string `json:"agent_id"`
}

// ErrNotFound and ErrMethodNotAllowed keep 404 and 405 in the JSON error format.
var (
	ErrNotFound         = &Error{http.StatusNotFound, "not_found", "no such endpoint: use /auth/verify, /auth/authenticate or /tokenreview"}
	ErrMethodNotAllowed = &Error{http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed here; see the Allow header"}
)

// methodNotAllowed answers 405 in JSON with the one allowed method.
func methodNotAllowed(s *Server, allowed string) func(http.ResponseWriter, *http.Request) outcome {
	return func(w http.ResponseWriter, _ *http.Request) outcome {
		w.Header().Set("Allow", allowed)
		return s.writeError(w, ErrMethodNotAllowed)
	}
}

// ErrInternal: something on the server side failed (logged); retry.
var ErrInternal = &Error{http.StatusInternalServerError, "internal_error", "could not mint a session; retry"}

// Errors lists every refusal the endpoint answers with, for the docs check
// (test/docs: each documented code exists and each is documented).
func Errors() []*Error {
	return []*Error{
		ErrConflictingCredentials, ErrInvalidAgentID, ErrAgentIDRequired, ErrMissingCredentials, ErrInvalidCredentials,
		ErrExpiredSession, ErrExpiredCredentials, ErrRevokedSession, ErrAgentNotPermitted, ErrRateLimited,
		ErrTokenInAPIKeyHeader, ErrSchemeInAPIKeyHeader, ErrMistypedKey, ErrUnknownMode, ErrUnknownEnvironment,
		ErrEnvironmentNotPermitted, ErrNotFound, ErrMethodNotAllowed, ErrSessionsUnavailable, ErrMintWithRotatedKey,
		ErrSessionFromSession, ErrInternal, ErrInvalidTokenReview,
	}
}

// ErrSessionsUnavailable: no signing key has been published yet.
var ErrSessionsUnavailable = &Error{http.StatusServiceUnavailable, "sessions_unavailable", "no session signing key is available yet; retry shortly"}

// ErrMintWithRotatedKey: sessions are minted only from a credential's current key.
var ErrMintWithRotatedKey = &Error{http.StatusUnauthorized, "invalid_credentials", "this key has been rotated; mint sessions with the current key from the agent Secret"}

// ErrSessionFromSession: a session cannot mint another.
var ErrSessionFromSession = &Error{http.StatusUnauthorized, "invalid_credentials", "authenticate with an API key or user token, not a session token"}

func (s *Server) handleAuthenticate(w http.ResponseWriter, r *http.Request) outcome {
	q, qerr := parseQuery(r.URL.RawQuery)
	if qerr != nil {
		return s.writeError(w, qerr)
	}
	id, err := s.authorize(w, r)
	if err != nil {
		return s.writeError(w, err)
	}
	if !q.permits(id.Entry.Environment) {
		return s.writeError(w, ErrEnvironmentNotPermitted)
	}
	if id.Method == MethodSession {
		return s.writeError(w, ErrSessionFromSession)
	}
	if id.KeyID != id.Entry.Current.KeyID() {
		// A key in its grace period still verifies, but a session minted
		// from it would die with the rotation that already happened.
		return s.writeError(w, ErrMintWithRotatedKey)
	}
	now := s.opts.Clock.Now()
	key, ok := s.keyring.Load().SigningKey(now)
	if !ok {
		return s.writeError(w, ErrSessionsUnavailable)
	}
	ttl := s.opts.SessionTTL
	if c := id.Entry.SessionTTL; c > 0 && c < ttl {
		ttl = c
	}
	expires := now.Add(ttl).Truncate(time.Second)
	if expires.After(key.ExpiresAt) {
		expires = key.ExpiresAt // no session outlives the key that verifies it
	}
	if e := id.Entry.ExpiresAt; !e.IsZero() && expires.After(e) {
		expires = e // nor the credential's hard expiry
	}
	token, mintErr := session.Mint(session.Claims{
		AgentID: id.AgentID, KeyID: id.KeyID, Credential: id.Credential, IssuedAt: now, ExpiresAt: expires,
	}, key)
	if mintErr != nil {
		s.opts.Log.Error(mintErr, "Failed to mint a session", "credential", id.Credential, "keyID", id.KeyID)
		return s.writeError(w, ErrInternal)
	}
	s.opts.Log.V(1).Info("Minted session", "credential", id.Credential, "keyID", id.KeyID, "agentID", id.AgentID, "expiresAt", expires)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(tokenResponse{
		Token: token, TokenType: "Bearer", ExpiresAt: expires.UTC().Format(time.RFC3339),
		ExpiresIn: int64(math.Ceil(expires.Sub(now).Seconds())), AgentID: id.AgentID,
	})
	return outcome{method: id.Method, status: http.StatusOK, environment: id.Entry.Environment}
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// body is e as the JSON error body every endpoint answers with.
func (e *Error) body() errorBody {
	var b errorBody
	b.Error.Code, b.Error.Message = e.Code, e.Message
	return b
}

// writeError writes the JSON error of SPEC §6.
func (s *Server) writeError(w http.ResponseWriter, e *Error) outcome {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", wwwAuthenticate(e))
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(e.body())
	return outcome{method: MethodNone, status: e.Status}
}

// writeForwardAuthError answers a refusal for nginx auth_request (and
// other forward-auth callers that pass only 401 and 403): 403 stays 403,
// every other status becomes 401, and the original status and code travel
// in X-Auth-Error-Status and X-Auth-Error-Code (Retry-After is kept), so the
// proxy can answer the client with the real status.
func (s *Server) writeForwardAuthError(w http.ResponseWriter, e *Error) outcome {
	h := w.Header()
	h.Set(HeaderErrorStatus, strconv.Itoa(e.Status))
	h.Set(HeaderErrorCode, e.Code)
	if e.Status == http.StatusForbidden || e.Status == http.StatusUnauthorized {
		return s.writeError(w, e)
	}
	s.writeError(w, &Error{http.StatusUnauthorized, e.Code, e.Message})
	return outcome{method: MethodNone, status: e.Status}
}

func wwwAuthenticate(e *Error) string {
	switch e.Code {
	case "missing_credentials":
		return `Bearer realm="agentcred"`
	case "expired_session":
		return `Bearer realm="agentcred", error="invalid_token", error_description="session expired"`
	case "expired_credentials":
		return `Bearer realm="agentcred", error="invalid_token", error_description="credential expired"`
	default:
		return `Bearer realm="agentcred", error="invalid_token"`
	}
}
