package controllers_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

const operatorNamespace = "agentcred-system"

// The suite runs one real kube-apiserver + etcd and one manager with the
// controller, a fake clock and a log buffer, shared by the tests in this
// package. Each test works in its own namespace.
var (
	k8s       client.Client
	fakeClock = clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	registry  = prometheus.NewRegistry()
	logs      = &harness.SyncBuffer{}
	// testMetrics are the controller's metrics, registered with registry.
	testMetrics *controllers.Metrics
	// cached reads the manager's cache, as the controller does.
	cached client.Reader
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	env, err := controlplane.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	ctrl.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(true)))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, metrics, err := harness.NewControllerManager(ctx, env.Config, harness.ControllerOptions{
		Clock: fakeClock, OperatorNamespace: operatorNamespace, MaxConcurrentReconciles: 2,
	})
	if err == nil {
		testMetrics, cached = metrics, mgr.GetClient()
		err = testMetrics.Register(registry)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	direct, err := client.New(env.Config, client.Options{Scheme: controlplane.Scheme()})
	if err == nil {
		err = direct.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Tests read through an uncached client so they see the API server's truth.
	k8s = direct

	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		code = 1
	}
	return code
}
