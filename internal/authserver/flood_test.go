package authserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/agrenting/agentcred/internal/listener"
)

// The flood tests attack the endpoint's listeners as any pod on the cluster
// network could, from several loopback addresses (each a "source"), and
// assert the two things every tenant relies on: the process's memory stays
// within its budget, and another client is still served.

// stallingStreams opens a raw HTTP/2 connection to a gRPC server from the
// loopback address src and opens n Check streams on it, each with meta
// bytes of metadata and a message that declares body bytes but sends only
// the first sent of them, then never more: the attack of a client that
// makes the server hold a stream's header list and message buffer. Frames
// the server sends are read and discarded. It returns a channel closed when
// the server closes the connection (at once if it refused it); the
// connection is closed when the test ends. Safe from any goroutine.
func stallingStreams(t *testing.T, src, addr string, n, meta, body, sent int) <-chan struct{} {
	closed := make(chan struct{})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil { // refused while connecting
		close(closed)
		return closed
	}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, c)
	}()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return closed
	}
	fr := http2.NewFramer(c, nil)
	if fr.WriteSettings() != nil {
		return closed
	}
	pad := strings.Repeat("a", meta)
	msg := make([]byte, 5+sent)
	binary.BigEndian.PutUint32(msg[1:5], uint32(body))
	for i := range n {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{
			{":method", "POST"}, {":scheme", "http"}, {":path", "/envoy.service.auth.v3.Authorization/Check"},
			{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}, {"x-pad", pad},
		} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		id := uint32(2*i + 1)
		block := hb.Bytes()
		// A header block larger than a frame goes in CONTINUATION frames.
		const frame = 16 << 10
		first := block[:min(len(block), frame)]
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(block) <= frame}) != nil {
			return closed
		}
		for rest := block[len(first):]; len(rest) > 0; {
			chunk := rest[:min(len(rest), frame)]
			rest = rest[len(chunk):]
			if fr.WriteContinuation(id, len(rest) == 0, chunk) != nil {
				return closed
			}
		}
		for rest := msg; len(rest) > 0; {
			chunk := rest[:min(len(rest), frame)]
			rest = rest[len(chunk):]
			if fr.WriteData(id, false, chunk) != nil {
				return closed
			}
		}
	}
	return closed
}

// startGRPCServer serves ts's gRPC endpoint on 127.0.0.1 through Start, the
// bounded listener included, and returns its address.
func startGRPCServer(t *testing.T, ts *testServer) (string, *GRPCServer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := ts.srv.GRPC(GRPCOptions{Listener: ln})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gRPC server: %v", err)
		}
	})
	return ln.Addr().String(), g
}

