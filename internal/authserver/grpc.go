package authserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/agrenting/agentcred/internal/listener"
)

// ContextExtensionEnvironment is the ext_authz context extension a route
// sets to accept credentials of one environment only (live or sandbox) —
// the gRPC twin of ?environment= on /auth/verify. It is read from the route
// configuration (check_settings.context_extensions), never from the
// client's request path, which the client controls.
const ContextExtensionEnvironment = "environment"

// MetadataNamespace holds the identity in the CheckResponse's dynamic
// metadata, under the ext_authz filter's own namespace, so that later
// filters (rate limiting by agent, access logs) can key on it.
const MetadataNamespace = "agentcred"

// credentialHeaders are removed from the request before it goes upstream:
// the upstream needs the identity, not the key.
var credentialHeaders = []string{"x-api-key", "api-key", "authorization"}

// The gRPC server's bounds. A stream costs at most its header list and its
// message (grpc-go allocates the declared length when the message starts),
// so the concurrent streams bound the process's memory:
// grpcMaxStreams × (maxCheckHeaders + maxCheckRequest) = 68 MiB at most,
// whatever clients send; the connections are bounded by the listener.
const (
	// maxCheckRequest bounds a CheckRequest: Envoy sends the request's
	// headers (its own limit is 60 KiB by default), and a body only with
	// with_request_body, which must stay below this.
	maxCheckRequest = 256 << 10
	// maxCheckHeaders bounds a stream's metadata (grpc-go's default is
	// 16 MiB); Envoy's own metadata on the call is a few hundred bytes.
	maxCheckHeaders = 16 << 10
	// grpcMaxStreams bounds the streams in flight across every connection,
	// shared as connections are (listener.Limits: per source, a quarter
	// kept for --trusted-proxies).
	grpcMaxStreams = 256
	// grpcStreamsPerConnection is advertised in SETTINGS: Envoy opens
	// another connection beyond it.
	grpcStreamsPerConnection = 100
	// grpcMaxConnections bounds the listener's connections (each costs the
	// transport's buffers, about 70 KiB).
	grpcMaxConnections = 512
	// grpcRequestDeadline bounds a call from its first byte, the receive of
	// its message included: Envoy's own ext_authz timeout is 200 ms, so a
	// stream still open after this is a stalled or hostile one.
	grpcRequestDeadline = 2 * time.Second
	// Connections are closed (GOAWAY, then the grace for calls in flight)
	// after maxConnectionAge, so a held connection does not last and
	// clients rebalance across replicas after a scale-up.
	maxConnectionAge      = 10 * time.Minute
	maxConnectionAgeGrace = 30 * time.Second
)

// GRPCOptions configure the Envoy ext_authz gRPC server.
type GRPCOptions struct {
	// Addr to listen on, e.g. ":9001". Ignored when Listener is set.
	Addr string
	// Listener, if set, is used instead of listening on Addr (tests).
	Listener net.Listener
}

// GRPCServer answers envoy.service.auth.v3.Authorization/Check with the
// same decisions, throttling and metrics (endpoint="grpc") as /auth/verify,
// and serves the gRPC health service. Reflection is off. It is a
// controller-runtime Runnable on every replica.
type GRPCServer struct {
	authv3.UnimplementedAuthorizationServer
	s    *Server
	opts GRPCOptions
	// streams bounds the calls in flight (grpcMaxStreams).
	streams *listener.Slots
}

// GRPC returns the ext_authz gRPC server of s (TLS from s's options).
func (s *Server) GRPC(opts GRPCOptions) *GRPCServer {
	return &GRPCServer{s: s, opts: opts, streams: listener.NewSlots(listener.Limits{
		Name: listenerGRPCStreams, Max: grpcMaxStreams, Trusted: s.opts.TrustedProxies,
	})}
}

// NeedLeaderElection is false: every replica serves.
func (g *GRPCServer) NeedLeaderElection() bool { return false }

