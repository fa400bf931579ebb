package authserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// grpcFixture is the ext_authz gRPC server on loopback in front of the
// verify fixture, and a client connected to it.
type grpcFixture struct {
	*testServer
	client authv3.AuthorizationClient
	conn   *grpc.ClientConn
}

func startGRPC(t *testing.T, mutate ...func(*Options)) *grpcFixture {
	t.Helper()
	ts := startServer(t, mutate...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.srv.GRPC(GRPCOptions{Listener: ln}).Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gRPC server: %v", err)
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &grpcFixture{testServer: ts, client: authv3.NewAuthorizationClient(conn), conn: conn}
}

// checkRequest is what Envoy sends: lower-case header names, the client's
// path, the route's context extensions and the downstream address.
func checkRequest(headers map[string]string, ext map[string]string, source string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/orders/42", Headers: headers,
		}},
		ContextExtensions: ext,
	}}
}

func headerOf(resp *authv3.CheckResponse, name string) (string, bool) {
	var hs []*corev3.HeaderValueOption
	if ok := resp.GetOkResponse(); ok != nil {
		hs = ok.GetHeaders()
	} else {
		hs = resp.GetDeniedResponse().GetHeaders()
	}
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), name) {
			return h.GetHeader().GetValue(), true
		}
	}
	return "", false
}

