// Package integration runs the whole operator in-process — controller,
// session key rotator, hash index and auth endpoint — against a real
// kube-apiserver and etcd, and talks to the endpoint over real HTTP on
// loopback, directly and through real clients (nginx, kube-apiserver's token
// webhook).
package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/authserver"
	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
	"github.com/prometheus/client_golang/prometheus"
)

const operatorNamespace = "agentcred-system"

var (
	reg       *prometheus.Registry
	k8s       client.Client
	apiConfig *rest.Config
	authURL   string // http://127.0.0.1:PORT
	authAddr  string // 127.0.0.1:PORT
	fakeClock = clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx       = context.Background()
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	// The auth endpoint's address must be known before kube-apiserver starts,
	// since its token webhook points at it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	authAddr = ln.Addr().String()
	authURL = "http://" + authAddr
	dir, err := os.MkdirTemp("", "agentcred-integration-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	webhookConfig := filepath.Join(dir, "token-webhook.kubeconfig")
	if err := os.WriteFile(webhookConfig, []byte(tokenWebhookKubeconfig(authURL+"/tokenreview")), 0o600); err != nil {
		return fail(err)
	}
	env, err := controlplane.Start(func(e *envtest.Environment) {
		e.ControlPlane.GetAPIServer().Configure().
			Set("authentication-token-webhook-config-file", webhookConfig).
			Set("authentication-token-webhook-version", "v1").
			Set("authentication-token-webhook-cache-ttl", "1s")
	})
	if err != nil {
		return fail(err)
	}
	defer func() { _ = env.Stop() }()
	apiConfig = env.Config
	// Every log line at every level is kept for the leak scan; warnings and
	// errors also go to stderr.
	ctrl.SetLogger(zap.New(zap.WriteTo(io.MultiWriter(allLogs, levelFilter{os.Stderr})), zap.Level(zapLevelDebug())))

	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mgr, metrics, err := harness.NewControllerManager(mctx, env.Config, harness.ControllerOptions{
		Clock: fakeClock, OperatorNamespace: operatorNamespace, MaxConcurrentReconciles: 2,
	})
	if err != nil {
		return fail(err)
	}
	reg = prometheus.NewRegistry()
	if err := metrics.Register(reg); err != nil {
		return fail(err)
	}
	if err := mgr.Add(&controllers.SessionKeyRotator{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: operatorNamespace, Clock: fakeClock,
		Every: 24 * time.Hour, MaxTTL: 24 * time.Hour, Log: ctrl.Log.WithName("session-keys"),
	}); err != nil {
		return fail(err)
	}
	clientset, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return fail(err)
	}
	if _, err := authserver.AddToManager(mgr, clientset, operatorNamespace, authserver.Options{
		Listener: ln, SessionTTL: time.Hour, FailureRate: 0, Clock: fakeClock,
		Log: ctrl.Log.WithName("auth"), Registerer: reg,
	}); err != nil {
		return fail(err)
	}
	if k8s, err = client.New(env.Config, client.Options{Scheme: controlplane.Scheme()}); err != nil {
		return fail(err)
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		return fail(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		code = 1
	}
	return code
}

func tokenWebhookKubeconfig(server string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: agentcred
  cluster:
    server: %s
users:
- name: kube-apiserver
  user: {}
contexts:
- name: webhook
  context: {cluster: agentcred, user: kube-apiserver}
current-context: webhook
`, server)
}
