package manifests

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	grpcinsecure "google.golang.org/grpc/credentials/insecure"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/harness"
)

// TestAuthDeploymentRunsAloneWithItsRBAC runs the default install's two
// processes as their own ServiceAccounts, with exactly the RBAC
// config/default renders: the controller + webhook as the manager, and the
// auth endpoint alone (--enable-controller=false --enable-webhook=false) as
// agentcred-auth. The endpoint verifies a key the controller issued, and
// serves its metrics only to a caller the API server authenticates and
// authorizes (bound to agentcred-metrics-reader): 401 without a token, 403
// for a token without the binding.
func TestAuthDeploymentRunsAloneWithItsRBAC(t *testing.T) {
	g := NewWithT(t)
	ensureNamespace(t, operatorNamespace)
	ensureNamespace(t, webhookCertNamespace)
	applyRBAC(t, "default")
	clk := clocktesting.NewFakeClock(time.Now())

	mo := harness.OperatorOptions()
	mo.MaxConcurrentReconciles = 1
	_, stopManager, err := harness.StartOperator(ctx, impersonating(managerSA), mo, operator.Deps{Clock: clk})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { g.Expect(stopManager()).To(Succeed()) }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	metricsAddr, probeAddr := harness.FreeLoopbackAddr(t), harness.FreeLoopbackAddr(t)
	ao := harness.OperatorOptions()
	ao.EnableController, ao.EnableWebhook, ao.EnableAuthEndpoint = false, false, true
	ao.MetricsAddr, ao.MetricsSecure, ao.ProbeAddr = metricsAddr, true, probeAddr
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
	g.Eventually(func() int {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/auth/verify", nil)
		req.Header.Set("X-API-Key", key)
		return status(req)
	}).WithTimeout(timeoutDuration).Should(Equal(200), "the auth endpoint alone, as agentcred-auth, verifies the key")
	g.Expect(status(mustRequest("http://"+probeAddr+"/readyz", ""))).To(Equal(200))
	// The same process answers Envoy's ext_authz over gRPC.
	conn, err := grpc.NewClient(grpcLn.Addr().String(), grpc.WithTransportCredentials(grpcinsecure.NewCredentials()))
	g.Expect(err).NotTo(HaveOccurred())
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"x-api-key": key}}},
	}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.GetOkResponse()).NotTo(BeNil(), "ext_authz over gRPC refused a valid key: %v", resp)

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
	g.Expect(status(mustRequest(metricsURL, ""))).To(Equal(http.StatusUnauthorized))
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