// TestGRPCFloodStaysWithinItsBudget is the review's attack (4 connections ×
// 50 streams of 1 MiB metadata grew the process by 212 MiB), widened: 40
// sources, each opening streams that send their headers and part of the
// largest message and then stall. The server holds at most grpcMaxStreams of them, a source at most
// its share, oversized metadata none; the heap stays within the budget, a
// client from another address is answered meanwhile, and the stalled
// streams end at grpcRequestDeadline.
func TestGRPCFloodStaysWithinItsBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("floods loopback for a few seconds")
	}
	f := startServer(t)
	addr, g := startGRPCServer(t, f)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := authv3.NewAuthorizationClient(conn)
	before := heapInUse()

	// All at once, as a fleet of pods would: oversized metadata (refused
	// while decoding, never held), and, within the header limit, messages
	// declaring the largest size.
	// 12 sources × 40 streams: past each source's share of 32, and 384
	// shares past the total of 256, so late sources displace early ones.
	const sources = 12
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { stallingStreams(t, fmt.Sprintf("127.0.1.%d", i+1), addr, 10, 1<<20, 16, 16) })
	}
	for s := range sources {
		wg.Go(func() {
			stallingStreams(t, fmt.Sprintf("127.0.2.%d", s+1), addr, 40, maxCheckHeaders-1024, maxCheckRequest-1, 32<<10)
		})
	}
	wg.Wait()
	// The server holds what it will hold: each source its share.
	limits := g.streams.Limits()
	want := min(limits.Max, sources*limits.PerSource)
	for deadline := time.Now().Add(grpcRequestDeadline / 2); ; time.Sleep(10 * time.Millisecond) {
		if total, _ := g.streams.Held(netip.Prefix{}); total >= want || time.Now().After(deadline) {
			break
		}
	}
	if total, _ := g.streams.Held(netip.Prefix{}); total < want {
		t.Fatalf("the flood holds %d streams, want %d (each source its share): the attack did not reach the server", total, want)
	}
	total, one := g.streams.Held(listener.SourceOf(netip.MustParseAddr("127.0.2.1")))
	if total > limits.Max || one > limits.PerSource {
		t.Fatalf("streams held: %d in total (bound %d), %d from one source (bound %d)", total, limits.Max, one, limits.PerSource)
	}
	// Another client is served while the flood holds its slots.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, checkRequest(map[string]string{"x-api-key": f.apiKey}, nil, ""))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("a client from 127.0.0.1 during the flood: %v %v", resp, err)
	}
	grown := int64(heapInUse()) - int64(before)
	// The budget: every stream slot holding its header list and message,
	// and every connection the sources could open, at 96 KiB each.
	budget := int64(grpcMaxStreams*(maxCheckHeaders+maxCheckRequest) + grpcMaxConnections*96<<10)
	t.Logf("gRPC flood: %d streams held, heap grew by %.1f MiB (budget %.1f MiB)", total, float64(grown)/(1<<20), float64(budget)/(1<<20))
	if grown > budget {
		t.Fatalf("the flood grew the heap by %d bytes, over the budget of %d", grown, budget)
	}
	// 480 calls for 256 slots: the rest were refused for their source's
	// share or the total, or displaced (which of these depends on how the
	// sources interleave), and the metric counted them.
	var turnedAway float64
	for _, reason := range []string{listener.ReasonSource, listener.ReasonTotal, listener.ReasonEvicted} {
		turnedAway += refusedConnections(t, f.reg, listenerGRPCStreams, reason)
	}
	if turnedAway == 0 {
		t.Fatal("no call was refused or displaced: agentcred_listener_refused_connections_total did not count them")
	}
	// The stalled streams end at the deadline and give their slots back.
	deadline := time.Now().Add(grpcRequestDeadline + 5*time.Second)
	for {
		if total, _ := g.streams.Held(netip.Prefix{}); total == 0 {
			break
		}
		if time.Now().After(deadline) {
			total, _ := g.streams.Held(netip.Prefix{})
			t.Fatalf("%d stalled streams outlived grpcRequestDeadline", total)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGRPCConnectionsPerSource: one source holds at most its share of the
// gRPC listener's connections; the rest are closed at accept.
func TestGRPCConnectionsPerSource(t *testing.T) {
	ts := startServer(t)
	addr, _ := startGRPCServer(t, ts)
	share := grpcMaxConnections / 8
	var closed []<-chan struct{}
	for range share + 4 {
		c := stallingStreams(t, "127.0.3.1", addr, 0, 0, 0, 0)
		closed = append(closed, c)
	}
	countClosed := func() int {
		n := 0
		for _, c := range closed {
			select {
			case <-c:
				n++
			default:
			}
		}
		return n
	}
	for deadline := time.Now().Add(5 * time.Second); countClosed() < 4 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if gone := countClosed(); gone != 4 {
		t.Fatalf("%d of %d connections from one source were closed, want the 4 past its share of %d", gone, share+4, share)
	}
}

// TestOneSourceCannotHoldEveryHTTPConnection is the review's second attack
// (2,300 keep-alive connections from 127.0.0.2 left 127.0.0.1 unanswered for
// 3 s): a source holds at most its share of the connections, the rest are
// closed at once, and another address is answered at once.
func TestOneSourceCannotHoldEveryHTTPConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := New(NewIndex(), Options{Listener: ln, MaxConnections: 256, Log: logr.Discard(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	runServer(t, srv)
	url := "http://" + ln.Addr().String() + "/healthz"
	// 127.0.0.2 opens 3× its share of busy keep-alive connections.
	share := 256 / 8
	held := 0
	for range 3 * share {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", ln.Addr().String())
		if err != nil { // refused while connecting
			continue
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err == nil {
			buf := make([]byte, 12)
			if _, err := io.ReadFull(c, buf); err == nil && string(buf) == "HTTP/1.1 200" {
				held++
			}
		}
	}
	if held != share {
		t.Fatalf("127.0.0.2 holds %d connections, want its share of %d", held, share)
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("127.0.0.1 while 127.0.0.2 holds its share: %v", err)
	}
	resp.Body.Close()
	if got := refusedConnections(t, reg, listenerHTTP, listener.ReasonSource); got != float64(2*share) {
		t.Fatalf("refused per_source = %v, want %d", got, 2*share)
	}
}

// TestGRPCHeaderListIsBounded: a stream whose metadata is over
// maxCheckHeaders is refused, and the server says so in SETTINGS, so
// well-behaved clients refuse it themselves.
func TestGRPCHeaderListIsBounded(t *testing.T) {
	f := startGRPC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := checkRequest(map[string]string{"x-api-key": f.apiKey}, nil, "")
	md := strings.Repeat("a", maxCheckHeaders)
	_, err := f.client.Check(metadata.AppendToOutgoingContext(ctx, "x-pad", md), req)
	if code := status.Code(err); code != codes.Internal && code != codes.ResourceExhausted && code != codes.Unavailable {
		t.Fatalf("metadata over the limit: %v, want refused", err)
	}
	if resp, err := f.client.Check(metadata.AppendToOutgoingContext(ctx, "x-pad", strings.Repeat("a", maxCheckHeaders/2)), req); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("metadata within the limit: %v %v", resp, err)
	}
}

// refusedConnections reads agentcred_listener_refused_connections_total.
func refusedConnections(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "agentcred_listener_refused_connections_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["listener"] == name && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestHTTPFloodStaysWithinItsBudget: 40 sources each open more than their
// share of connections and send most of the 32 KiB header limit without
// ever ending it (slowloris). The listener holds at most
// --auth-max-connections of them, the heap stays within the budget, and a
// request from another address is answered meanwhile.
func TestHTTPFloodStaysWithinItsBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("floods loopback with thousands of connections")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(NewIndex(), Options{Listener: ln, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	runServer(t, srv)
	addr := ln.Addr().String()
	before := heapInUse()
	const sources, perSource = 12, 150 // 1,800 attempts: past 128 per source and 1,024 in total
	head := "GET /auth/verify HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 30<<10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for s := range sources {
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.4.%d", s+1))}, Timeout: 2 * time.Second}
			for range perSource {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				_, _ = io.WriteString(c, head)
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("127.0.0.1 during the flood: %v", err)
	}
	resp.Body.Close()
	grown := int64(heapInUse()) - int64(before)
	// The budget: every connection slot holding a full header and the
	// server's buffers, at 48 KiB each.
	budget := int64(DefaultMaxConnections * 48 << 10)
	t.Logf("HTTP flood: %d connections attempted, heap grew by %.1f MiB (budget %.1f MiB)", len(conns), float64(grown)/(1<<20), float64(budget)/(1<<20))
	if grown > budget {
		t.Fatalf("the flood grew the heap by %d bytes, over the budget of %d", grown, budget)
	}
}
