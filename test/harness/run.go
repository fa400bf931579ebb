package harness

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/controlplane"
)

// OperatorNamespace is the operator namespace of every test control plane.
const OperatorNamespace = operator.DefaultOperatorNamespace

// Env is a running test control plane.
type Env struct {
	*controlplane.Env
	// Client reads and writes the API server directly (no cache), so tests
	// see its truth.
	Client client.Client
}

// RunInput configures Run.
type RunInput struct {
	M *testing.M
	// Configure adjusts the control plane before it starts (API server
	// flags, webhook configurations).
	Configure []func(*envtest.Environment)
	// Setup runs once the control plane is up and the operator namespace
	// exists, before the tests. What it starts must stop when ctx ends; a
	// returned stop function, if any, is called (and waited for) after the
	// tests.
	Setup func(ctx context.Context, env *Env) (stop func() error, err error)
	// ShortTests is a -run pattern of the package's tests that need no
	// control plane. Under `go test -short` only they run, and no control
	// plane starts; without a pattern the package runs nothing.
	ShortTests string
}

// Run is a test package's TestMain body (cluster-api's envtest.Run): it
// starts one real kube-apiserver + etcd for the package, creates the
// operator namespace, runs Setup and the tests, then stops everything it
// started, by PID, and returns the exit code. Under `go test -short` it
// starts nothing and runs only RunInput.ShortTests.
func Run(in RunInput) int {
	flag.Parse()
	if testing.Short() {
		if in.ShortTests == "" {
			fmt.Println("skipped under -short: every test here needs kube-apiserver + etcd")
			return 0
		}
		if err := flag.Set("test.run", in.ShortTests); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return in.M.Run()
	}
	code, err := run(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

func run(in RunInput) (code int, err error) {
	cp, err := controlplane.Start(in.Configure...)
	if err != nil {
		return 0, err
	}
	defer func() {
		if stopErr := cp.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stopping the control plane: %w", stopErr))
		}
	}()
	c, err := client.New(cp.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: OperatorNamespace}}); err != nil {
		return 0, err
	}
	env := &Env{Env: cp, Client: c}
	stop := func() error { return nil }
	if in.Setup != nil {
		s, err := in.Setup(ctx, env)
		if err != nil {
			return 0, err
		}
		if s != nil {
			stop = s
		}
	}
	code = in.M.Run()
	cancel()
	if err := stop(); err != nil {
		return 1, err
	}
	return code, nil
}

// OperatorOptions are the options of a test operator: the controller only,
// no listeners, two concurrent reconciles, the test operator namespace.
// Tests switch on what they need.
func OperatorOptions() operator.Options {
	o := operator.DefaultOptions()
	o.MetricsAddr, o.ProbeAddr = "0", "0"
	o.EnableWebhook, o.EnableAuthEndpoint = false, false
	o.MaxConcurrentReconciles = 2
	o.OperatorNamespace = OperatorNamespace
	return o
}

// StartOperator builds the process with operator.New — exactly as the
// binaries do — and starts it. deps.Registerer defaults to a fresh registry
// (so several operators can run one after another in a test binary). The
// returned stop cancels it and waits for it to return.
func StartOperator(ctx context.Context, cfg *rest.Config, o operator.Options, deps operator.Deps) (*operator.Operator, func() error, error) {
	if err := o.Complete(); err != nil {
		return nil, nil, err
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	adjust := deps.ManagerOptions
	deps.ManagerOptions = func(mo *ctrl.Options) {
		// Controller names repeat when a test binary starts several operators.
		mo.Controller.SkipNameValidation = ptr.To(true)
		if adjust != nil {
			adjust(mo)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	op, err := operator.New(ctx, cfg, o, deps)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- op.Start(ctx) }()
	stopped := false
	var stopErr error
	return op, func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}, nil
}
