package harness

import (
	"context"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/tenancy"
	"github.com/agrenting/agentcred/test/controlplane"
)

// ControllerOptions tune the controller a test runs.
type ControllerOptions struct {
	Clock                   clock.PassiveClock
	OperatorNamespace       string
	MaxConcurrentReconciles int
	// IdentityClaims is the claim mode (default auto).
	IdentityClaims tenancy.Mode
	// ClaimHold is how long unused claims are kept (default
	// controllers.DefaultClaimHold).
	ClaimHold time.Duration
	// Manager overrides manager options; its Scheme, Cache, Metrics and
	// HealthProbeBindAddress are filled in when left empty (the test scheme,
	// controllers.CacheOptions, and no listeners).
	Manager ctrl.Options
}

// NewControllerManager builds a manager with the AgentCredential controller
// wired as the manager binary wires it — label-restricted Secret cache,
// identity indexes, reconcilers — with the test's clock. ctx bounds the index
// registration (use the context the manager will run with). It returns the
// manager and the controller's metrics, not yet registered anywhere.
func NewControllerManager(ctx context.Context, cfg *rest.Config, o ControllerOptions) (manager.Manager, *controllers.Metrics, error) {
	opts := o.Manager
	if opts.Scheme == nil {
		opts.Scheme = controlplane.Scheme()
	}
	if opts.Cache.ByObject == nil {
		opts.Cache = controllers.CacheOptions()
	}
	if opts.Metrics.BindAddress == "" {
		opts.Metrics = metricsserver.Options{BindAddress: "0"}
	}
	if opts.HealthProbeBindAddress == "" {
		opts.HealthProbeBindAddress = "0"
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	if err := identityindex.Register(ctx, mgr.GetFieldIndexer()); err != nil {
		return nil, nil, err
	}
	metrics := controllers.NewMetrics(mgr.GetCache())
	r := controllers.NewReconciler(mgr, o.Clock, o.OperatorNamespace, metrics)
	r.IdentityClaims = o.IdentityClaims
	if err := r.SetupWithManager(mgr, controllers.SetupOptions{MaxConcurrentReconciles: o.MaxConcurrentReconciles}); err != nil {
		return nil, nil, err
	}
	hold := o.ClaimHold
	if hold == 0 {
		hold = controllers.DefaultClaimHold
	}
	claims := &controllers.IdentityClaimReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: o.Clock, Hold: hold}
	if err := claims.SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}
	return mgr, metrics, nil
}
