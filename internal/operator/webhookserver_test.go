package operator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/agrenting/agentcred/internal/listener"
)

func writeServingCert(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "webhook"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWebhookServerIsBounded: the admission webhook's listener is made like
// every other (internal/listener): reviews in flight are shared per source,
// so a pod holding its share cannot delay kube-apiserver's reviews (another
// address is answered), a review past the share is refused 429, bodies are
// capped, and the readiness check sees the server.
func TestWebhookServerIsBounded(t *testing.T) {
	dir := t.TempDir()
	writeServingCert(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newWebhookServer(ctrlwebhook.Options{CertDir: dir}, listener.NewMetrics())
	s.Listener = ln
	release := make(chan struct{})
	s.Register("/hold", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { <-release }))
	s.Register("/read", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	var holders sync.WaitGroup
	t.Cleanup(func() {
		close(release)
		holders.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})
	base := "https://" + ln.Addr().String()
	clientFrom := func(src string) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the test's own self-signed server
		}}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.StartedChecker()(nil) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", s.StartedChecker()(nil))
		}
		time.Sleep(10 * time.Millisecond)
	}
	share := webhookMaxRequests / 8
	attacker := clientFrom("127.0.0.2")
	for range share {
		holders.Go(func() {
			if resp, err := attacker.Post(base+"/hold", "application/json", nil); err == nil {
				resp.Body.Close()
			}
		})
	}
	// Once the attacker holds its share, its next review is refused ...
	var status int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := clientFrom("127.0.0.2").Post(base+"/read", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if status = resp.StatusCode; status == http.StatusTooManyRequests {
			break
		}
	}
	if status != http.StatusTooManyRequests {
		t.Fatalf("a review past the source's share of %d in flight: %d, want 429", share, status)
	}
	// ... while another address is answered.
	resp, err := clientFrom("127.0.0.1").Post(base+"/read", "application/json", strings.NewReader("{}"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("kube-apiserver's address while a pod holds its share: %v %v", resp, err)
	}
	resp.Body.Close()
	// Bodies are capped.
	resp, err = clientFrom("127.0.0.1").Post(base+"/read", "application/json", strings.NewReader(strings.Repeat("a", webhookMaxBody+1)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body over %d bytes: %d, want it cut", webhookMaxBody, resp.StatusCode)
	}
}