func TestGRPCCheck(t *testing.T) {
	f := startGRPC(t, func(o *Options) { o.FailureRate = 0 })
	ctx := context.Background()
	tests := []struct {
		name    string
		headers map[string]string
		ext     map[string]string
		status  int
		code    string
		rpc     codes.Code
		agent   string
		env     string
	}{
		{"api key", map[string]string{"x-api-key": f.apiKey}, nil, 200, "", codes.OK, agentA, "live"},
		{"bearer user token with agent", map[string]string{"authorization": "Bearer " + f.multiToken, "x-agent-id": agentB}, nil, 200, "", codes.OK, agentB, "live"},
		{"session", map[string]string{"authorization": "Bearer " + f.session}, nil, 200, "", codes.OK, agentA, "live"},
		{"sandbox key", map[string]string{"x-api-key": f.sandboxKey}, nil, 200, "", codes.OK, agentC, "sandbox"},
		{"sandbox key on a live route", map[string]string{"x-api-key": f.sandboxKey}, map[string]string{"environment": "live"}, 403, "environment_not_permitted", codes.PermissionDenied, "", ""},
		{"live key on a sandbox route", map[string]string{"x-api-key": f.apiKey}, map[string]string{"environment": "sandbox"}, 403, "environment_not_permitted", codes.PermissionDenied, "", ""},
		{"live key on a live route", map[string]string{"x-api-key": f.apiKey}, map[string]string{"environment": "live"}, 200, "", codes.OK, agentA, "live"},
		{"unknown route environment", map[string]string{"x-api-key": f.apiKey}, map[string]string{"environment": "prod"}, 400, "invalid_request", codes.InvalidArgument, "", ""},
		{"missing", map[string]string{}, nil, 401, "missing_credentials", codes.Unauthenticated, "", ""},
		{"invalid", map[string]string{"x-api-key": "ak_nope"}, nil, 401, "invalid_credentials", codes.Unauthenticated, "", ""},
		{"expired credential", map[string]string{"x-api-key": f.expiredKey}, nil, 401, "expired_credentials", codes.Unauthenticated, "", ""},
		{"conflict", map[string]string{"x-api-key": f.apiKey, "authorization": "Bearer " + f.userToken}, nil, 400, "conflicting_credentials", codes.InvalidArgument, "", ""},
		{"agent required", map[string]string{"authorization": "Bearer " + f.multiToken}, nil, 400, "agent_id_required", codes.InvalidArgument, "", ""},
		{"agent not permitted", map[string]string{"authorization": "Bearer " + f.multiToken, "x-agent-id": agentC}, nil, 403, "agent_not_permitted", codes.PermissionDenied, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := f.client.Check(ctx, checkRequest(tt.headers, tt.ext, "10.1.2.3"))
			if err != nil {
				t.Fatal(err)
			}
			if codes.Code(resp.GetStatus().GetCode()) != tt.rpc {
				t.Fatalf("rpc status %v, want %v", codes.Code(resp.GetStatus().GetCode()), tt.rpc)
			}
			if tt.status != 200 {
				d := resp.GetDeniedResponse()
				if d == nil || int(d.GetStatus().GetCode()) != tt.status || errorCode(t, d.GetBody()) != tt.code {
					t.Fatalf("denied response %v, want %d %s", d, tt.status, tt.code)
				}
				if ct, _ := headerOf(resp, "Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type %q", ct)
				}
				if www, ok := headerOf(resp, "WWW-Authenticate"); (tt.status == 401) != ok || (ok && !strings.HasPrefix(www, "Bearer")) {
					t.Fatalf("WWW-Authenticate %q present=%v on a %d", www, ok, tt.status)
				}
				if ra, ok := headerOf(resp, "Retry-After"); ok {
					t.Fatalf("Retry-After %q on a %d", ra, tt.status)
				}
				return
			}
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("not OK: %v", resp)
			}
			// Every identity header is set, overwriting what the client sent.
			for _, h := range []string{HeaderAgentID, HeaderMethod, HeaderKeyID, HeaderCredential, HeaderUser, HeaderEnvironment} {
				found := false
				for _, o := range ok.GetHeaders() {
					if o.GetHeader().GetKey() == h {
						found = true
						if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
							t.Fatalf("%s would be appended to a client-sent one", h)
						}
					}
				}
				if !found {
					t.Fatalf("OK response lacks %s", h)
				}
			}
			if v, _ := headerOf(resp, HeaderAgentID); v != tt.agent {
				t.Fatalf("X-Auth-Agent-Id %q, want %q", v, tt.agent)
			}
			if v, _ := headerOf(resp, HeaderEnvironment); v != tt.env {
				t.Fatalf("X-Auth-Environment %q, want %q", v, tt.env)
			}
			if strings.Join(ok.GetHeadersToRemove(), ",") != "x-api-key,api-key,authorization" {
				t.Fatalf("headers to remove: %v", ok.GetHeadersToRemove())
			}
			md := resp.GetDynamicMetadata().GetFields()[MetadataNamespace].GetStructValue().GetFields()
			if md["agent_id"].GetStringValue() != tt.agent || md["environment"].GetStringValue() != tt.env ||
				md["credential"].GetStringValue() == "" || len(md["key_id"].GetStringValue()) != 12 || md["method"].GetStringValue() == "" {
				t.Fatalf("dynamic metadata %v", md)
			}
		})
	}
	if n := testutil.ToFloat64(f.srv.metrics.requests.WithLabelValues("grpc", "api_key", "sandbox", "200")); n != 1 {
		t.Fatalf(`agentcred_auth_requests_total{endpoint="grpc",method="api_key",environment="sandbox",code="200"} = %v, want 1`, n)
	}
	// Refusals count under the method they attempted: the missing
	// credential under none, the invalid and the expired key under api_key.
	if n := testutil.ToFloat64(f.srv.metrics.requests.WithLabelValues("grpc", "none", "none", "401")); n != 1 {
		t.Fatalf(`grpc 401s without a credential counted %v times, want 1`, n)
	}
	if n := testutil.ToFloat64(f.srv.metrics.requests.WithLabelValues("grpc", "api_key", "none", "401")); n != 2 {
		t.Fatalf(`grpc 401s of API keys counted %v times, want 2`, n)
	}
	// The health service answers; reflection is off.
	h, err := healthpb.NewHealthClient(f.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	err = f.conn.Invoke(ctx, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if err == nil {
		t.Fatal("reflection answered")
	}
}

// TestGRPCThrottling: failures count against the downstream address Envoy
// reports only when the caller is a trusted proxy; otherwise against the
// caller, so a pod calling the port directly cannot pick fresh addresses.
func TestGRPCThrottling(t *testing.T) {
	ctx := context.Background()
	fail := func(f *grpcFixture, source string) *authv3.CheckResponse {
		t.Helper()
		resp, err := f.client.Check(ctx, checkRequest(map[string]string{"x-api-key": "ak_nope"}, nil, source))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	untrusted := startGRPC(t, func(o *Options) { o.FailureRate, o.FailureBurst = 0.001, 1 })
	fail(untrusted, "10.0.0.1")
	resp := fail(untrusted, "10.0.0.2") // a fresh "source" per attempt does not help
	if d := resp.GetDeniedResponse(); int(d.GetStatus().GetCode()) != 429 || errorCode(t, d.GetBody()) != "rate_limited" {
		t.Fatalf("second failure from an untrusted caller: %v", d)
	}
	if ra, ok := headerOf(resp, "Retry-After"); !ok || ra == "" {
		t.Fatal("429 without Retry-After")
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.ResourceExhausted {
		t.Fatalf("rpc status %v", resp.GetStatus())
	}
	// A valid key is never throttled.
	ok, err := untrusted.client.Check(ctx, checkRequest(map[string]string{"x-api-key": untrusted.apiKey}, nil, "10.0.0.1"))
	if err != nil || ok.GetOkResponse() == nil {
		t.Fatalf("a valid key after throttling: %v %v", ok, err)
	}

	trusted := startGRPC(t, func(o *Options) {
		o.FailureRate, o.FailureBurst = 0.001, 1
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	fail(trusted, "10.0.0.1")
	if d := fail(trusted, "10.0.0.2").GetDeniedResponse(); int(d.GetStatus().GetCode()) != 401 {
		t.Fatalf("another client behind a trusted Envoy was throttled: %v", d)
	}
	if d := fail(trusted, "10.0.0.1").GetDeniedResponse(); int(d.GetStatus().GetCode()) != 429 {
		t.Fatalf("the same client behind a trusted Envoy was not throttled: %v", d)
	}
}

func TestGRPCOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeSelfSigned(t, certFile, keyFile, 1)
	f := newFixture(t)
	srv, err := New(f.verifier.Index, Options{TLSCertFile: certFile, TLSKeyFile: keyFile, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.GRPC(GRPCOptions{Listener: ln}).Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gRPC server: %v", err)
		}
	}()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}))) //nolint:gosec // self-signed test certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(cctx, checkRequest(map[string]string{"x-api-key": f.apiKey}, nil, "10.0.0.1"))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("Check over TLS: %v %v", resp, err)
	}
	plain, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := authv3.NewAuthorizationClient(plain).Check(cctx, checkRequest(nil, nil, "")); err == nil {
		t.Fatal("a plaintext client was served by the TLS server")
	}
}

