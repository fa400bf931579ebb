package operator

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/authserver"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// DefaultOperatorNamespace holds the hash Secrets unless --operator-namespace
// or POD_NAMESPACE says otherwise.
const DefaultOperatorNamespace = "agentcred-system"

// Webhook certificate management (--webhook-cert-management).
const (
	// SelfSignedCerts: agentcred makes and rotates its own CA and serving
	// certificate and injects the CA into the webhook configuration.
	SelfSignedCerts = "self-signed"
	// ExternalCerts: the certificate in WebhookCertDir comes from elsewhere.
	ExternalCerts = "external"
)

// maxSessionTTL bounds --session-ttl; spec.sessionTTL has the same bound.
const maxSessionTTL = 24 * time.Hour

// Options configure the process. Each field is a flag (BindFlags); tests
// and the local runner set fields directly, then call Complete.
type Options struct {
	MetricsAddr string
	// MetricsSecure serves metrics over HTTPS to callers that the API
	// server authenticates (TokenReview) and authorizes (get /metrics).
	MetricsSecure           bool
	PprofAddr               string
	ProbeAddr               string
	LeaderElect             bool
	OperatorNamespace       string
	MaxConcurrentReconciles int
	// IdentityClaims is auto (first use claims) or preassigned.
	IdentityClaims tenancy.Mode
	ClaimHold      time.Duration
	// MaxClaimsPerNamespace bounds the claims one namespace makes on first use.
	MaxClaimsPerNamespace int
	// MaxCredentialsPerNamespace bounds the credentials of one namespace
	// that get keys (0: no limit).
	MaxCredentialsPerNamespace int
	// MaxGrace caps the previous key's life while restart targets roll out.
	MaxGrace time.Duration

	EnableController   bool
	EnableAuthEndpoint bool
	EnableWebhook      bool

	WebhookHost           string
	WebhookPort           int
	WebhookCertDir        string
	WebhookCertManagement string
	// WebhookCertNamespace holds the self-signed webhook CA and serving
	// certificate Secret (default: the operator namespace). The default
	// install puts it apart, so the auth endpoint, which reads Secrets in
	// the operator namespace, cannot read the webhook's CA key.
	WebhookCertNamespace string
	WebhookServiceName   string
	WebhookConfigName    string
	// WebhookClientCAFile, when set, is a PEM CA bundle: the webhook server
	// then requires a client certificate it signed on every connection
	// (kube-apiserver presents one through its AdmissionConfiguration's
	// kubeConfigFile), so no other caller can send AdmissionReviews, and the
	// checks whose answers would be an oracle to a forger run at admission.
	WebhookClientCAFile string

	AuthAddr string
	// GRPCAuthAddr serves Envoy ext_authz over gRPC ("0": off).
	GRPCAuthAddr    string
	AuthTLSCertFile string
	AuthTLSKeyFile  string
	// AuthTLSSecretName, when set, has the controller issue and renew the
	// auth endpoint's serving certificate into this Secret (CA in
	// WebhookCertNamespace, bundle in the ConfigMap agentcred-auth-ca).
	AuthTLSSecretName string
	// AuthServiceName is the auth endpoint's Service, whose DNS names the
	// certificate carries.
	AuthServiceName    string
	AuthMaxConnections int
	SessionTTL         time.Duration
	SessionKeyRotation time.Duration
	// TrustedProxies are comma-separated CIDRs.
	TrustedProxies string
	// TokenReviewAudiences are comma-separated audiences TokenReviews may
	// ask for; none by default.
	TokenReviewAudiences string
	FailureRate          float64
	FailureBurst         int

	Zap zap.Options
}

