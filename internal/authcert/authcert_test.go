package authcert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

var (
	t0    = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	names = []string{"agentcred-auth.agentcred-system.svc", "agentcred-auth.agentcred-system.svc.cluster.local"}
)

func mustCA(t *testing.T, now time.Time) CA {
	t.Helper()
	ca, err := NewCA(now, names)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca CA, dnsNames []string, now time.Time) ([]byte, []byte) {
	t.Helper()
	cert, key, err := ca.Issue(dnsNames, now)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestIssuedCertificateVerifiesForTheEndpointOnly: a TLS client that trusts
// the CA accepts the certificate for the endpoint's names, for serving, and
// for nothing else.
func TestIssuedCertificateVerifiesForTheEndpointOnly(t *testing.T) {
	ca := mustCA(t, t0)
	certPEM, keyPEM := mustIssue(t, ca, names, t0)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("not a usable TLS key pair: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	leaf := pair.Leaf
	for _, tc := range []struct {
		name string
		opts x509.VerifyOptions
		ok   bool
	}{
		{"the service name", x509.VerifyOptions{DNSName: names[0], Roots: roots, CurrentTime: t0}, true},
		{"the cluster-local name", x509.VerifyOptions{DNSName: names[1], Roots: roots, CurrentTime: t0}, true},
		{"another service", x509.VerifyOptions{DNSName: "agentcred-webhook-service.agentcred-system.svc", Roots: roots, CurrentTime: t0}, false},
		{"as a client certificate", x509.VerifyOptions{DNSName: names[0], Roots: roots, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, false},
		{"after ninety days", x509.VerifyOptions{DNSName: names[0], Roots: roots, CurrentTime: t0.Add(ServingValidity + time.Second)}, false},
		{"without the CA", x509.VerifyOptions{DNSName: names[0], Roots: x509.NewCertPool(), CurrentTime: t0}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := leaf.Verify(tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if leaf.IsCA {
		t.Fatal("a serving certificate must not be a CA")
	}
	// The CA is constrained to the endpoint's names: a certificate it signed
	// for any other name is worthless, even to a client that trusts it.
	evilPEM, _ := mustIssue(t, ca, []string{"kubernetes.default.svc"}, t0)
	evil, err := parseCertificate(evilPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := evil.Verify(x509.VerifyOptions{DNSName: "kubernetes.default.svc", Roots: roots, CurrentTime: t0}); err == nil {
		t.Fatal("the CA vouched for a name outside its constraints")
	}
}

// TestLifetimes pins what users are told: a CA lives ten years, a serving
// certificate ninety days, each valid from five minutes before it was made.
func TestLifetimes(t *testing.T) {
	ca := mustCA(t, t0)
	certPEM, _ := mustIssue(t, ca, names, t0)
	cert, err := parseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Time
		wantAfter           time.Time
	}{
		{"CA", ca.Cert.NotBefore, ca.Cert.NotAfter, t0.AddDate(10, 0, 0).Add(-72 * time.Hour)}, // 3650 days: ten years less the leap days of 2028, 2032 and 2036
		{"serving", cert.NotBefore, cert.NotAfter, t0.AddDate(0, 0, 90)},
	} {
		if !tc.notBefore.Equal(t0.Add(-5 * time.Minute)) {
			t.Errorf("%s: valid from %v, want five minutes before %v", tc.name, tc.notBefore, t0)
		}
		if !tc.notAfter.Equal(tc.wantAfter) {
			t.Errorf("%s: valid until %v, want %v", tc.name, tc.notAfter, tc.wantAfter)
		}
	}
}

func TestServingCertificateNeverOutlivesItsCA(t *testing.T) {
	ca := mustCA(t, t0)
	late := ca.Cert.NotAfter.Add(-24 * time.Hour)
	certPEM, _ := mustIssue(t, ca, names, late)
	cert, err := parseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("expires %v, after its CA %v", cert.NotAfter, ca.Cert.NotAfter)
	}
	if _, _, err := ca.Issue(nil, t0); err == nil {
		t.Fatal("issued a certificate without names")
	}
}

// dueCase is a row of a renewal decision's table: is (cert, key) due at now,
// and does the reason say why.
type dueCase struct {
	name      string
	cert, key []byte
	now       time.Time
	due       bool
	why       string
}

func runDue(t *testing.T, cases []dueCase, decide func(cert, key []byte, now time.Time) (bool, string)) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			due, why := decide(tc.cert, tc.key, tc.now)
			if due != tc.due || !strings.Contains(why, tc.why) {
				t.Fatalf("due = %v %q, want %v containing %q", due, why, tc.due, tc.why)
			}
		})
	}
}

func TestServingDue(t *testing.T) {
	ca := mustCA(t, t0)
	other := mustCA(t, t0)
	certPEM, keyPEM := mustIssue(t, ca, names, t0)
	foreignPEM, foreignKey := mustIssue(t, other, names, t0)
	_, secondKey := mustIssue(t, ca, names, t0)
	fewerPEM, fewerKey := mustIssue(t, ca, names[:1], t0)
	cert, _ := parseCertificate(certPEM)
	twoThirds := cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 3 * 2)
	runDue(t, []dueCase{
		{"fresh", certPEM, keyPEM, t0, false, ""},
		{"sixty days on", certPEM, keyPEM, twoThirds.Add(-time.Minute), false, ""},
		{"at two thirds", certPEM, keyPEM, twoThirds, true, "two thirds"},
		{"missing", nil, nil, t0, true, "no usable certificate"},
		{"from another CA", foreignPEM, foreignKey, t0, true, "another CA"},
		{"other names", fewerPEM, fewerKey, t0, true, "DNS names"},
		{"a key that is not its own", certPEM, secondKey, t0, true, "private key"},
		{"no key", certPEM, []byte("nope"), t0, true, "private key"},
		{"not valid yet (issued by a clock running ahead)", certPEM, keyPEM, cert.NotBefore.Add(-time.Second), true, "not valid yet"},
	}, func(cert, key []byte, now time.Time) (bool, string) { return ServingDue(cert, key, ca, names, now) })
}

func TestParseCARoundTrips(t *testing.T) {
	ca := mustCA(t, t0)
	back, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The parsed CA signs certificates the original's clients trust.
	certPEM, keyPEM := mustIssue(t, back, names, t0)
	if due, why := ServingDue(certPEM, keyPEM, ca, names, t0); due {
		t.Fatalf("a certificate from the parsed CA: %s", why)
	}
	if !bytes.Equal(back.CertPEM, ca.CertPEM) || !bytes.Equal(back.KeyPEM, ca.KeyPEM) {
		t.Fatal("PEM changed on a round trip")
	}
}
