// Package operator assembles agentcred's process: from Options (the flags)
// and Deps (what tests replace: clock, metrics registry, listener) it builds
// one controller-runtime manager running the AgentCredential and
// IdentityClaim controllers, the session signing-key rotator, the admission
// webhook and the auth endpoint — together (the default) or the auth
// endpoint alone. Every binary and every test suite builds the process with
// New, so what is tested is what runs.
package operator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/authserver"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/listener"
	agentwebhook "github.com/agrenting/agentcred/webhook"
)

// Deps are what the process takes from its surroundings. The zero value is
// production: the real clock, controller-runtime's metrics registry, a
// listener on --auth-bind-address.
type Deps struct {
	// Clock drives rotation, sessions and claim holds.
	Clock clock.Clock
	// Registerer receives every metric the process defines.
	Registerer prometheus.Registerer
	// AuthListener, if set, serves the auth endpoint instead of AuthAddr.
	AuthListener net.Listener
	// GRPCAuthListener, if set, serves Envoy ext_authz over gRPC instead of
	// GRPCAuthAddr (which must then not be "0").
	GRPCAuthListener net.Listener
	// ManagerOptions, if set, adjusts the manager's options last.
	ManagerOptions func(*ctrl.Options)
}

// Operator is the assembled process: a manager with everything the options
// enable added to it. Start runs it.
type Operator struct {
	manager.Manager
	// Metrics are the controller's metrics (nil without the controller).
	Metrics *controllers.Metrics
	// Index is the auth endpoint's hash index (nil without the endpoint).
	Index *authserver.Index
}

// Scheme returns a scheme with the built-in types and agentcred's API.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, authv1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// New builds the process against cfg. o must be completed (Options.Complete).
func New(ctx context.Context, cfg *rest.Config, o Options, deps Deps) (*Operator, error) {
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	if deps.Registerer == nil {
		deps.Registerer = ctrlmetrics.Registry
	}
	// One observer for every listener of the process (webhook, auth HTTP
	// and gRPC), all made by internal/listener.
	conns := listener.NewMetrics()
	if err := conns.Register(deps.Registerer); err != nil {
		return nil, fmt.Errorf("registering listener metrics: %w", err)
	}
	mgr, err := newManager(cfg, &o, deps, conns)
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	op := &Operator{Manager: mgr}
	if o.EnableController || o.EnableWebhook {
		if err := identityindex.Register(ctx, mgr.GetFieldIndexer()); err != nil {
			return nil, fmt.Errorf("indexing credentials and claims by identity: %w", err)
		}
	}
	if o.EnableWebhook {
		if err := setupWebhook(mgr, &o); err != nil {
			return nil, fmt.Errorf("setting up the webhook: %w", err)
		}
	}
	if o.EnableController {
		if op.Metrics, err = setupController(mgr, &o, deps); err != nil {
			return nil, fmt.Errorf("setting up the controller: %w", err)
		}
	}
	if o.EnableAuthEndpoint {
		if op.Index, err = setupAuthEndpoint(mgr, &o, deps, conns); err != nil {
			return nil, fmt.Errorf("setting up the auth endpoint: %w", err)
		}
	}
	if err := setupProbes(mgr); err != nil {
		return nil, fmt.Errorf("setting up probes: %w", err)
	}
	return op, nil
}

// Run builds the process and runs it until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o *Options) error {
	op, err := New(ctx, cfg, *o, Deps{})
	if err != nil {
		return err
	}
	ctrl.Log.Info("Starting manager", "operatorNamespace", o.OperatorNamespace,
		"controller", o.EnableController, "webhook", o.EnableWebhook, "authEndpoint", o.EnableAuthEndpoint,
		"identityClaims", string(o.IdentityClaims))
	return op.Start(ctx)
}

