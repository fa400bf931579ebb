package manifests

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	grpccredentials "google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/authcert"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/harness"
)

// TestAuthDeploymentRunsAloneWithItsRBAC runs the default install's two
// processes as their own ServiceAccounts, with exactly the RBAC
// config/default renders: the controller + webhook as the manager, and the
// auth endpoint alone (--enable-controller=false --enable-webhook=false) as
// agentcred-auth. The manager issues the endpoint's certificate
// (--auth-tls-secret-name) and publishes its CA; the endpoint serves HTTP and
// gRPC over TLS with it, to clients that trust the CA from the ConfigMap and
// check the Service's name, and picks up a renewed certificate without a
// restart. It verifies a key the controller issued, and serves its metrics
// only to a caller the API server authenticates and authorizes (bound to
// agentcred-metrics-reader): 401 without a token, 403 for a token without
// the binding.
func TestAuthDeploymentRunsAloneWithItsRBAC(t *testing.T) {
	g := NewWithT(t)
	ensureNamespace(t, operatorNamespace)
	ensureNamespace(t, webhookCertNamespace)
	applyRBAC(t, "default")
	clk := clocktesting.NewFakeClock(time.Now())

	mo := harness.OperatorOptions()
	mo.MaxConcurrentReconciles = 1
	mo.WebhookCertNamespace, mo.AuthTLSSecretName = webhookCertNamespace, "agentcred-auth-tls"
	_, stopManager, err := harness.StartOperator(ctx, impersonating(managerSA), mo, operator.Deps{Clock: clk})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { g.Expect(stopManager()).To(Succeed()) }()

	// What the kubelet does with the Secret volume: the auth pod sees the
	// Secret's keys as files.
	certDir := t.TempDir()
	mountTLSSecret := func() *x509.Certificate {
		s := &corev1.Secret{}
		g.Eventually(func() error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "agentcred-auth-tls"}, s)
		}).WithTimeout(timeoutDuration).Should(Succeed(), "the manager must issue the auth endpoint's certificate")
		g.Expect(s.Type).To(Equal(corev1.SecretTypeTLS))
		for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
			tmp := filepath.Join(certDir, "."+k)
			g.Expect(os.WriteFile(tmp, s.Data[k], 0o600)).To(Succeed())
			g.Expect(os.Rename(tmp, filepath.Join(certDir, k))).To(Succeed())
		}
		block, _ := pem.Decode(s.Data[corev1.TLSCertKey])
		cert, err := x509.ParseCertificate(block.Bytes)
		g.Expect(err).NotTo(HaveOccurred())
		return cert
	}
	issued := mountTLSSecret()
	// Any authenticated client may read the CA bundle; none may change it.
	reader, err := kubernetes.NewForConfig(impersonatingUser("alice@example.com", "system:authenticated"))
	g.Expect(err).NotTo(HaveOccurred())
	var caBundle []byte
	g.Eventually(func() error {
		cm, err := reader.CoreV1().ConfigMaps(operatorNamespace).Get(ctx, authv1alpha1.AuthCAName, metav1.GetOptions{})
		if err == nil {
			caBundle = []byte(cm.Data[authv1alpha1.AuthCACertKey])
		}
		return err
	}).WithTimeout(timeoutDuration).Should(Succeed())
	roots := x509.NewCertPool()
	g.Expect(roots.AppendCertsFromPEM(caBundle)).To(BeTrue())
	caSecret := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: webhookCertNamespace, Name: authv1alpha1.AuthCAName}, caSecret)).To(Succeed())
	g.Expect(authcert.ParseAuthority(caSecret.Data).Signing.Cert).NotTo(BeNil(), "the CA and its key stay in the webhook-certificate namespace")
	tlsSecret := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "agentcred-auth-tls"}, tlsSecret)).To(Succeed())
	g.Expect(tlsSecret.Data).NotTo(HaveKey("ca.key"), "the auth endpoint's Secret must not carry the CA key")
	const serverName = "agentcred-auth.agentcred-system.svc"
	// Clients on the test's clock, which moves to the renewal below.
	clientTLS := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12, Time: clk.Now}
	trusting := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS}}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	metricsAddr, probeAddr := harness.FreeLoopbackAddr(t), harness.FreeLoopbackAddr(t)
	ao := harness.OperatorOptions()
	ao.EnableController, ao.EnableWebhook, ao.EnableAuthEndpoint = false, false, true
	ao.MetricsAddr, ao.MetricsSecure, ao.ProbeAddr = metricsAddr, true, probeAddr
	ao.AuthTLSCertFile, ao.AuthTLSKeyFile = filepath.Join(certDir, corev1.TLSCertKey), filepath.Join(certDir, corev1.TLSPrivateKeyKey)
	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	_, stopAuth, err := harness.StartOperator(ctx, impersonating(authSA), ao, operator.Deps{Clock: clk, AuthListener: ln, GRPCAuthListener: grpcLn})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { g.Expect(stopAuth()).To(Succeed()) }()

	ensureNamespace(t, "team-auth")
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-auth", Name: "split"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: "dddddddd-0000-4000-8000-000000000010"},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	harness.WaitReady(t, k8s, cred, metav1.ConditionTrue, authv1alpha1.ReasonIssued, timeoutDuration)
	s := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: "team-auth", Name: "split"}, s)).To(Succeed())
	key := string(s.Data[authv1alpha1.AgentSecretAPIKey])
	verify := func(c *http.Client, scheme string) (int, error) {
		req, _ := http.NewRequest("GET", scheme+"://"+ln.Addr().String()+"/auth/verify", nil)
		req.Header.Set("X-API-Key", key)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	g.Eventually(func() (int, error) { return verify(trusting, "https") }).WithTimeout(timeoutDuration).Should(Equal(200),
		"the auth endpoint alone, as agentcred-auth, verifies the key over TLS")
	// The key never crosses in clear: plain HTTP gets no answer from the endpoint.
	g.Expect(verify(http.DefaultClient, "http")).NotTo(Equal(200))
	// A client that checks another name refuses the certificate.
	wrongName := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "agentcred-webhook-service.agentcred-system.svc", MinVersion: tls.VersionTLS12},
	}}
	_, err = verify(wrongName, "https")
	g.Expect(err).To(MatchError(ContainSubstring("certificate is valid for")))
	g.Expect(status(mustRequest("http://"+probeAddr+"/readyz", ""))).To(Equal(200))
	// The same process answers Envoy's ext_authz over gRPC, over TLS too.
	conn, err := grpc.NewClient(grpcLn.Addr().String(), grpc.WithTransportCredentials(grpccredentials.NewTLS(clientTLS.Clone())))
	g.Expect(err).NotTo(HaveOccurred())
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"x-api-key": key}}},
	}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.GetOkResponse()).NotTo(BeNil(), "ext_authz over gRPC refused a valid key: %v", resp)

	// Renewal: two thirds into its ninety days the manager issues a new
	// certificate from the same CA; once the kubelet updates the files, the
	// endpoint serves it, without a restart, and clients need nothing new.
	clk.Step(61 * 24 * time.Hour)
	g.Eventually(func() bool {
		s := &corev1.Secret{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "agentcred-auth-tls"}, s)).To(Succeed())
		return !bytes.Equal(s.Data[corev1.TLSCertKey], tlsSecret.Data[corev1.TLSCertKey])
	}).WithTimeout(timeoutDuration).Should(BeTrue(), "the manager must renew the certificate")
	renewed := mountTLSSecret()
	g.Expect(renewed.SerialNumber).NotTo(Equal(issued.SerialNumber))
	g.Eventually(func() (string, error) {
		conn, err := tls.Dial("tcp", ln.Addr().String(), clientTLS)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}).WithTimeout(timeoutDuration).Should(Equal(renewed.SerialNumber.String()), "the endpoint must serve the renewed certificate")
	g.Expect(verify(trusting, "https")).To(Equal(200))

	// Metrics: only for callers the API server vouches for and RBAC allows.
	cs, err := kubernetes.NewForConfig(apiConfig)
	g.Expect(err).NotTo(HaveOccurred())
	token := func(sa string) string {
		t.Helper()
		_, err := cs.CoreV1().ServiceAccounts("team-auth").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		g.Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
		tr, err := cs.CoreV1().ServiceAccounts("team-auth").CreateToken(ctx, sa, &authnv1.TokenRequest{}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		return tr.Status.Token
	}
	g.Expect(k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-reads-agentcred"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "agentcred-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "team-auth"}},
	})).To(Succeed())
	metricsURL := "https://" + metricsAddr + "/metrics"
	// The metrics server starts alongside the endpoint: wait for it to listen.
	g.Eventually(func() int { return status(mustRequest(metricsURL, "")) }).WithTimeout(timeoutDuration).Should(Equal(http.StatusUnauthorized))
	g.Expect(status(mustRequest(metricsURL, token("nosy")))).To(Equal(http.StatusForbidden))
	prometheus := token("prometheus")
	g.Eventually(func() int { return status(mustRequest(metricsURL, prometheus)) }).WithTimeout(timeoutDuration).Should(Equal(200))
}

var insecure = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the metrics certificate is self-signed in the test
}}

func mustRequest(url, bearer string) *http.Request {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		panic(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(bearer))
	}
	return req
}

func status(req *http.Request) int {
	resp, err := insecure.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
