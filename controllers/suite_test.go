package controllers_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/harness"
)

const operatorNamespace = harness.OperatorNamespace

// The suite runs one real kube-apiserver + etcd and one operator with the
// controllers, a fake clock and a log buffer, shared by the tests in this
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
	os.Exit(harness.Run(harness.RunInput{M: m, ShortTests: "^TestReconcileFast", Setup: func(ctx context.Context, env *harness.Env) (func() error, error) {
		ctrl.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(true)))
		// Tests read through an uncached client so they see the API server's truth.
		k8s = env.Client
		op, stop, err := harness.StartOperator(ctx, env.Config, harness.OperatorOptions(), operator.Deps{Clock: fakeClock, Registerer: registry})
		if err != nil {
			return nil, err
		}
		testMetrics, cached = op.Metrics, op.GetClient()
		return stop, nil
	}}))
}