// ErrTooManyStreams refuses a stream past grpcMaxStreams or its source's share.
var ErrTooManyStreams = status.Error(codes.ResourceExhausted, "too many concurrent calls from this source or in total; retry")

// admitStream runs when a stream opens, before anything is read for it
// (under the transport's lock: it must not block). It takes one of the
// server's stream slots for the caller and bounds the whole call, its
// receive included, by grpcRequestDeadline; the slot is given back when the
// stream ends or the deadline passes, whichever is first. A newcomer may
// evict the oldest call of the source holding the most (listener.Slots):
// that call is cancelled.
func (g *GRPCServer) admitStream(ctx context.Context, _ *tap.Info) (context.Context, error) {
	addr := peerAddr(ctx)
	ctx, cancel := context.WithTimeout(ctx, grpcRequestDeadline)
	slot, reason := g.streams.Take(addr, func() {
		g.s.conns.Refused(listenerGRPCStreams, listener.ReasonEvicted)
		cancel()
	})
	if reason != "" {
		cancel()
		g.s.conns.Refused(listenerGRPCStreams, reason)
		return nil, ErrTooManyStreams
	}
	context.AfterFunc(ctx, func() {
		cancel()
		g.streams.Release(slot)
	})
	return ctx, nil
}

// peerAddr is the address of the gRPC caller (invalid if unknown).
func peerAddr(ctx context.Context) netip.Addr {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return parseAddr(p.Addr.String())
	}
	return netip.Addr{}
}

// Check decides one request Envoy forwards.
func (g *GRPCServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	resp, o := g.check(ctx, req)
	g.s.metrics.observe(endpointGRPC, o, time.Since(start))
	return resp, nil
}

func (g *GRPCServer) check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, outcome) {
	attrs := req.GetAttributes()
	q, qerr := routeEnvironment(attrs.GetContextExtensions())
	if qerr != nil {
		return denied(qerr, 0)
	}
	in := attrs.GetRequest().GetHttp().GetHeaders()
	h := make(http.Header, len(in))
	for k, v := range in {
		// Envoy sends lower-case names; two spellings of one name are two
		// values, so "exactly one credential" still holds.
		ck := http.CanonicalHeaderKey(k)
		h[ck] = append(h[ck], v)
	}
	now := g.s.opts.Clock.Now()
	id, verr := g.s.verifier.Verify(h, now)
	if verr != nil {
		verr, wait := g.s.throttle(verr, g.clientAddress(ctx, attrs), now)
		return deniedAttempt(verr, wait, h)
	}
	if !q.permits(id.Entry.Environment) {
		return deniedAttempt(ErrEnvironmentNotPermitted, 0, h)
	}
	return allowed(id), outcome{method: id.Method, status: http.StatusOK, environment: id.Entry.Environment}
}

// deniedAttempt is denied, with the method the request's headers attempted
// for metrics.
func deniedAttempt(e *Error, retryAfter time.Duration, h http.Header) (*authv3.CheckResponse, outcome) {
	resp, o := denied(e, retryAfter)
	o.attempted = attempted(h)
	return resp, o
}

// routeEnvironment reads the route's environment restriction.
func routeEnvironment(ext map[string]string) (query, *Error) {
	v, ok := ext[ContextExtensionEnvironment]
	if !ok {
		return query{}, nil
	}
	return parseQuery("environment=" + v)
}

// clientAddress is the address throttling counts failures against: the
// downstream client Envoy reports, when the gRPC caller is a trusted proxy
// (--trusted-proxies); otherwise the caller itself, so a pod calling the
// port directly cannot pick a fresh address per attempt.
func (g *GRPCServer) clientAddress(ctx context.Context, attrs *authv3.AttributeContext) netip.Addr {
	caller := peerAddr(ctx)
	if !caller.IsValid() || !listener.IsTrusted(caller, g.s.opts.TrustedProxies) {
		return caller
	}
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		if a := parseAddr(sa.GetAddress()); a.IsValid() {
			return a
		}
	}
	return caller
}

