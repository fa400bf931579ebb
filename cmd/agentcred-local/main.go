// Command agentcred-local runs agentcred for development (`make run`). When
// KUBECONFIG (or ~/.kube/config) points at a cluster that answers, it runs
// the manager against that cluster like any kubebuilder project. Otherwise it
// starts an embedded local control plane — the real kube-apiserver and etcd
// the tests use — installs the CRD and the webhook configuration, runs the
// controller, the webhook and the auth endpoint in this process, and prints
// how to use it. Ctrl-C, SIGTERM or closing the terminal (SIGHUP) stops
// everything and removes what it made; kube-apiserver and etcd die with this
// process even if it is killed (Linux parent-death signal, through
// setpriv), and a KUBECONFIG left over from a previous run whose process is
// gone is recognised and not used.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/controlplane"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "agentcred-local:", err)
		os.Exit(1)
	}
}

// localDefaults are the manager's defaults with every listener on loopback:
// make run serves plain HTTP on a developer's machine, which its banner and
// the docs say is reachable from this machine only. A flag such as
// --auth-bind-address=:8082 still opens it to the network on purpose.
func localDefaults() operator.Options {
	o := operator.DefaultOptions()
	o.MetricsAddr, o.ProbeAddr, o.AuthAddr = "127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"
	return o
}

func run(args []string) error {
	o, err := operator.ParseFlagsOver(localDefaults(), args)
	if err != nil {
		return err
	}
	operator.SetupLogger(o)
	ctx := signalContext()
	if cfg, where, ok := reachableCluster(); ok {
		fmt.Printf("agentcred-local: using the cluster at %s (from %s); the webhook is off because that cluster cannot call this process.\n", cfg.Host, where)
		fmt.Println("agentcred-local: install the CRD first if needed: kubectl apply --server-side -f config/crd/bases")
		o.EnableWebhook = false
		return operator.Run(ctx, cfg, o)
	}
	return runEmbedded(ctx, o)
}

// signalContext is cancelled by SIGINT (Ctrl-C), SIGTERM or SIGHUP (the
// terminal closed): all three stop everything in order. Another signal more
// than two seconds later exits at once; one sooner is the same stop
// arriving twice (the terminal signals make and this process, and make
// passes it on), not an impatient user.
func signalContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	c := make(chan os.Signal, 4)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-c
		first := time.Now()
		fmt.Printf("agentcred-local: %s received\n", sig)
		cancel()
		for range c {
			if time.Since(first) > 2*time.Second {
				os.Exit(1)
			}
		}
	}()
	return ctx
}

// pidFile, next to the kubeconfig of an embedded run, names the process that
// owns that control plane.
const pidFile = "agentcred-local.pid"

// staleKubeconfig reports whether path is the kubeconfig of an earlier
// embedded run whose process is gone: its control plane, if anything still
// listens there, is an orphan without the webhook.
func staleKubeconfig(path string) (int, bool) {
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(path), pidFile)) //nolint:gosec // the user's own KUBECONFIG
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, syscall.Kill(pid, 0) == syscall.ESRCH
}