func newManager(cfg *rest.Config, o *Options, deps Deps, conns *listener.Metrics) (manager.Manager, error) {
	cacheOptions := controllers.CacheOptions(o.OperatorNamespace)
	if !o.EnableController && !o.EnableWebhook {
		// Auth endpoint alone: it reads only the operator namespace.
		cacheOptions.DefaultNamespaces = map[string]cache.Config{o.OperatorNamespace: {}}
	}
	opts := ctrl.Options{
		Scheme:                  Scheme(),
		Metrics:                 metricsOptions(o),
		HealthProbeBindAddress:  o.ProbeAddr,
		PprofBindAddress:        o.PprofAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "agentcred.auth.agrenting.io",
		LeaderElectionNamespace: o.OperatorNamespace,
		Cache:                   cacheOptions,
	}
	webhookOptions, err := webhookServerOptions(o)
	if err != nil {
		return nil, err
	}
	opts.WebhookServer = newWebhookServer(webhookOptions, conns)
	if deps.ManagerOptions != nil {
		deps.ManagerOptions(&opts)
	}
	return ctrl.NewManager(cfg, opts)
}

// webhookServerOptions are the webhook server's: with
// --webhook-client-ca-file, every connection must present a client
// certificate that CA signed (read once, at start).
func webhookServerOptions(o *Options) (ctrlwebhook.Options, error) {
	opts := ctrlwebhook.Options{Host: o.WebhookHost, Port: o.WebhookPort, CertDir: o.WebhookCertDir}
	if o.WebhookClientCAFile == "" {
		return opts, nil
	}
	pem, err := os.ReadFile(o.WebhookClientCAFile)
	if err != nil {
		return opts, fmt.Errorf("reading --webhook-client-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return opts, fmt.Errorf("--webhook-client-ca-file %s holds no PEM certificate", o.WebhookClientCAFile)
	}
	opts.TLSOpts = []func(*tls.Config){func(c *tls.Config) {
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}}
	return opts, nil
}

// metricsOptions serves metrics over HTTPS to callers the API server
// authenticates and authorizes (as kubebuilder scaffolds do), unless
// --metrics-secure=false.
func metricsOptions(o *Options) metricsserver.Options {
	if !o.MetricsSecure {
		return metricsserver.Options{BindAddress: o.MetricsAddr}
	}
	return metricsserver.Options{
		BindAddress: o.MetricsAddr, SecureServing: true,
		FilterProvider: filters.WithAuthenticationAndAuthorization,
	}
}

// setupWebhook registers the admission webhook once its serving certificate
// exists. With self-signed certificates, cert-controller makes a CA and a
// serving certificate in a Secret, keeps them fresh and injects the CA into
// the ValidatingWebhookConfiguration.
func setupWebhook(mgr manager.Manager, o *Options) error {
	v := &agentwebhook.Validator{
		Credentials: mgr.GetClient(), Secrets: mgr.GetAPIReader(), Reviews: mgr.GetClient(), IdentityClaims: o.IdentityClaims,
		CallersAuthenticated: o.WebhookClientCAFile != "",
	}
	if o.WebhookCertManagement == ExternalCerts {
		// The certificate is there already: register now, before the
		// manager starts the webhook server (registering while it starts
		// races with its defaulting, as the race detector showed).
		if err := v.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("registering the webhook: %w", err)
		}
		return mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker())
	}
	certsReady := make(chan struct{})
	err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:             types.NamespacedName{Namespace: o.WebhookCertNamespace, Name: "agentcred-webhook-server-cert"},
		CertDir:               o.WebhookCertDir,
		CAName:                "agentcred-ca",
		CAOrganization:        "agentcred",
		DNSName:               fmt.Sprintf("%s.%s.svc", o.WebhookServiceName, o.OperatorNamespace),
		IsReady:               certsReady,
		Webhooks:              []rotator.WebhookInfo{{Name: o.WebhookConfigName, Type: rotator.Validating}},
		RequireLeaderElection: o.LeaderElect,
	})
	if err != nil {
		return fmt.Errorf("setting up webhook certificate rotation: %w", err)
	}
	// Self-signed: cert-controller's pattern, register once the certificate exists.
	registered := make(chan error, 1)
	go func() {
		<-certsReady
		registered <- v.SetupWithManager(mgr)
		close(registered)
	}()
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		select {
		case err := <-registered:
			if err != nil {
				return fmt.Errorf("registering the webhook: %w", err)
			}
		case <-ctx.Done():
		}
		return nil
	}))
}