// allowed is the OK answer: the identity as headers that overwrite any the
// client sent, credential headers removed, and the identity as dynamic
// metadata.
func allowed(id Identity) *authv3.CheckResponse {
	env := id.Entry.Environment.String()
	headers := []*corev3.HeaderValueOption{
		setHeader(HeaderAgentID, id.AgentID), setHeader(HeaderMethod, string(id.Method)),
		setHeader(HeaderKeyID, id.KeyID), setHeader(HeaderCredential, id.Credential),
		setHeader(HeaderUser, id.User), setHeader(HeaderEnvironment, env),
	}
	// Built directly: structpb.NewStruct goes through reflection.
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		MetadataNamespace: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"agent_id": structpb.NewStringValue(id.AgentID), "credential": structpb.NewStringValue(id.Credential),
			"key_id": structpb.NewStringValue(id.KeyID), "method": structpb.NewStringValue(string(id.Method)),
			"environment": structpb.NewStringValue(env),
		}}),
	}}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: headers, HeadersToRemove: credentialHeaders,
		}},
		DynamicMetadata: md,
	}
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// denied is a refusal with the same status, JSON body and headers as the
// HTTP endpoint's.
func denied(e *Error, retryAfter time.Duration) (*authv3.CheckResponse, outcome) {
	raw, _ := json.Marshal(e.body())
	headers := []*corev3.HeaderValueOption{setHeader("Content-Type", "application/json")}
	if e.Status == http.StatusUnauthorized {
		headers = append(headers, setHeader("WWW-Authenticate", wwwAuthenticate(e)))
	}
	if retryAfter > 0 {
		headers = append(headers, setHeader("Retry-After", strconv.Itoa(retryAfterSeconds(retryAfter))))
	}
	code := codes.PermissionDenied
	switch e.Status {
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusBadRequest:
		code = codes.InvalidArgument
	case http.StatusTooManyRequests:
		code = codes.ResourceExhausted
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: e.Code},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(e.Status)},
			Headers: headers,
			Body:    string(raw) + "\n",
		}},
	}, outcome{method: MethodNone, status: e.Status}
}

// Start serves until ctx is done, then stops gracefully (forcibly after 10 s).
func (g *GRPCServer) Start(ctx context.Context) error {
	ln, err := g.s.listen(g.opts.Listener, g.opts.Addr, listener.Limits{
		Name: listenerGRPC, Max: grpcMaxConnections, Trusted: g.s.opts.TrustedProxies,
	})
	if err != nil {
		return fmt.Errorf("ext_authz gRPC server: %w", err)
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxCheckRequest),
		grpc.MaxHeaderListSize(maxCheckHeaders),
		grpc.MaxConcurrentStreams(grpcStreamsPerConnection),
		// Fixed windows (no BDP growth to 16 MiB): what a stalled stream or
		// connection can make the server buffer stays small.
		grpc.InitialWindowSize(64 << 10), grpc.InitialConnWindowSize(1 << 20),
		grpc.ReadBufferSize(16 << 10), grpc.WriteBufferSize(16 << 10),
		grpc.ConnectionTimeout(5 * time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 5 * time.Minute, MaxConnectionAge: maxConnectionAge, MaxConnectionAgeGrace: maxConnectionAgeGrace,
		}),
		grpc.InTapHandle(g.admitStream),
	}
	tlsConfig, err := g.s.tlsConfig(ctx)
	if err != nil {
		return fmt.Errorf("ext_authz gRPC server TLS: %w", err)
	}
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	srv := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(srv, g)
	hs := health.NewServer()
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	g.s.opts.Log.Info("Serving Envoy ext_authz over gRPC", "address", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		hs.Shutdown()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			srv.Stop()
		}
		if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	}
}