// TestGRPCBadInput: whatever Envoy (or anyone) sends gets a clean denial
// or a gRPC status, never a panic or an allowed request by accident.
func TestGRPCBadInput(t *testing.T) {
	f := startGRPC(t, func(o *Options) { o.FailureRate = 0 })
	ctx := context.Background()
	code := func(resp *authv3.CheckResponse) string {
		d := resp.GetDeniedResponse()
		if d == nil {
			return "allowed"
		}
		return errorCode(t, d.GetBody())
	}
	// No attributes at all, and no HTTP request in them.
	for _, req := range []*authv3.CheckRequest{{}, {Attributes: &authv3.AttributeContext{}}} {
		resp, err := f.client.Check(ctx, req)
		if err != nil || code(resp) != "missing_credentials" {
			t.Fatalf("empty request: %v %v", resp, err)
		}
	}
	// Two spellings of one header are two values: conflicting, not a coin toss.
	resp, err := f.client.Check(ctx, checkRequest(map[string]string{"x-api-key": f.apiKey, "X-API-KEY": f.oldAPIKey}, nil, ""))
	if err != nil || code(resp) != "conflicting_credentials" {
		t.Fatalf("mixed-case duplicate credential header: %v %v", resp, err)
	}
	// 10,000 unrelated headers are ignored; the key still decides.
	many := map[string]string{"x-api-key": f.apiKey}
	for i := range 10_000 {
		many[fmt.Sprintf("x-junk-%d", i)] = "v"
	}
	resp, err = f.client.Check(ctx, checkRequest(many, nil, ""))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("10,000 headers: %v %v", resp, err)
	}
	// A large message within the 1 MiB limit is served...
	large := map[string]string{"x-api-key": f.apiKey, "x-big": strings.Repeat("a", maxCheckRequest-64<<10)}
	resp, err = f.client.Check(ctx, checkRequest(large, nil, ""))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("a 900 KiB request: %v %v", resp, err)
	}
	// ... and an oversized one is refused by gRPC itself.
	huge := map[string]string{"x-api-key": f.apiKey, "x-big": strings.Repeat("a", 2<<20)}
	if _, err := f.client.Check(ctx, checkRequest(huge, nil, "")); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a 2 MiB request: %v, want ResourceExhausted", err)
	}
	// A cancelled call ends cleanly and the server keeps serving.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.client.Check(cctx, checkRequest(map[string]string{"x-api-key": f.apiKey}, nil, "")); status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled call: %v", err)
	}
	resp, err = f.client.Check(ctx, checkRequest(map[string]string{"x-api-key": f.apiKey}, nil, ""))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("after a cancelled call: %v %v", resp, err)
	}
}

