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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
		// Each serial expires a minute later than the one before.
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour + time.Duration(serial)*time.Minute),
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
	runServer(t, srv)
	return ln.Addr().String()
}

// runServer starts srv until the test ends, and fails the test if it
// stops with an error.
func runServer(t *testing.T, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
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
	// The slot is given back once the server sees the close.
	ok := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := ok.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the slot freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServedCertificateExpiryIsExported: the expiry of the certificate the
// endpoint serves is a metric — absent before it serves one and without
// TLS, the served certificate's NotAfter after, and the renewed one's once
// the files change — so an alert sees a pod whose certificate stopped
// being renewed before its clients do.
func TestServedCertificateExpiryIsExported(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeSelfSigned(t, certFile, keyFile, 1)
	notAfter := func() float64 {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return float64(pair.Leaf.NotAfter.Unix())
	}
	reg := prometheus.NewRegistry()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(NewIndex(), Options{Listener: ln, TLSCertFile: certFile, TLSKeyFile: keyFile, Registerer: reg, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	const name = "agentcred_auth_certificate_expiration_timestamp_seconds"
	if n := testutil.CollectAndCount(reg, name); n != 0 {
		t.Fatalf("%d series before the endpoint serves a certificate", n)
	}
	runServer(t, srv)
	expiry := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return 0
	}
	want := notAfter()
	waitFor(t, func() bool { return expiry() == want }, "the served certificate's expiry")
	writeSelfSigned(t, certFile, keyFile, 2)
	renewed := notAfter()
	waitFor(t, func() bool { return expiry() == renewed }, "the renewed certificate's expiry")

	plain, err := New(NewIndex(), Options{Registerer: prometheus.NewRegistry(), Log: logr.Discard()})
	if err != nil || plain.served.Load() != nil {
		t.Fatalf("a server without TLS holds a certificate: %v", err)
	}
}

// waitFor polls cond for up to 15 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 15 s", what)
		}
		time.Sleep(20 * time.Millisecond) //nolint:forbidigo // polling with a deadline
	}
}
