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
	"testing"
	"time"

	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/prometheus/client_golang/prometheus"

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
	authURL   string // http://127.0.0.1:PORT
	authAddr  string // 127.0.0.1:PORT
	fakeClock = clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx       = context.Background()
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
	authURL = "http://" + authAddr
	dir, err := os.MkdirTemp("", "agentcred-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	webhook, err := harness.WithTokenWebhook(dir, authURL+"/tokenreview", nil, apiAudience)
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
			_, stop, err := harness.StartOperator(ctx, env.Config, o, operator.Deps{Clock: fakeClock, Registerer: reg, AuthListener: ln})
			return stop, err
		},
	})
}