// reachableCluster loads the usual kubeconfig and checks that it answers.
func reachableCluster() (*rest.Config, string, bool) {
	if kc := os.Getenv("KUBECONFIG"); kc != "" && !strings.Contains(kc, string(os.PathListSeparator)) {
		if pid, stale := staleKubeconfig(kc); stale {
			fmt.Printf("agentcred-local: KUBECONFIG=%s belongs to an earlier make run (pid %d) that is gone; not using it.\n", kc, pid)
			fmt.Println("agentcred-local: unset KUBECONFIG (or export the new one below); if its kube-apiserver and etcd still run, stop them: pkill -f k8s_test_framework_")
			return nil, "", false
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if os.Getenv("KUBECONFIG") == "" {
		if _, err := os.Stat(rules.GetDefaultFilename()); err != nil {
			return nil, "", false
		}
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, "", false
	}
	probe := rest.CopyConfig(cfg)
	probe.Timeout = 3 * time.Second
	cs, err := kubernetes.NewForConfig(probe)
	if err != nil {
		return nil, "", false
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		fmt.Printf("agentcred-local: the cluster in your kubeconfig does not answer (%v); starting a local one.\n", err)
		return nil, "", false
	}
	where := os.Getenv("KUBECONFIG")
	if where == "" {
		where = rules.GetDefaultFilename()
	}
	return cfg, where, true
}

func runEmbedded(ctx context.Context, o *operator.Options) (err error) {
	assets, err := controlplane.AssetsDir()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "agentcred-local-")
	if err != nil {
		return err
	}
	defer func() {
		if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
			err = rmErr
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	bins, err := controlplane.DieWithParent(assets, filepath.Join(dir, "bin"))
	if err != nil {
		return err
	}
	if bins == assets {
		fmt.Println("agentcred-local: setpriv (util-linux) not found: kube-apiserver and etcd will outlive this process if it is killed")
	}
	fmt.Println("agentcred-local: starting kube-apiserver and etcd from", assets)
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(controlplane.RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(controlplane.RepoRoot(), "config", "webhook")}},
		BinaryAssetsDirectory: bins,
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return fmt.Errorf("starting the local control plane: %w", err)
	}
	defer func() {
		if stopErr := env.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
		fmt.Println("agentcred-local: stopped kube-apiserver and etcd and removed", dir)
	}()
	kubeconfig, err := writeKubeconfig(env, dir)
	if err != nil {
		return err
	}
	if err := createNamespace(ctx, cfg, o.OperatorNamespace); err != nil {
		return err
	}
	// The webhook serves where envtest registered it, with envtest's certificate.
	wio := env.WebhookInstallOptions
	o.WebhookHost, o.WebhookPort, o.WebhookCertDir = wio.LocalServingHost, wio.LocalServingPort, wio.LocalServingCertDir
	o.WebhookCertManagement = operator.ExternalCerts

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- operator.Run(runCtx, cfg, o) }()
	// Each check on its own first (controller-runtime logs a failed
	// /readyz, not a failed /readyz/<check>), then the whole.
	for _, path := range []string{"/readyz/ping", "/readyz/auth-index", "/readyz/webhook", "/readyz"} {
		if err := waitReady(runCtx, localURL(o.ProbeAddr)+path, errc); err != nil {
			return err
		}
	}
	printBanner(kubeconfig, authCurl(o))
	select {
	case <-ctx.Done():
		fmt.Println("agentcred-local: stopping")
		cancel()
		return <-errc
	case err := <-errc:
		return err
	}
}

func writeKubeconfig(env *envtest.Environment, dir string) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "local-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("creating an admin user: %w", err)
	}
	raw, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, raw, 0o600)
}

func createNamespace(ctx context.Context, cfg *rest.Config, name string) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

// localURL turns a listen address such as ":8082" into a URL on loopback.
func localURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func waitReady(ctx context.Context, url string, errc <-chan error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("the manager stopped before it was ready: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("the manager was not ready after 2 minutes (%s)", url)
		case <-tick.C:
			resp, err := http.Get(url) //nolint:gosec,noctx // loopback probe of our own server
			if err == nil {
				_ = resp.Body.Close()
				// A check the flags switched off (no webhook, no auth
				// endpoint) does not exist: nothing to wait for.
				if resp.StatusCode == http.StatusOK || (resp.StatusCode == http.StatusNotFound && !strings.HasSuffix(url, "/readyz")) {
					return nil
				}
			}
		}
	}
}

// authCurl is the curl invocation of the banner's last line, up to the
// path: https with the certificate as CA (fine for a self-signed one; for a
// CA-signed one, pass its CA instead) when the endpoint serves TLS.
func authCurl(o *operator.Options) string {
	url := localURL(o.AuthAddr)
	if o.AuthTLSCertFile == "" {
		// The banner says so: an installed endpoint serves TLS.
		return "# plain HTTP on loopback (installed in a cluster, the endpoint serves TLS)\n  curl -i -H \"X-API-Key: $KEY\" " + url
	}
	return fmt.Sprintf("curl -i --cacert %s -H \"X-API-Key: $KEY\" %s", o.AuthTLSCertFile, "https"+strings.TrimPrefix(url, "http"))
}

func printBanner(kubeconfig, curl string) {
	fmt.Printf(`
agentcred is ready on a local control plane (kube-apiserver + etcd).
Try it in another shell:

  export KUBECONFIG=%s
  kubectl apply -f config/samples/      # an APIKey (billing-agent), a sandbox one and a UserToken (alice)
  kubectl wait --for=condition=Ready agentcredential/billing-agent agentcredential/alice
  KEY=$(kubectl get secret billing-agent -o jsonpath='{.data.api-key}' | base64 -d)
  %s/auth/verify

Press Ctrl-C to stop; the control plane and its files are removed.
`, kubeconfig, curl)
}
