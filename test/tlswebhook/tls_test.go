// Package tlswebhook runs kube-apiserver's token webhook against the auth
// endpoint over TLS, with a CA kube-apiserver must verify — the setup
// README documents for production (certificate-authority in the webhook
// kubeconfig).
package tlswebhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agrenting/agentcred/internal/authserver"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/test/harness"
)

const (
	apiAudience = "https://kubernetes.default.svc.test"
	agent       = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
)

var (
	apiConfig *rest.Config
	index     = authserver.NewIndex()
	dir       string
	certFile  string
	keyFile   string
	addr      string
	// rogue is a certificate for the same address from another CA.
	rogueCert, rogueKey []byte
	// stopServer stops the running auth endpoint (closing its connections).
	stopServer func() error
)

// startServer serves the auth endpoint on addr with the certificate files.
func startServer(ln net.Listener) error {
	srv, err := authserver.New(index, authserver.Options{
		Listener: ln, TLSCertFile: certFile, TLSKeyFile: keyFile, TokenReviewAudiences: []string{apiAudience}, Log: logr.Discard(),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	stopServer = func() error { cancel(); return <-done }
	return nil
}

// issue makes a CA and a serving certificate for 127.0.0.1 signed by it.
func issue(cn string) (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn + " CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// replace writes the key first, then the certificate, each atomically.
func replace(certPEM, keyPEM []byte) error {
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, keyPEM}, {certFile, certPEM}} {
		if err := os.WriteFile(f.path+".tmp", f.data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(f.path+".tmp", f.path); err != nil {
			return err
		}
	}
	return nil
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var err error
	if dir, err = os.MkdirTemp("", "agentcred-tlswebhook-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	caPEM, certPEM, keyPEM, err := issue("agentcred-auth")
	if err == nil {
		_, rogueCert, rogueKey, err = issue("rogue")
	}
	if err == nil {
		err = replace(certPEM, keyPEM)
	}
	ln, lerr := net.Listen("tcp", "127.0.0.1:0")
	if err != nil || lerr != nil {
		fmt.Fprintln(os.Stderr, err, lerr)
		return 1
	}
	addr = ln.Addr().String()
	// The kubeconfig README shows for the token webhook over TLS.
	webhook, err := harness.WithTokenWebhook(dir, "https://"+addr+"/tokenreview", caPEM, "", apiAudience)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return harness.Run(harness.RunInput{
		M:         m,
		Configure: []func(*envtest.Environment){webhook},
		Setup: func(_ context.Context, env *harness.Env) (func() error, error) {
			apiConfig = env.Config
			index.MarkSynced()
			if err := startServer(ln); err != nil {
				return nil, err
			}
			return func() error { return stopServer() }, nil
		},
	})
}

func newKey(t *testing.T, name string) string {
	t.Helper()
	key, err := credential.Generate(credential.APIKey)
	if err != nil {
		t.Fatal(err)
	}
	index.Put(authserver.EntryFromRecord(&hashsecret.Record{
		Credential: "team-tls/" + name, Type: "APIKey", AgentIDs: []string{agent},
		Current: hashsecret.Entry{Digest: credential.DigestOf(key)},
	}))
	return key
}

func whoAmI(key string) (string, error) {
	cfg := rest.AnonymousClientConfig(apiConfig)
	cfg.BearerToken = key
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

// servedIssuer is the issuer of the certificate the endpoint serves now.
func servedIssuer() string {
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only reads which certificate is served
	if err != nil {
		return ""
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Issuer.CommonName
}

func TestKubeAPIServerVerifiesTheEndpointsCertificate(t *testing.T) {
	g := NewWithT(t)
	user, err := whoAmI(newKey(t, "trusted"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(user).To(Equal("agentcred:agent:"+agent), "kube-apiserver authenticated the key through agentcred over TLS")

	// Something else answers on that address with a certificate from
	// another CA (the endpoint restarted with the wrong Secret, or an
	// impostor): kube-apiserver refuses to trust its answers.
	g.Expect(stopServer()).To(Succeed())
	g.Expect(replace(rogueCert, rogueKey)).To(Succeed())
	ln, err := net.Listen("tcp", addr)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(startServer(ln)).To(Succeed())
	g.Eventually(servedIssuer).WithTimeout(30 * time.Second).Should(Equal("rogue CA"))
	_, err = whoAmI(newKey(t, "impostor"))
	g.Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "a webhook with an unverifiable certificate authenticated a token: %v", err)
}
