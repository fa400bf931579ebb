// Package integration runs the whole operator in-process — controller,
// session key rotator, hash index and auth endpoint — against a real
// kube-apiserver and etcd, and talks to the endpoint over real HTTP on
// loopback, directly and through real clients (nginx, kube-apiserver's token
// webhook).
package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agrenting/agentcred/internal/authcert"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/harness"
)

const operatorNamespace = harness.OperatorNamespace

// apiAudience is the test kube-apiserver's --api-audiences, which it sends
// in the TokenReviews it asks agentcred for.
const apiAudience = "https://kubernetes.default.svc.test"

var (
	reg       = prometheus.NewRegistry()
	k8s       client.Client
	apiConfig *rest.Config
	authURL   string // https://127.0.0.1:PORT
	authAddr  string // 127.0.0.1:PORT
	// The endpoint serves TLS, as in the install, with a certificate for
	// authServerName from the CA in authCAFile; authClient trusts it.
	authCertFile, authKeyFile, authCAFile string
	authClient                            *http.Client
	fakeClock                             = clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx                                   = context.Background()
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	// The auth endpoint's address must be known before kube-apiserver starts,
	// since its token webhook points at it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	authAddr = ln.Addr().String()
	authURL = "https://" + authAddr
	dir, err := os.MkdirTemp("", "agentcred-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	caPEM, err := issueServingCert(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	webhook, err := harness.WithTokenWebhook(dir, authURL+"/tokenreview", caPEM, authServerName, apiAudience)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return harness.Run(harness.RunInput{
		M:         m,
		Configure: []func(*envtest.Environment){webhook},
		Setup: func(ctx context.Context, env *harness.Env) (func() error, error) {
			apiConfig, k8s = env.Config, env.Client
			// Every log line at every level is kept for the leak scan; warnings and
			// errors also go to stderr.
			ctrl.SetLogger(zap.New(zap.WriteTo(io.MultiWriter(allLogs, levelFilter{os.Stderr})), zap.Level(zapLevelDebug())))
			o := harness.OperatorOptions()
			o.EnableAuthEndpoint = true
			o.FailureRate = 0
			o.TokenReviewAudiences = apiAudience
			o.AuthTLSCertFile, o.AuthTLSKeyFile = authCertFile, authKeyFile
			_, stop, err := harness.StartOperator(ctx, env.Config, o, operator.Deps{Clock: fakeClock, Registerer: reg, AuthListener: ln})
			return stop, err
		},
	})
}

// authServerName is the name on the suite endpoint's certificate: the
// install's Service, so that the proxy configs under test are the
// documented ones, which check it.
const authServerName = "agentcred-auth.agentcred-system.svc"

// issueServingCert makes the endpoint's CA and certificate as the
// controller does (internal/authcert) and writes them into dir.
func issueServingCert(dir string) ([]byte, error) {
	now := time.Now()
	ca, err := authcert.NewCA(now, []string{authServerName, authServerName + ".cluster.local"})
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.Issue([]string{authServerName, authServerName + ".cluster.local"}, now)
	if err != nil {
		return nil, err
	}
	authCertFile, authKeyFile, authCAFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	for file, data := range map[string][]byte{authCertFile: certPEM, authKeyFile: keyPEM, authCAFile: ca.CertPEM} {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			return nil, err
		}
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	authClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: authServerName, MinVersion: tls.VersionTLS12},
	}}
	return ca.CertPEM, nil
}