// setupController adds the AgentCredential and IdentityClaim controllers and
// the session signing-key rotator (all leader-elected).
func setupController(mgr manager.Manager, o *Options, deps Deps) (*controllers.Metrics, error) {
	metrics := controllers.NewMetrics(mgr.GetCache())
	if err := metrics.Register(deps.Registerer); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	r := controllers.NewReconciler(mgr, deps.Clock, o.OperatorNamespace, metrics)
	r.IdentityClaims, r.MaxClaimsPerNamespace, r.MaxGrace = o.IdentityClaims, o.MaxClaimsPerNamespace, o.MaxGrace
	r.MaxCredentialsPerNamespace = o.MaxCredentialsPerNamespace
	if err := r.SetupWithManager(mgr, controllers.SetupOptions{MaxConcurrentReconciles: o.MaxConcurrentReconciles}); err != nil {
		return nil, err
	}
	claims := &controllers.IdentityClaimReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: deps.Clock, Hold: o.ClaimHold}
	if err := claims.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if o.AuthTLSSecretName != "" {
		if err := mgr.Add(&controllers.AuthTLSIssuer{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
			Namespace: o.OperatorNamespace, CANamespace: o.WebhookCertNamespace,
			SecretName: o.AuthTLSSecretName, ServiceName: o.AuthServiceName,
			Clock: deps.Clock, Log: ctrl.Log.WithName("auth-tls"),
		}); err != nil {
			return nil, err
		}
	}
	return metrics, mgr.Add(&controllers.SessionKeyRotator{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: o.OperatorNamespace,
		Clock: deps.Clock, Every: o.SessionKeyRotation, MaxTTL: maxSessionTTL,
		Log: ctrl.Log.WithName("session-keys"), Informers: mgr.GetCache(),
	})
}

// setupAuthEndpoint adds the auth endpoint and the informer that feeds its
// index; both run on every replica, leader or not.
func setupAuthEndpoint(mgr manager.Manager, o *Options, deps Deps, conns *listener.Metrics) (*authserver.Index, error) {
	proxies, err := authserver.ParseTrustedProxies(o.TrustedProxies)
	if err != nil {
		return nil, err
	}
	clientset, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return nil, err
	}
	var grpcOpts *authserver.GRPCOptions
	if o.GRPCAuthAddr != "0" || deps.GRPCAuthListener != nil {
		grpcOpts = &authserver.GRPCOptions{Addr: o.GRPCAuthAddr, Listener: deps.GRPCAuthListener}
	}
	index, err := authserver.AddToManager(mgr, clientset, o.OperatorNamespace, authserver.Options{
		GRPC: grpcOpts,
		Addr: o.AuthAddr, Listener: deps.AuthListener, TLSCertFile: o.AuthTLSCertFile, TLSKeyFile: o.AuthTLSKeyFile,
		MaxConnections: o.AuthMaxConnections,
		SessionTTL:     o.SessionTTL, TrustedProxies: proxies, TokenReviewAudiences: splitList(o.TokenReviewAudiences),
		FailureRate: o.FailureRate, FailureBurst: o.FailureBurst,
		Clock: deps.Clock, Log: ctrl.Log.WithName("auth"), Registerer: deps.Registerer, Connections: conns,
	})
	if err != nil {
		return nil, err
	}
	return index, mgr.AddReadyzCheck("auth-index", func(*http.Request) error {
		if !index.Synced() {
			return errors.New("the auth endpoint's hash index has not synced yet")
		}
		return nil
	})
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func setupProbes(mgr manager.Manager) error {
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("ping", healthz.Ping)
}

// SetupLogger installs the logger the flags ask for.
func SetupLogger(o *Options) {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.Zap)))
}