// DefaultOptions are the flags' defaults: everything in one process.
func DefaultOptions() Options {
	return Options{
		MetricsAddr:                ":8080",
		MetricsSecure:              true,
		PprofAddr:                  "0",
		ProbeAddr:                  ":8081",
		MaxConcurrentReconciles:    4,
		IdentityClaims:             tenancy.FirstUse,
		ClaimHold:                  controllers.DefaultClaimHold,
		MaxClaimsPerNamespace:      10000,
		MaxCredentialsPerNamespace: controllers.DefaultMaxCredentialsPerNamespace,
		MaxGrace:                   controllers.DefaultMaxGrace,
		EnableController:           true,
		EnableAuthEndpoint:         true,
		EnableWebhook:              true,
		WebhookPort:                9443,
		WebhookCertDir:             "/tmp/k8s-webhook-server/serving-certs",
		WebhookCertManagement:      SelfSignedCerts,
		WebhookServiceName:         "agentcred-webhook-service",
		WebhookConfigName:          "agentcred-validating-webhook-configuration",
		AuthAddr:                   ":8082",
		AuthServiceName:            "agentcred-auth",
		GRPCAuthAddr:               "0",
		AuthMaxConnections:         authserver.DefaultMaxConnections,
		SessionTTL:                 time.Hour,
		SessionKeyRotation:         24 * time.Hour,
		FailureRate:                1,
		FailureBurst:               20,
	}
}

