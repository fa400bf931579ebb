// Package operator assembles agentcred's process: it parses the flags and
// runs the AgentCredential controller, the admission webhook and the auth
// endpoint — together (the default) or the auth endpoint alone — in one
// controller-runtime manager. cmd/manager and the local runner use it.
package operator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
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
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/authserver"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/tenancy"
	agentwebhook "github.com/agrenting/agentcred/webhook"
)

// DefaultOperatorNamespace holds the hash Secrets unless --operator-namespace
// or POD_NAMESPACE says otherwise.
const DefaultOperatorNamespace = "agentcred-system"

// Options are the parsed command-line flags.
type Options struct {
	metricsAddr             string
	pprofAddr               string
	probeAddr               string
	leaderElect             bool
	operatorNamespace       string
	maxConcurrentReconciles int
	identityClaims          string
	claimMode               tenancy.Mode
	claimHold               time.Duration

	enableController   bool
	enableAuthEndpoint bool
	enableWebhook      bool

	webhookHost           string
	webhookPort           int
	webhookCertDir        string
	webhookCertManagement string
	webhookServiceName    string
	webhookConfigName     string

	authAddr           string
	authTLSCertFile    string
	authTLSKeyFile     string
	sessionTTL         time.Duration
	sessionKeyRotation time.Duration
	trustedProxies     string
	failureRate        float64
	failureBurst       int

	zap zap.Options
}

// maxSessionTTL bounds --session-ttl; spec.sessionTTL has the same bound.
const maxSessionTTL = 24 * time.Hour

// newFlagSet defines every flag of the manager, bound to o.
func newFlagSet(o *Options) *flag.FlagSet {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "0", "Address of the Go profiler (/debug/pprof/); 0 disables it. Bind it to loopback: it is unauthenticated.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader so that only one replica runs the controller.")
	fs.StringVar(&o.operatorNamespace, "operator-namespace", "", "Namespace of the hash Secrets (default: $POD_NAMESPACE, else "+DefaultOperatorNamespace+").")
	fs.IntVar(&o.maxConcurrentReconciles, "max-concurrent-reconciles", 4, "How many AgentCredentials reconcile at once.")
	fs.StringVar(&o.identityClaims, "identity-claims", string(tenancy.FirstUse),
		"How namespaces get agent IDs and users: auto (the first namespace to use an identity claims it) or preassigned (only IdentityClaims a cluster admin created may be used).")
	fs.DurationVar(&o.claimHold, "claim-hold", controllers.DefaultClaimHold,
		"How long an IdentityClaim that agentcred made stays with its namespace after the last credential there stopped using it.")
	fs.BoolVar(&o.enableController, "enable-controller", true, "Run the AgentCredential controller (and the session signing-key rotator). Off: the auth endpoint alone, needing only read access to Secrets in the operator namespace.")
	fs.BoolVar(&o.enableAuthEndpoint, "enable-auth-endpoint", true, "Serve the auth endpoint.")
	fs.BoolVar(&o.enableWebhook, "enable-webhook", true, "Serve the validating admission webhook.")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "Port of the admission webhook server.")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "Directory with the webhook's tls.crt and tls.key.")
	fs.StringVar(&o.webhookCertManagement, "webhook-cert-management", "self-signed",
		"self-signed: agentcred makes and rotates its own CA and serving certificate and injects the CA into the webhook configuration; external: the certificate in --webhook-cert-dir comes from elsewhere (cert-manager).")
	fs.StringVar(&o.webhookServiceName, "webhook-service-name", "agentcred-webhook-service", "Service in front of the webhook (the serving certificate's DNS name).")
	fs.StringVar(&o.webhookConfigName, "webhook-configuration-name", "agentcred-validating-webhook-configuration", "ValidatingWebhookConfiguration to inject the CA into.")
	fs.StringVar(&o.authAddr, "auth-bind-address", ":8082", "Address of the auth endpoint.")
	fs.StringVar(&o.authTLSCertFile, "auth-tls-cert-file", "", "Serve the auth endpoint over TLS with this certificate (and --auth-tls-key-file).")
	fs.StringVar(&o.authTLSKeyFile, "auth-tls-key-file", "", "Private key for --auth-tls-cert-file.")
	fs.DurationVar(&o.sessionTTL, "session-ttl", time.Hour, "Lifetime of session tokens (at most 24h); spec.sessionTTL caps it per credential.")
	fs.DurationVar(&o.sessionKeyRotation, "session-key-rotation", 24*time.Hour, "How often a new session signing key takes over.")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "Comma-separated CIDRs whose X-Forwarded-For is believed when throttling failed attempts.")
	fs.Float64Var(&o.failureRate, "auth-failure-rate", 1, "Failed attempts per second a client address may make once its burst is spent; 0 disables throttling.")
	fs.IntVar(&o.failureBurst, "auth-failure-burst", 20, "Failed attempts a client address may make at once.")
	o.zap.BindFlags(fs)
	return fs
}

