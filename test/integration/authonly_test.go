package integration

import (
	"context"
	"net"
	"net/http"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/authserver"
)

// TestAuthEndpointAloneWithReadOnlyAccess runs a second auth endpoint as an
// identity that may only get/list/watch Secrets in the operator namespace,
// as the auth-only Deployment does, and shows that is all it needs.
func TestAuthEndpointAloneWithReadOnlyAccess(t *testing.T) {
	g := NewWithT(t)
	const user = "system:serviceaccount:agentcred-system:agentcred-auth"
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: "agentcred-auth-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: "agentcred-auth-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: user}},
	}
	g.Expect(k8s.Create(ctx, role)).To(Succeed())
	g.Expect(k8s.Create(ctx, binding)).To(Succeed())
	cfg := rest.CopyConfig(apiConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	readOnly, err := kubernetes.NewForConfig(cfg)
	g.Expect(err).NotTo(HaveOccurred())

	ns := newNamespace(t)
	agent := newAgentID()
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reader-test"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: agent},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	waitReady(t, cred)
	key := secretValue(t, ns, "reader-test", "api-key")

	// The identity really is restricted: agent Secrets are out of reach.
	_, err = readOnly.CoreV1().Secrets(ns).Get(ctx, "reader-test", metav1.GetOptions{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want Forbidden reading an agent Secret, got %v", err)
	_, err = readOnly.CoreV1().Secrets(operatorNamespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "x-"}}, metav1.CreateOptions{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want Forbidden writing, got %v", err)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	index := authserver.NewIndex()
	server, err := authserver.New(index, authserver.Options{Listener: ln, Clock: fakeClock, Log: ctrl.Log.WithName("auth-only")})
	g.Expect(err).NotTo(HaveOccurred())
	source := &authserver.Source{Client: readOnly, Namespace: operatorNamespace, Index: index, Server: server, Log: ctrl.Log.WithName("auth-only-index")}
	runCtx, cancel := context.WithCancel(ctx)
	errs := make(chan error, 2)
	go func() { errs <- source.Start(runCtx) }()
	go func() { errs <- server.Start(runCtx) }()
	defer func() {
		cancel()
		g.Expect(<-errs).To(Succeed())
		g.Expect(<-errs).To(Succeed())
	}()

	url := "http://" + ln.Addr().String()
	g.Eventually(func() int { return get(t, url+"/readyz", nil) }).WithTimeout(timeout).WithPolling(interval).Should(Equal(200))
	g.Eventually(func() int { return get(t, url+"/auth/verify", map[string]string{"X-API-Key": key}) }).
		WithTimeout(timeout).WithPolling(interval).Should(Equal(200))
	g.Expect(index.Len()).To(BeNumerically(">=", 1))
}

func get(t *testing.T, url string, headers map[string]string) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
