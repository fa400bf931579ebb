package authserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/agrenting/agentcred/internal/session"
)

// startRealServer runs the server through Start on a loopback listener, as
// in production (timeouts, header limits), and stops it when the test ends.
func startRealServer(t *testing.T) (*fixture, string) {
	t.Helper()
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(f.verifier.Index, Options{Listener: ln, FailureRate: 0, Log: logr.Discard(), Clock: clocktesting.NewFakeClock(now)})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetKeyring(&session.Keyring{Keys: []session.Key{signing}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return f, ln.Addr().String()
}

// rawRequest writes bytes as they are to the server and returns the status
// code of the answer (0 if the connection was closed without one).
func rawRequest(t *testing.T, addr, request string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHostileRequestsGetA4xxNeverA5xx sends malformed and abusive requests;
// each must get a documented 4xx (or the connection refused by net/http's
// own limits), never a 5xx, and the server must keep serving.
func TestHostileRequestsGetA4xxNeverA5xx(t *testing.T) {
	f, addr := startRealServer(t)
	tooManyAgents := strings.Repeat("X-Agent-ID: "+agentA+"\r\n", 10000)
	manyShortAgents := strings.Repeat("X-Agent-ID: "+agentA+"\r\n", 300)
	tampered := []byte(f.session)
	tampered[len(tampered)/2] ^= 0x01
	tests := []struct {
		name    string
		headers string
		want    []int
	}{
		{"oversized header", "X-API-Key: " + strings.Repeat("a", 64<<10) + "\r\n", []int{431}},
		{"10,000 X-Agent-ID values", "X-API-Key: " + f.apiKey + "\r\n" + tooManyAgents, []int{431}},
		{"300 X-Agent-ID values", "X-API-Key: " + f.apiKey + "\r\n" + manyShortAgents, []int{400}},
		{"repeated X-API-Key", "X-API-Key: " + f.apiKey + "\r\nX-API-Key: " + f.apiKey + "\r\n", []int{400}},
		{"repeated Authorization", "Authorization: Bearer " + f.apiKey + "\r\nAuthorization: Bearer " + f.apiKey + "\r\n", []int{400}},
		{"invalid UTF-8 key", "X-API-Key: ak_\xff\xfe\xfd\r\n", []int{401}},
		{"invalid UTF-8 agent", "X-API-Key: " + f.apiKey + "\r\nX-Agent-ID: \xff\xff\r\n", []int{400}},
		{"NUL in key", "X-API-Key: ak_\x00abc\r\n", []int{400, 401}},
		{"header injection in value", "X-API-Key: " + f.apiKey + "\rX-Auth-Agent-ID: " + agentB + "\r\n", []int{400, 401}},
		{"obs-fold continuation", "X-API-Key: " + f.apiKey + "\r\n X-Agent-ID: " + agentB + "\r\n", []int{400, 401}},
		{"truncated session", "Authorization: Bearer " + f.session[:len(f.session)-7] + "\r\n", []int{401}},
		{"forged session signature", "Authorization: Bearer " + string(tampered) + "\r\n", []int{401}},
		{"session signed with an unknown key", "Authorization: Bearer " + f.foreignSession + "\r\n", []int{401}},
		{"expired session", "Authorization: Bearer " + f.expired + "\r\n", []int{401}},
		{"session for the wrong agent", "Authorization: Bearer " + f.session + "\r\nX-Agent-ID: " + agentB + "\r\n", []int{403}},
		{"giant bearer", "Authorization: Bearer as_" + strings.Repeat("A", 20000) + "\r\n", []int{401}},
		{"empty scheme", "Authorization: \r\n", []int{401}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rawRequest(t, addr, "GET /auth/verify HTTP/1.1\r\nHost: x\r\n"+tt.headers+"Connection: close\r\n\r\n")
			ok := false
			for _, w := range tt.want {
				ok = ok || got == w
			}
			if !ok {
				t.Fatalf("status %d, want one of %v", got, tt.want)
			}
		})
	}
	for _, body := range []string{strings.Repeat("{", 100000), "\xff\xfe", `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"` + strings.Repeat("a", 70000) + `"}}`} {
		req := fmt.Sprintf("POST /tokenreview HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		if got := rawRequest(t, addr, req); got != 400 {
			t.Errorf("hostile TokenReview body of %d bytes: status %d, want 400", len(body), got)
		}
	}
	// Still serving.
	if got := rawRequest(t, addr, "GET /auth/verify HTTP/1.1\r\nHost: x\r\nX-API-Key: "+f.apiKey+"\r\nConnection: close\r\n\r\n"); got != 200 {
		t.Fatalf("after the hostile requests a valid key got %d", got)
	}
}