// FuzzCheck: the CheckRequest → decision mapping never panics, refuses
// only with documented codes, and allows only with a full identity.
func FuzzCheck(f *testing.F) {
	fx := newFixture(f)
	srv, err := New(fx.verifier.Index, Options{Log: logr.Discard()})
	if err != nil {
		f.Fatal(err)
	}
	g := srv.GRPC(GRPCOptions{})
	f.Add("x-api-key", fx.apiKey, "authorization", "", "", "10.0.0.1")
	f.Add("X-Api-Key", fx.sandboxKey, "x-api-key", fx.apiKey, "live", "")
	f.Add("authorization", "Bearer "+fx.multiToken, "x-agent-id", agentB, "sandbox", "::1")
	f.Add("", "", "", "", "staging", "not an address")
	documented := map[string]bool{}
	for _, e := range []*Error{ErrConflictingCredentials, ErrInvalidAgentID, ErrAgentIDRequired, ErrMissingCredentials, ErrInvalidCredentials,
		ErrExpiredSession, ErrRevokedSession, ErrAgentNotPermitted, ErrTokenInAPIKeyHeader, ErrSchemeInAPIKeyHeader, ErrMistypedKey,
		ErrExpiredCredentials, ErrEnvironmentNotPermitted, ErrUnknownEnvironment, ErrRateLimited} {
		documented[e.Code] = true
	}
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, env, source string) {
		ext := map[string]string{}
		if env != "" {
			ext["environment"] = env
		}
		resp, err := g.Check(context.Background(), checkRequest(map[string]string{k1: v1, k2: v2}, ext, source))
		if err != nil {
			t.Fatal(err)
		}
		if d := resp.GetDeniedResponse(); d != nil {
			if !documented[errorCode(t, d.GetBody())] {
				t.Fatalf("undocumented refusal %s", d.GetBody())
			}
			return
		}
		for _, h := range []string{HeaderAgentID, HeaderCredential, HeaderKeyID} {
			if v, _ := headerOf(resp, h); v == "" {
				t.Fatalf("allowed without %s: %v", h, resp)
			}
		}
	})
}