// BindFlags defines a flag for every option on fs, defaulting to o's values.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Address of the Prometheus metrics endpoint; 0 disables it.")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure,
		"Serve metrics over HTTPS, only to callers authenticated and authorized by the API server (RBAC: get on the /metrics non-resource URL); false serves plain HTTP to anyone (local use).")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "Address of /healthz and /readyz.")
	fs.StringVar(&o.PprofAddr, "pprof-bind-address", o.PprofAddr, "Address of the Go profiler (/debug/pprof/); 0 disables it. Bind it to loopback: it is unauthenticated.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader so that only one replica runs the controller.")
	fs.StringVar(&o.OperatorNamespace, "operator-namespace", o.OperatorNamespace, "Namespace of the hash Secrets (default: $POD_NAMESPACE, else "+DefaultOperatorNamespace+").")
	fs.IntVar(&o.MaxConcurrentReconciles, "max-concurrent-reconciles", o.MaxConcurrentReconciles, "How many AgentCredentials reconcile at once.")
	fs.Func("identity-claims",
		"How namespaces get agent IDs and users: auto (the first namespace to use an identity claims it) or preassigned (only IdentityClaims a cluster admin created may be used). (default "+string(o.IdentityClaims)+")",
		func(s string) (err error) { o.IdentityClaims, err = tenancy.ParseMode(s); return err })
	fs.DurationVar(&o.ClaimHold, "claim-hold", o.ClaimHold,
		"How long an IdentityClaim that agentcred made stays with its namespace after the last credential there stopped using it.")
	fs.IntVar(&o.MaxClaimsPerNamespace, "max-claims-per-namespace", o.MaxClaimsPerNamespace,
		"How many IdentityClaims may bind one namespace before it can claim no more identities on first use (claims are cluster-scoped: no ResourceQuota counts them); 0: no limit.")
	fs.IntVar(&o.MaxCredentialsPerNamespace, "max-credentials-per-namespace", o.MaxCredentialsPerNamespace,
		"How many AgentCredentials of one namespace get keys: the oldest (by creation time, then name) do, the newer ones report Ready=False reason "+controllers.ReasonCredentialLimitReached+" and get no key. It bounds what one tenant costs the manager's memory; a ResourceQuota on count/agentcredentials.auth.agrenting.io refuses them at creation instead. 0: no limit.")
	fs.DurationVar(&o.MaxGrace, "max-grace", o.MaxGrace,
		"How long, at most, a scheduled rotation's previous key stays valid while a restart target is still rolling out (a Warning event GraceCapReached when it is cut).")
	fs.BoolVar(&o.EnableController, "enable-controller", o.EnableController, "Run the AgentCredential controller (and the session signing-key rotator). Off: the auth endpoint alone, needing only read access to Secrets in the operator namespace.")
	fs.BoolVar(&o.EnableAuthEndpoint, "enable-auth-endpoint", o.EnableAuthEndpoint, "Serve the auth endpoint.")
	fs.BoolVar(&o.EnableWebhook, "enable-webhook", o.EnableWebhook, "Serve the validating admission webhook.")
	fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort, "Port of the admission webhook server.")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", o.WebhookCertDir, "Directory with the webhook's tls.crt and tls.key.")
	fs.StringVar(&o.WebhookCertManagement, "webhook-cert-management", o.WebhookCertManagement,
		"self-signed: agentcred makes and rotates its own CA and serving certificate and injects the CA into the webhook configuration; external: the certificate in --webhook-cert-dir comes from elsewhere (cert-manager).")
	fs.StringVar(&o.WebhookCertNamespace, "webhook-cert-namespace", o.WebhookCertNamespace,
		"Namespace of the self-signed webhook certificate Secret (default: the operator namespace); keep it apart from the Secrets the auth endpoint may read.")
	fs.StringVar(&o.WebhookServiceName, "webhook-service-name", o.WebhookServiceName, "Service in front of the webhook (the serving certificate's DNS name).")
	fs.StringVar(&o.WebhookConfigName, "webhook-configuration-name", o.WebhookConfigName, "ValidatingWebhookConfiguration to inject the CA into.")
	fs.StringVar(&o.WebhookClientCAFile, "webhook-client-ca-file", o.WebhookClientCAFile,
		"PEM CA bundle: the webhook server requires a client certificate signed by it (kube-apiserver presents one when its AdmissionConfiguration's kubeConfigFile says so), and only then refuses identities claimed elsewhere at admission; empty: any TLS client may send AdmissionReviews.")
	fs.StringVar(&o.AuthAddr, "auth-bind-address", o.AuthAddr, "Address of the auth endpoint.")
	fs.StringVar(&o.GRPCAuthAddr, "grpc-auth-bind-address", o.GRPCAuthAddr,
		"Address of the Envoy ext_authz gRPC server (envoy.service.auth.v3.Authorization), with the auth endpoint; 0 disables it. TLS from --auth-tls-cert-file/--auth-tls-key-file.")
	fs.StringVar(&o.AuthTLSCertFile, "auth-tls-cert-file", o.AuthTLSCertFile, "Serve the auth endpoint over TLS with this certificate (and --auth-tls-key-file).")
	fs.StringVar(&o.AuthTLSKeyFile, "auth-tls-key-file", o.AuthTLSKeyFile, "Private key for --auth-tls-cert-file.")
	fs.StringVar(&o.AuthTLSSecretName, "auth-tls-secret-name", o.AuthTLSSecretName,
		"With the controller: issue and renew the auth endpoint's serving certificate (for --auth-service-name) into this kubernetes.io/tls Secret in the operator namespace, its CA into the Secret "+authv1alpha1.AuthCAName+" in --webhook-cert-namespace, and publish the CA bundle for clients in the ConfigMap "+authv1alpha1.AuthCAName+" in the operator namespace; empty: off.")
	fs.StringVar(&o.AuthServiceName, "auth-service-name", o.AuthServiceName, "Service in front of the auth endpoint (the serving certificate's DNS names: <name>.<operator namespace>.svc and .svc.cluster.local).")
	fs.IntVar(&o.AuthMaxConnections, "auth-max-connections", o.AuthMaxConnections, "Concurrent connections the auth endpoint accepts in total; one source (an IPv4 address or IPv6 /64) gets 1/8 of them, a --trusted-proxies address half; past the total a new source displaces the largest holder.")
	fs.DurationVar(&o.SessionTTL, "session-ttl", o.SessionTTL, "Lifetime of session tokens (at most 24h); spec.sessionTTL caps it per credential.")
	fs.DurationVar(&o.SessionKeyRotation, "session-key-rotation", o.SessionKeyRotation, "How often a new session signing key takes over.")
	fs.StringVar(&o.TokenReviewAudiences, "tokenreview-audiences", o.TokenReviewAudiences,
		"Comma-separated audiences a TokenReview may ask agentcred to vouch for; a review naming only other audiences is unauthenticated. One naming none is for the caller's own (kube-apiserver's implicit) audience.")
	fs.StringVar(&o.TrustedProxies, "trusted-proxies", o.TrustedProxies, "Comma-separated CIDRs whose X-Forwarded-For is believed when throttling failed attempts.")
	fs.Float64Var(&o.FailureRate, "auth-failure-rate", o.FailureRate, "Failed attempts per second a client address may make once its burst is spent; 0 disables throttling.")
	fs.IntVar(&o.FailureBurst, "auth-failure-burst", o.FailureBurst, "Failed attempts a client address may make at once.")
	o.Zap.BindFlags(fs)
}

