package authserver

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// bareAuthz answers every Check with OK and nothing else: the floor a
// gRPC ext_authz server costs on this machine.
type bareAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (bareAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
}

// BenchmarkCheck is the ext_authz decision in-process (no network): a
// CheckRequest with an API key, 100,000 credentials indexed.
func BenchmarkCheck(b *testing.B) {
	v, keys, _, _ := benchIndex(b, 100_000)
	srv, err := New(v.Index, Options{Log: logr.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	g := srv.GRPC(GRPCOptions{})
	reqs := make([]*authv3.CheckRequest, len(keys))
	for i, k := range keys {
		reqs[i] = checkRequest(map[string]string{"x-api-key": k}, nil, "10.0.0.1")
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		resp, _ := g.Check(ctx, reqs[i%len(reqs)])
		if resp.GetOkResponse() == nil {
			b.Fatal("refused a valid key")
		}
	}
}

// BenchmarkCheckGRPC is the loopback load run: the same concurrent Check
// calls over real gRPC connections (4 per run, parallel callers) against
// agentcred's server and a bare one in the same run, so the ratio says what
// agentcred adds.
func BenchmarkCheckGRPC(b *testing.B) {
	v, keys, _, _ := benchIndex(b, 100_000)
	srv, err := New(v.Index, Options{Log: logr.Discard(), FailureRate: 0})
	if err != nil {
		b.Fatal(err)
	}
	for _, server := range []struct {
		name  string
		start func(ln net.Listener, ctx context.Context) func()
	}{
		{"bare", func(ln net.Listener, _ context.Context) func() {
			s := grpc.NewServer()
			authv3.RegisterAuthorizationServer(s, bareAuthz{})
			go func() { _ = s.Serve(ln) }()
			return s.Stop
		}},
		{"agentcred", func(ln net.Listener, ctx context.Context) func() {
			ctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { _ = srv.GRPC(GRPCOptions{Listener: ln}).Start(ctx); close(done) }()
			return func() { cancel(); <-done }
		}},
	} {
		b.Run(server.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			stop := server.start(ln, context.Background())
			defer stop()
			clients := make([]authv3.AuthorizationClient, 4)
			for i := range clients {
				conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				clients[i] = authv3.NewAuthorizationClient(conn)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				n := next.Add(1)
				c := clients[n%int64(len(clients))]
				req := checkRequest(map[string]string{"x-api-key": keys[n%int64(len(keys))]}, nil, "10.0.0.1")
				for pb.Next() {
					if _, err := c.Check(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
