package authserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 with the
// given serial number to certFile and keyFile.
func writeSelfSigned(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "agentcred-test"},
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
	// Write the key first and rename both into place, as cert-manager and
	// kubelet's projected volumes replace files atomically.
	for _, f := range []struct {
		path  string
		block *pem.Block
	}{{keyFile, &pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}}, {certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der}}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(f.block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
}

func startTLSServer(t *testing.T, certFile, keyFile string, maxConns int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(NewIndex(), Options{Listener: ln, TLSCertFile: certFile, TLSKeyFile: keyFile, MaxConnections: maxConns, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

func servedSerial(addr string) (int64, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test reads which certificate is served
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// TestTLSCertificateIsReloaded: a renewed certificate (cert-manager writes
// new files into the mounted Secret) is served without a restart.
func TestTLSCertificateIsReloaded(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeSelfSigned(t, certFile, keyFile, 1)
	addr := startTLSServer(t, certFile, keyFile, 0)
	if serial, err := servedSerial(addr); err != nil || serial != 1 {
		t.Fatalf("serial %d, %v; want 1", serial, err)
	}
	writeSelfSigned(t, certFile, keyFile, 2)
	deadline := time.Now().Add(15 * time.Second)
	for {
		serial, err := servedSerial(addr)
		if err == nil && serial == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving serial %d (%v) 15 s after the files changed", serial, err)
		}
		time.Sleep(50 * time.Millisecond) //nolint:forbidigo // polling for the reload with a deadline
	}
}

// TestConnectionsAreBounded: past MaxConnections a new connection is not
// served until one closes, so idle or slow clients cannot pile up.
func TestConnectionsAreBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(NewIndex(), Options{Listener: ln, MaxConnections: 1, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	url := "http://" + ln.Addr().String() + "/healthz"
	hold, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// The held connection occupies the only slot once accepted: a request
	// on it is answered, proving it was.
	if _, err := hold.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 12)
	if _, err := hold.Read(buf); err != nil || string(buf) != "HTTP/1.1 200" {
		t.Fatalf("held connection: %q %v", buf, err)
	}
	short := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := short.Get(url); err == nil {
		resp.Body.Close()
		t.Fatal("a second connection was served past MaxConnections=1")
	}
	hold.Close()
	ok := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := ok.Get(url)
	if err != nil {
		t.Fatalf("after the slot freed: %v", err)
	}
	resp.Body.Close()
}