// Complete fills in what defaults from the environment and checks the options.
func (o *Options) Complete() error {
	if o.OperatorNamespace == "" {
		o.OperatorNamespace = os.Getenv("POD_NAMESPACE")
	}
	if o.OperatorNamespace == "" {
		o.OperatorNamespace = DefaultOperatorNamespace
	}
	if o.WebhookCertNamespace == "" {
		o.WebhookCertNamespace = o.OperatorNamespace
	}
	if o.IdentityClaims == "" {
		o.IdentityClaims = tenancy.FirstUse
	}
	switch {
	case o.MaxConcurrentReconciles < 1:
		return errors.New("--max-concurrent-reconciles must be at least 1")
	case o.AuthMaxConnections < 1:
		return errors.New("--auth-max-connections must be at least 1")
	case o.MaxClaimsPerNamespace < 0:
		return errors.New("--max-claims-per-namespace must not be negative")
	case o.MaxCredentialsPerNamespace < 0:
		return errors.New("--max-credentials-per-namespace must not be negative")
	case o.ClaimHold < time.Minute:
		return errors.New("--claim-hold must be at least 1m")
	case o.MaxGrace < 0:
		return errors.New("--max-grace must not be negative")
	case o.SessionTTL < time.Minute || o.SessionTTL > maxSessionTTL:
		return fmt.Errorf("--session-ttl must be between 1m and %s", maxSessionTTL)
	case o.SessionKeyRotation < time.Hour:
		return errors.New("--session-key-rotation must be at least 1h")
	case (o.AuthTLSCertFile == "") != (o.AuthTLSKeyFile == ""):
		return errors.New("--auth-tls-cert-file and --auth-tls-key-file go together")
	case o.AuthTLSSecretName != "" && o.WebhookCertNamespace == o.OperatorNamespace:
		return errors.New("--auth-tls-secret-name needs --webhook-cert-namespace apart from the operator namespace: the auth endpoint reads the Secrets there, and must not read its CA's key")
	case !o.EnableController && !o.EnableAuthEndpoint && !o.EnableWebhook:
		return errors.New("nothing to run: enable the controller, the webhook, the auth endpoint or several")
	case o.WebhookCertManagement != SelfSignedCerts && o.WebhookCertManagement != ExternalCerts:
		return errors.New("--webhook-cert-management must be self-signed or external")
	}
	if _, err := tenancy.ParseMode(string(o.IdentityClaims)); err != nil {
		return fmt.Errorf("--identity-claims: %w", err)
	}
	if _, err := authserver.ParseTrustedProxies(o.TrustedProxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	return nil
}

// ParseFlags parses the manager's command line into completed options.
func ParseFlags(args []string) (*Options, error) {
	return ParseFlagsOver(DefaultOptions(), args)
}

// ParseFlagsOver is ParseFlags with other defaults (make run's loopback
// addresses).
func ParseFlagsOver(o Options, args []string) (*Options, error) {
	// Named for the running binary: manager, or agentcred-local under make run.
	fs := flag.NewFlagSet(filepath.Base(os.Args[0]), flag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := o.Complete(); err != nil {
		return nil, err
	}
	return &o, nil
}

// FlagNames lists the manager's own flags (not the logging ones), for docs checks.
func FlagNames() []string {
	var names []string
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	o := DefaultOptions()
	o.BindFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Name, "zap-") && f.Name != "kubeconfig" {
			names = append(names, f.Name)
		}
	})
	return names
}