// FlagNames lists the manager's own flags (not the logging ones), for docs checks.
func FlagNames() []string {
	var names []string
	newFlagSet(&Options{}).VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Name, "zap-") && f.Name != "kubeconfig" {
			names = append(names, f.Name)
		}
	})
	return names
}

// ParseFlags parses the manager's flags.
func ParseFlags(args []string) (*Options, error) {
	o := &Options{}
	fs := newFlagSet(o)
	err := fs.Parse(args)
	if err != nil {
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
	if o.claimMode, err = tenancy.ParseMode(o.identityClaims); err != nil {
		return nil, fmt.Errorf("--identity-claims: %w", err)
	}
	if o.claimHold < time.Minute {
		return nil, errors.New("--claim-hold must be at least 1m")
	}
	if o.sessionTTL < time.Minute || o.sessionTTL > maxSessionTTL {
		return nil, fmt.Errorf("--session-ttl must be between 1m and %s", maxSessionTTL)
	}
	if o.sessionKeyRotation < time.Hour {
		return nil, errors.New("--session-key-rotation must be at least 1h")
	}
	if (o.authTLSCertFile == "") != (o.authTLSKeyFile == "") {
		return nil, errors.New("--auth-tls-cert-file and --auth-tls-key-file go together")
	}
	if _, err := authserver.ParseTrustedProxies(o.trustedProxies); err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	if !o.enableController && !o.enableAuthEndpoint && !o.enableWebhook {
		return nil, errors.New("nothing to run: enable the controller, the webhook, the auth endpoint or several")
	}
	if o.webhookCertManagement != "self-signed" && o.webhookCertManagement != "external" {
		return nil, errors.New("--webhook-cert-management must be self-signed or external")
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

func newManager(cfg *rest.Config, o *Options) (manager.Manager, error) {
	cacheOptions := controllers.CacheOptions()
	if !o.enableController && !o.enableWebhook {
		// Auth endpoint alone: it reads only the operator namespace.
		cacheOptions.DefaultNamespaces = map[string]cache.Config{o.operatorNamespace: {}}
	}
	return ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  newScheme(),
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		PprofBindAddress:        o.pprofAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "agentcred.auth.agrenting.io",
		LeaderElectionNamespace: o.operatorNamespace,
		Cache:                   cacheOptions,
		WebhookServer:           ctrlwebhook.NewServer(ctrlwebhook.Options{Host: o.webhookHost, Port: o.webhookPort, CertDir: o.webhookCertDir}),
	})
}

// setupWebhook registers the admission webhook once its serving certificate
// exists. With self-signed certificates, cert-controller makes a CA and a
// serving certificate in a Secret, keeps them fresh and injects the CA into
// the ValidatingWebhookConfiguration.
func setupWebhook(mgr manager.Manager, o *Options) error {
	certsReady := make(chan struct{})
	if o.webhookCertManagement == "self-signed" {
		err := rotator.AddRotator(mgr, &rotator.CertRotator{
			SecretKey:             types.NamespacedName{Namespace: o.operatorNamespace, Name: "agentcred-webhook-server-cert"},
			CertDir:               o.webhookCertDir,
			CAName:                "agentcred-ca",
			CAOrganization:        "agentcred",
			DNSName:               fmt.Sprintf("%s.%s.svc", o.webhookServiceName, o.operatorNamespace),
			IsReady:               certsReady,
			Webhooks:              []rotator.WebhookInfo{{Name: o.webhookConfigName, Type: rotator.Validating}},
			RequireLeaderElection: o.leaderElect,
		})
		if err != nil {
			return fmt.Errorf("setting up webhook certificate rotation: %w", err)
		}
	} else {
		close(certsReady)
	}
	v := &agentwebhook.Validator{Credentials: mgr.GetClient(), Secrets: mgr.GetAPIReader(), IdentityClaims: o.claimMode}
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

func setupController(mgr manager.Manager, o *Options) error {
	metrics := controllers.NewMetrics(mgr.GetCache())
	if err := metrics.Register(ctrlmetrics.Registry); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	r := controllers.NewReconciler(mgr, clock.RealClock{}, o.operatorNamespace, metrics)
	r.IdentityClaims = o.claimMode
	if err := r.SetupWithManager(mgr, controllers.SetupOptions{MaxConcurrentReconciles: o.maxConcurrentReconciles}); err != nil {
		return err
	}
	claims := &controllers.IdentityClaimReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clock.RealClock{}, Hold: o.claimHold}
	if err := claims.SetupWithManager(mgr); err != nil {
		return err
	}
	return mgr.Add(&controllers.SessionKeyRotator{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: o.operatorNamespace,
		Clock: clock.RealClock{}, Every: o.sessionKeyRotation, MaxTTL: maxSessionTTL,
		Log: ctrl.Log.WithName("session-keys"),
	})
}

// setupAuthEndpoint adds the auth endpoint and the informer that feeds its
// index; both run on every replica, leader or not.
func setupAuthEndpoint(mgr manager.Manager, o *Options) error {
	proxies, err := authserver.ParseTrustedProxies(o.trustedProxies)
	if err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	index, err := authserver.AddToManager(mgr, clientset, o.operatorNamespace, authserver.Options{
		Addr: o.authAddr, TLSCertFile: o.authTLSCertFile, TLSKeyFile: o.authTLSKeyFile,
		SessionTTL: o.sessionTTL, TrustedProxies: proxies,
		FailureRate: o.failureRate, FailureBurst: o.failureBurst,
		Clock: clock.RealClock{}, Log: ctrl.Log.WithName("auth"), Registerer: ctrlmetrics.Registry,
	})
	if err != nil {
		return err
	}
	return mgr.AddReadyzCheck("auth-index", func(*http.Request) error {
		if !index.Synced() {
			return errors.New("the auth endpoint's hash index has not synced yet")
		}
		return nil
	})
}

func setupProbes(mgr manager.Manager) error {
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("ping", healthz.Ping)
}

// SetupLogger installs the logger the flags ask for.
func SetupLogger(o *Options) {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
}

// UseLocalWebhook serves the webhook on host:port with the certificate in
// certDir made by someone else (the local runner's control plane).
func (o *Options) UseLocalWebhook(host string, port int, certDir string) {
	o.webhookHost, o.webhookPort, o.webhookCertDir = host, port, certDir
	o.webhookCertManagement = "external"
}

// DisableWebhook turns the webhook off (a cluster whose webhook
// configuration cannot reach this process).
func (o *Options) DisableWebhook() { o.enableWebhook = false }

// OperatorNamespace is where the hash Secrets live.
func (o *Options) OperatorNamespace() string { return o.operatorNamespace }

// AuthAddress is the auth endpoint's listen address.
func (o *Options) AuthAddress() string { return o.authAddr }

// ProbeAddress is the address of /healthz and /readyz.
func (o *Options) ProbeAddress() string { return o.probeAddr }

// Run runs everything the options enable against cfg until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o *Options) error {
	mgr, err := newManager(cfg, o)
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if o.enableController || o.enableWebhook {
		if err := identityindex.Register(ctx, mgr.GetFieldIndexer()); err != nil {
			return fmt.Errorf("indexing credentials and claims by identity: %w", err)
		}
	}
	if o.enableWebhook {
		if err := setupWebhook(mgr, o); err != nil {
			return fmt.Errorf("setting up the webhook: %w", err)
		}
	}
	if o.enableController {
		if err := setupController(mgr, o); err != nil {
			return fmt.Errorf("setting up the controller: %w", err)
		}
	}
	if o.enableAuthEndpoint {
		if err := setupAuthEndpoint(mgr, o); err != nil {
			return fmt.Errorf("setting up the auth endpoint: %w", err)
		}
	}
	if err := setupProbes(mgr); err != nil {
		return fmt.Errorf("setting up probes: %w", err)
	}
	ctrl.Log.Info("Starting manager", "operatorNamespace", o.operatorNamespace,
		"controller", o.enableController, "webhook", o.enableWebhook, "authEndpoint", o.enableAuthEndpoint)
	return mgr.Start(ctx)
}
