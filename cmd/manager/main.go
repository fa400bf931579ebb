// Command manager runs agentcred: the AgentCredential controller in one
// process managed by controller-runtime.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
)

// DefaultOperatorNamespace holds the hash Secrets unless --operator-namespace
// or POD_NAMESPACE says otherwise.
const DefaultOperatorNamespace = "agentcred-system"

type options struct {
	metricsAddr             string
	probeAddr               string
	leaderElect             bool
	operatorNamespace       string
	maxConcurrentReconciles int
	zap                     zap.Options
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader so that only one replica runs the controller.")
	fs.StringVar(&o.operatorNamespace, "operator-namespace", "", "Namespace of the hash Secrets (default: $POD_NAMESPACE, else "+DefaultOperatorNamespace+").")
	fs.IntVar(&o.maxConcurrentReconciles, "max-concurrent-reconciles", 4, "How many AgentCredentials reconcile at once.")
	o.zap.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.operatorNamespace == "" {
		o.operatorNamespace = os.Getenv("POD_NAMESPACE")
	}
	if o.operatorNamespace == "" {
		o.operatorNamespace = DefaultOperatorNamespace
	}
	if o.maxConcurrentReconciles < 1 {
		return nil, errors.New("--max-concurrent-reconciles must be at least 1")
	}
	return o, nil
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntimeMust(clientgoscheme.AddToScheme(s))
	utilruntimeMust(authv1alpha1.AddToScheme(s))
	return s
}

func utilruntimeMust(err error) {
	if err != nil {
		panic(err)
	}
}

func newManager(o *options) (manager.Manager, error) {
	return ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  newScheme(),
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "agentcred.auth.agrenting.io",
		LeaderElectionNamespace: o.operatorNamespace,
		Cache:                   controllers.CacheOptions(),
	})
}

func setupController(ctx context.Context, mgr manager.Manager, o *options) error {
	metrics := controllers.NewMetrics(mgr.GetCache())
	if err := metrics.Register(ctrlmetrics.Registry); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	r := &controllers.AgentCredentialReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Scheme:            mgr.GetScheme(),
		Clock:             clock.RealClock{},
		Recorder:          mgr.GetEventRecorder("agentcred"),
		OperatorNamespace: o.operatorNamespace,
		Metrics:           metrics,
	}
	return r.SetupWithManager(ctx, mgr, controllers.SetupOptions{MaxConcurrentReconciles: o.maxConcurrentReconciles})
}

func setupProbes(mgr manager.Manager) error {
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("readyz", healthz.Ping)
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	ctx := ctrl.SetupSignalHandler()
	mgr, err := newManager(o)
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := setupController(ctx, mgr, o); err != nil {
		return fmt.Errorf("setting up the controller: %w", err)
	}
	if err := setupProbes(mgr); err != nil {
		return fmt.Errorf("setting up probes: %w", err)
	}
	ctrl.Log.Info("Starting manager", "operatorNamespace", o.operatorNamespace)
	return mgr.Start(ctx)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "agentcred:", err)
		os.Exit(1)
	}
}
