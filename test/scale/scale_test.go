// Package scale measures the operator against a real kube-apiserver + etcd:
// revocation latency, reconcile throughput against a client-side ceiling, and
// whether unrelated Secrets cost the controller memory. It holds benchmarks
// only; `make bench-scale` runs them (AGENTCRED_SCALE_N sets the number of
// credentials, default 1000; AGENTCRED_SCALE_CONCURRENCY the concurrent
// reconciles to compare, default 4,16; AGENTCRED_SCALE_APISERVER_PROFILE a
// path prefix for kube-apiserver CPU profiles of the throughput runs).
// Nothing starts when no benchmark is asked for.
package scale

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/go-logr/logr"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/internal/tenancy"
	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

const operatorNamespace = harness.OperatorNamespace

var (
	env     *controlplane.Env
	k8s     client.Client
	authURL string
	ctx     = context.Background()
	workers = 16
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run()) // no benchmarks asked for: start nothing
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctrl.SetLogger(logr.Discard())
	return harness.Run(harness.RunInput{M: m, Setup: func(_ context.Context, e *harness.Env) (func() error, error) {
		env = e.Env
		cfg := rest.CopyConfig(env.Config)
		cfg.QPS, cfg.Burst = 1000, 2000 // the ceiling and the controller get the same client limits
		var err error
		k8s, err = client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
		return nil, err
	}})
}

// startOperator runs the controller and the auth endpoint in-process with
// the real clock, as the manager binary does.
func startOperator(b *testing.B, concurrency int) (stop func()) {
	stop, _ = startOperatorWithCache(b, concurrency)
	return stop
}

// startOperatorWithCache also returns the manager's cache-backed client.
func startOperatorWithCache(b *testing.B, concurrency int) (func(), client.Client) {
	return startOperatorWithClock(b, concurrency, clock.RealClock{})
}

// startOperatorWithClock runs the operator (controller and auth endpoint,
// assembled by operator.New as the binary is) with the given clock.
func startOperatorWithClock(b *testing.B, concurrency int, clk clock.Clock) (func(), client.Client) {
	b.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 1000, 2000
	operatorRequests.reset()
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &countingTransport{next: rt} })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	authURL = "http://" + ln.Addr().String()
	o := harness.OperatorOptions()
	o.EnableAuthEndpoint, o.FailureRate, o.MaxConcurrentReconciles = true, 0, concurrency
	o.MaxClaimsPerNamespace = 0 // one namespace holds every benchmark credential
	o.MaxCredentialsPerNamespace = 0
	op, stop, err := harness.StartOperator(ctx, cfg, o, operator.Deps{Clock: clk, AuthListener: ln,
		ManagerOptions: func(mo *ctrl.Options) { mo.Logger = logr.Discard() }})
	if err != nil {
		b.Fatal(err)
	}
	return func() {
		if err := stop(); err != nil {
			b.Errorf("manager: %v", err)
		}
	}, op.GetClient()
}

// operatorRequests counts the API requests the operator makes, by method and resource.
var operatorRequests = &requestCounter{}

type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *requestCounter) reset() {
	c.mu.Lock()
	c.counts = map[string]int{}
	c.mu.Unlock()
}

func (c *requestCounter) add(key string) {
	c.mu.Lock()
	c.counts[key]++
	c.mu.Unlock()
}

// report adds requests-per-credential metrics for each method and resource.
func (c *requestCounter) report(b *testing.B, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for k, v := range c.counts {
		total += v
		b.ReportMetric(float64(v)/float64(n), k+"/credential")
	}
	b.ReportMetric(float64(total)/float64(n), "api-requests/credential")
}

type countingTransport struct{ next http.RoundTripper }

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	resource := ""
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			resource = parts[i+2]
			if i+4 < len(parts) {
				resource += "/" + parts[i+4]
			}
		}
	}
	if resource == "" && len(parts) > 0 {
		resource = parts[len(parts)-1]
	}
	if r.URL.Query().Get("watch") == "true" {
		resource += "-watch"
	}
	operatorRequests.add(r.Method + "-" + resource)
	return t.next.RoundTrip(r)
}

func scaleN() int {
	if n, err := strconv.Atoi(os.Getenv("AGENTCRED_SCALE_N")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// concurrencies are the --max-concurrent-reconciles values to measure:
// AGENTCRED_SCALE_CONCURRENCY (comma-separated), default 4 and 16.
func concurrencies() []int {
	var out []int
	for _, f := range strings.Split(os.Getenv("AGENTCRED_SCALE_CONCURRENCY"), ",") {
		if c, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && c > 0 {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return []int{4, 16}
	}
	return out
}

var nsCounter atomic.Int64

func newNamespace(b *testing.B, prefix string) string {
	b.Helper()
	name := fmt.Sprintf("%s-%d", prefix, nsCounter.Add(1))
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		b.Fatal(err)
	}
	return name
}

func credential(ns string, i int) *authv1alpha1.AgentCredential {
	return &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("agent-%d", i)},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: fmt.Sprintf("%08x-0000-4000-8000-%012d", nsCounter.Load(), i)},
	}
}

// parallel runs f(i) for i in [0,n) on workers goroutines and returns the first error.
func parallel(n int, f func(i int) error) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// ceiling is what a tight client loop does for n credentials without any
// controller: create the credential, its agent Secret and its hash Secret,
// and update its status — the writes the controller makes to issue a key.
func ceiling(b *testing.B, n int) time.Duration {
	return clientLoop(b, n, "ceiling", func(ns string, c *authv1alpha1.AgentCredential) error {
		c.Finalizers = []string{"scale.test/hold"} // the controller adds one too
		if err := k8s.Create(ctx, c); err != nil {
			return err
		}
		if err := createSecretPair(ns, c); err != nil {
			return err
		}
		c.Status.KeyID = "0123456789ab"
		meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: "Ready", Status: "True", Reason: "KeyIssued", Message: "x"})
		return k8s.Status().Update(ctx, c)
	})
}

// mirror makes, from the same tight client loop, exactly the requests the
// operator makes per credential (as counted by operatorRequests) plus the
// credential's creation: what the operator would take if it added nothing
// but its requests.
func mirror(b *testing.B, n int) time.Duration {
	return clientLoop(b, n, "mirror", func(ns string, c *authv1alpha1.AgentCredential) error {
		if err := k8s.Create(ctx, c); err != nil {
			return err
		}
		patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
		c.Finalizers = []string{"scale.test/hold"}
		if err := k8s.Patch(ctx, c, patch); err != nil {
			return err
		}
		switch err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: c.Name}, &corev1.Secret{}); {
		case err == nil:
			return fmt.Errorf("secret %s/%s already exists", ns, c.Name)
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("reading the agent Secret: %w", err)
		}
		if err := createClaim(ns, c); err != nil {
			return err
		}
		if err := createSecretPair(ns, c); err != nil {
			return err
		}
		before := c.DeepCopy()
		now := metav1.Now()
		c.Status = authv1alpha1.AgentCredentialStatus{ObservedGeneration: c.Generation, AgentID: c.Spec.AgentID, SecretName: c.Name,
			KeyID: "0123456789ab", LastRotationTime: &now, NextRotationTime: &now}
		meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: "Ready", Status: "True", Reason: "KeyIssued",
			Message: "Key 0123456789ab is issued in Secret " + c.Name + "; next rotation at " + now.UTC().Format(time.RFC3339)})
		if err := k8s.Status().Patch(ctx, c, client.MergeFrom(before)); err != nil {
			return err
		}
		return k8s.Create(ctx, &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s.%x", c.Name, time.Now().UnixNano())},
			EventTime:  metav1.NewMicroTime(time.Now()), ReportingController: "scale.test/mirror", ReportingInstance: "scale.test",
			Action: "Issue", Reason: "Issued", Type: corev1.EventTypeNormal, Note: "Issued key 0123456789ab into Secret " + c.Name,
			Regarding: corev1.ObjectReference{Kind: "AgentCredential", APIVersion: authv1alpha1.GroupVersion.String(),
				Namespace: ns, Name: c.Name, UID: c.UID},
		})
	})
}

// createClaim creates the IdentityClaim of c's agent with c recorded as its
// user, as the operator does on a credential's first reconcile: one Create.
func createClaim(ns string, c *authv1alpha1.AgentCredential) error {
	id := tenancy.Agent(c.Spec.AgentID)
	claim := &authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(id), Labels: map[string]string{
			authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue, authv1alpha1.CredentialLabel: c.Name, authv1alpha1.CredentialNamespaceLabel: ns}},
		Spec:   authv1alpha1.IdentityClaimSpec{Kind: id.Kind, Value: id.Value, Namespace: ns},
		Status: authv1alpha1.IdentityClaimStatus{Credentials: []string{c.Name}, LastUsedTime: ptr.To(metav1.Now())},
	}
	return k8s.Create(ctx, claim)
}

// createSecretPair creates an agent Secret and a hash Secret of the size
// the operator writes, labelled so that purge finds them.
func createSecretPair(ns string, c *authv1alpha1.AgentCredential) error {
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: c.Name}, Data: map[string][]byte{"api-key": []byte("x")}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: "ceiling-" + ns + "-" + c.Name,
			Labels: map[string]string{authv1alpha1.CredentialNamespaceLabel: ns}}, Data: map[string][]byte{"h": []byte("x")}},
	} {
		if err := k8s.Create(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// clientLoop runs perCredential for n credentials on the benchmark's
// workers in a new namespace, returns how long that took, and removes what
// it made: the operator measured next must not find these credentials (it
// would reconcile them too and do twice the work the loop did).
func clientLoop(b *testing.B, n int, prefix string, perCredential func(ns string, c *authv1alpha1.AgentCredential) error) time.Duration {
	b.Helper()
	ns := newNamespace(b, prefix)
	start := time.Now()
	if err := parallel(n, func(i int) error { return perCredential(ns, credential(ns, i)) }); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	purge(b, ns)
	return elapsed
}

// purge removes every credential in ns, the Secrets in ns and their hash
// Secrets, with no operator running (so finalizers are removed by hand), and
// waits until the API server no longer lists them. Each benchmark leaves the
// control plane as it found it, so no benchmark reconciles another's objects.
func purge(b *testing.B, ns string) {
	b.Helper()
	list := &authv1alpha1.AgentCredentialList{}
	if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
		b.Fatal(err)
	}
	noFinalizers := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))
	if err := parallel(len(list.Items), func(i int) error {
		return client.IgnoreNotFound(k8s.Patch(ctx, &list.Items[i], noFinalizers))
	}); err != nil {
		b.Fatal(err)
	}
	for _, del := range []struct {
		obj  client.Object
		opts []client.DeleteAllOfOption
	}{
		{&authv1alpha1.AgentCredential{}, []client.DeleteAllOfOption{client.InNamespace(ns)}},
		{&corev1.Secret{}, []client.DeleteAllOfOption{client.InNamespace(ns)}},
		{&eventsv1.Event{}, []client.DeleteAllOfOption{client.InNamespace(ns)}},
		{&corev1.Secret{}, []client.DeleteAllOfOption{client.InNamespace(operatorNamespace),
			client.MatchingLabels{authv1alpha1.CredentialNamespaceLabel: ns}}},
		{&authv1alpha1.IdentityClaim{}, []client.DeleteAllOfOption{client.MatchingLabels{authv1alpha1.CredentialNamespaceLabel: ns}}},
	} {
		if err := k8s.DeleteAllOf(ctx, del.obj, del.opts...); err != nil {
			b.Fatal(err)
		}
	}
	waitCount(b, func() int {
		left := &authv1alpha1.AgentCredentialList{}
		if err := k8s.List(ctx, left, client.InNamespace(ns), client.Limit(1)); err != nil || len(left.Items) > 0 {
			return 0
		}
		return 1
	}, 1)
}

// countReady counts Ready credentials in ns from the manager's cache, so that
// watching progress puts no load on the API server being measured. The list
// is not deep-copied: at 10,000 credentials, copying the whole cache ten
// times a second cost the in-process operator measurable CPU.
func countReady(c client.Client, ns string) int {
	return countCredentials(c, ns, func(*authv1alpha1.AgentCredential) bool { return true })
}

// countRotated counts Ready credentials in ns that rotated at least once.
func countRotated(c client.Client, ns string) int {
	return countCredentials(c, ns, func(cred *authv1alpha1.AgentCredential) bool { return cred.Status.RotationCount >= 1 })
}

// countCredentials counts the Ready credentials in ns that match.
func countCredentials(c client.Client, ns string, match func(*authv1alpha1.AgentCredential) bool) int {
	list := &authv1alpha1.AgentCredentialList{}
	if err := c.List(ctx, list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return 0
	}
	n := 0
	for i := range list.Items {
		if cred := &list.Items[i]; meta.IsStatusConditionTrue(cred.Status.Conditions, authv1alpha1.ReadyCondition) && match(cred) {
			n++
		}
	}
	return n
}

// BenchmarkReconcileThroughput creates N credentials at once and measures the
// time until all are Ready, between two ceilings measured in the same run:
// one before the controller starts and one after its objects are removed
// (the API server gets slower as etcd and its own heap grow during a run, so
// a single ceiling measured first flatters the ceiling). Each ceiling's
// objects are removed before the next step. A third client loop makes
// exactly the operator's requests: the operator's time against it shows what
// the operator costs beyond the requests it makes.
func BenchmarkReconcileThroughput(b *testing.B) {
	n := scaleN()
	// The first loop against a fresh API server is slower (measured: 8.4 s
	// against 5.2 s for the same 1,000-credential ceiling later in the run);
	// warm it up so that no measurement pays for that.
	ceiling(b, min(n, 500))
	for _, conc := range concurrencies() {
		b.Run(fmt.Sprintf("credentials=%d/max-concurrent-reconciles=%d", n, conc), func(b *testing.B) {
			for b.Loop() {
				before := ceiling(b, n)
				same := mirror(b, n)
				stop, cached := startOperatorWithCache(b, conc)
				ns := newNamespace(b, "throughput")
				profiled := profileAPIServer(b, fmt.Sprintf("conc%d", conc))
				start := time.Now()
				if err := parallel(n, func(i int) error { return k8s.Create(ctx, credential(ns, i)) }); err != nil {
					b.Fatal(err)
				}
				created := time.Since(start)
				waitCount(b, func() int { return countReady(cached, ns) }, n)
				total := time.Since(start)
				profiled()
				// The operator runs in this process: its heap (after GC) and
				// the process RSS with N credentials cached and indexed.
				b.ReportMetric(float64(heap())/1024/1024, "process-heap-MiB")
				b.ReportMetric(rssMiB(), "process-rss-MiB")
				stop()
				operatorRequests.report(b, n)
				purge(b, ns)
				after := ceiling(b, n)
				ceil := (before + after) / 2
				b.ReportMetric(before.Seconds(), "ceiling-before-s")
				b.ReportMetric(after.Seconds(), "ceiling-after-s")
				b.ReportMetric(created.Seconds(), "create-s")
				b.ReportMetric(total.Seconds(), "all-ready-s")
				b.ReportMetric(float64(n)/total.Seconds(), "credentials/s")
				b.ReportMetric(ceil.Seconds()/total.Seconds(), "ratio-to-ceiling")
				b.ReportMetric(same.Seconds(), "operator-requests-by-client-s")
				b.ReportMetric(same.Seconds()/total.Seconds(), "ratio-to-operator-requests-by-client")
			}
		})
	}
}

// profileAPIServer, when AGENTCRED_SCALE_APISERVER_PROFILE names a path
// prefix, records a CPU profile of kube-apiserver (its /debug/pprof, as the
// admin user) for the first 8 seconds of the operator's work, to
// <prefix>-<name>.pprof; the returned func waits for it.
func profileAPIServer(b *testing.B, name string) (wait func()) {
	prefix := os.Getenv("AGENTCRED_SCALE_APISERVER_PROFILE")
	if prefix == "" {
		return func() {}
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "8").
			Timeout(30 * time.Second).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(prefix+"-"+name+".pprof", raw, 0o600)
		}
		done <- err
	}()
	return func() {
		if err := <-done; err != nil {
			b.Errorf("profiling kube-apiserver: %v", err)
		}
	}
}

func agentKey(b *testing.B, ns, name string) string {
	b.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		b.Fatal(err)
	}
	return string(s.Data["api-key"])
}

// waitStatus polls /auth/verify every millisecond until it answers want, for
// at most 30 s, and returns when it did.
func waitStatus(b *testing.B, key string, want int) time.Time {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if harness.VerifyStatus(authURL, key) == want {
			return time.Now()
		}
		time.Sleep(time.Millisecond) //nolint:forbidigo // the measurement's polling interval
	}
	b.Fatalf("/auth/verify never answered %d", want)
	return time.Time{}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(float64(len(ds)-1)*p)]
}

// BenchmarkRevocationLatency measures, over 200 trials, the time from the
// API server accepting a rotate annotation (100 trials) or a delete (100
// trials) to the old key's first 401 from /auth/verify, polled every 1 ms.
func BenchmarkRevocationLatency(b *testing.B) {
	stop := startOperator(b, 4)
	var namespaces []string
	defer func() {
		stop()
		for _, ns := range namespaces {
			purge(b, ns)
		}
	}()
	for b.Loop() {
		ns := newNamespace(b, "revoke")
		namespaces = append(namespaces, ns)
		var rotate, remove []time.Duration
		c := credential(ns, 0)
		if err := k8s.Create(ctx, c); err != nil {
			b.Fatal(err)
		}
		waitReadyKey := func(name string) string {
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				s := &corev1.Secret{}
				if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err == nil {
					if key := string(s.Data["api-key"]); key != "" && harness.VerifyStatus(authURL, key) == 200 {
						return key
					}
				}
				time.Sleep(5 * time.Millisecond) //nolint:forbidigo // setup polling
			}
			b.Fatal("credential never verified")
			return ""
		}
		for trial := range 100 {
			key := waitReadyKey(c.Name)
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"%d"}}}`, authv1alpha1.RotateAnnotation, trial)
			if err := k8s.Patch(ctx, c, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
				b.Fatal(err)
			}
			accepted := time.Now()
			rotate = append(rotate, waitStatus(b, key, 401).Sub(accepted))
			// Let the new key land before the next trial.
			for agentKey(b, ns, c.Name) == key {
				time.Sleep(5 * time.Millisecond) //nolint:forbidigo // setup polling
			}
		}
		for trial := range 100 {
			d := credential(ns, trial+1)
			if err := k8s.Create(ctx, d); err != nil {
				b.Fatal(err)
			}
			key := waitReadyKey(d.Name)
			if err := k8s.Delete(ctx, d); err != nil {
				b.Fatal(err)
			}
			accepted := time.Now()
			remove = append(remove, waitStatus(b, key, 401).Sub(accepted))
		}
		b.ReportMetric(float64(percentile(rotate, 0.5).Microseconds())/1000, "rotate-p50-ms")
		b.ReportMetric(float64(percentile(rotate, 0.99).Microseconds())/1000, "rotate-p99-ms")
		b.ReportMetric(float64(percentile(remove, 0.5).Microseconds())/1000, "delete-p50-ms")
		b.ReportMetric(float64(percentile(remove, 0.99).Microseconds())/1000, "delete-p99-ms")
	}
}

// BenchmarkUnrelatedSecretsCostNothing creates N Secrets agentcred does not
// own, first with no operator running and then with it running, and reports
// the process heap growth of both and how many Secrets the manager's cache
// holds: the Secret cache is restricted by label, so it should hold none of
// them and the two growths should match.
func BenchmarkUnrelatedSecretsCostNothing(b *testing.B) {
	n := scaleN()
	create := func(ns string) {
		if err := parallel(n, func(i int) error {
			return k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("s-%d", i)},
				Data: map[string][]byte{"blob": make([]byte, 1024)}})
		}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		before := heap()
		without := newNamespace(b, "unrelated-without")
		create(without)
		grewWithout := int64(heap()) - int64(before)

		stop, cached := startOperatorWithCache(b, 4)
		ns := newNamespace(b, "unrelated-with")
		time.Sleep(2 * time.Second) //nolint:forbidigo // let the manager's informers settle before measuring
		before = heap()
		create(ns)
		time.Sleep(2 * time.Second) //nolint:forbidigo // give a (wrongly) unrestricted informer time to fill
		with := int64(heap()) - int64(before)
		list := &corev1.SecretList{}
		if err := cached.List(ctx, list, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		stop()
		purge(b, without)
		purge(b, ns)
		b.ReportMetric(float64(grewWithout)/1024/1024, "heap-growth-without-operator-MiB")
		b.ReportMetric(float64(with)/1024/1024, "heap-growth-with-operator-MiB")
		b.ReportMetric(float64(len(list.Items)), "unrelated-secrets-in-cache")
		if len(list.Items) != 0 {
			b.Fatalf("the manager cached %d Secrets it does not own", len(list.Items))
		}
	}
}

// BenchmarkLabelledTenantSecretsCostNothing: a tenant puts agentcred's
// label on N Secrets of ~1 MiB each (AGENTCRED_SCALE_LABELLED_SIZE bytes).
// The manager caches them — they match its label selector — but as
// metadata only, so its heap grows by their names, not their contents:
// under 10 MiB for 1,000 (it grew by ~1.2 MiB per Secret before).
func BenchmarkLabelledTenantSecretsCostNothing(b *testing.B) {
	n := scaleN()
	size := 1000 * 1000
	if v, err := strconv.Atoi(os.Getenv("AGENTCRED_SCALE_LABELLED_SIZE")); err == nil && v > 0 {
		size = v
	}
	blob := make([]byte, size)
	for b.Loop() {
		stop, cached := startOperatorWithCache(b, 4)
		ns := newNamespace(b, "labelled")
		time.Sleep(2 * time.Second) //nolint:forbidigo // let the manager's informers settle before measuring
		before := heap()
		if err := parallel(n, func(i int) error {
			return k8s.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("hostile-%d", i),
					Labels: map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue}},
				Data: map[string][]byte{"blob": blob},
			})
		}); err != nil {
			b.Fatal(err)
		}
		waitCount(b, func() int {
			secrets := &corev1.SecretList{}
			if err := cached.List(ctx, secrets, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
				return 0
			}
			return len(secrets.Items)
		}, n)
		grew := int64(heap()) - int64(before)
		stop()
		purge(b, ns)
		b.ReportMetric(float64(grew)/1024/1024, "heap-growth-MiB")
		b.ReportMetric(float64(n)*float64(size)/1024/1024, "labelled-data-MiB")
		if n >= 1000 && grew >= 10<<20 {
			b.Fatalf("%d labelled tenant Secrets grew the manager's heap by %.1f MiB (target < 10 MiB)", n, float64(grew)/1024/1024)
		}
	}
}

// rssMiB reads this process's resident set size from /proc (0 elsewhere).
func rssMiB() float64 {
	v, _ := procStatusMiB("/proc/self/status", "VmRSS:")
	return v
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkRotationStorm makes N credentials fall due at once — the
// operator restarts after the clock moved past their rotation date, so its
// first list finds all of them due — while M new credentials are created, and
// reports how long the rotations take and how long the new credentials wait.
func BenchmarkRotationStorm(b *testing.B) {
	n, m := scaleN(), 100
	for b.Loop() {
		clk := clocktesting.NewFakeClock(time.Now())
		stop, cached := startOperatorWithClock(b, 4, clk)
		ns := newNamespace(b, "storm")
		if err := parallel(n, func(i int) error { return k8s.Create(ctx, credential(ns, i)) }); err != nil {
			b.Fatal(err)
		}
		waitCount(b, func() int { return countReady(cached, ns) }, n)
		stop()

		clk.Step(91 * 24 * time.Hour)
		start := time.Now()
		stop, cached = startOperatorWithClock(b, 4, clk)
		// New credentials arrive while the storm is under way (not in the
		// operator's first list, where they would queue with the storm).
		waitCount(b, func() int { return countRotated(cached, ns) }, 1)
		fresh := newNamespace(b, "storm-new")
		created := make([]time.Time, m)
		ready := make([]time.Duration, m)
		for i := range m {
			created[i] = time.Now()
			if err := k8s.Create(ctx, credential(fresh, i)); err != nil {
				b.Fatal(err)
			}
		}
		seen := make([]bool, m)
		rotatedAt := time.Duration(0)
		deadline := time.Now().Add(30 * time.Minute)
		for time.Now().Before(deadline) {
			list := &authv1alpha1.AgentCredentialList{}
			if err := cached.List(ctx, list, client.InNamespace(fresh)); err == nil {
				for _, c := range list.Items {
					var i int
					if _, err := fmt.Sscanf(c.Name, "agent-%d", &i); err == nil && !seen[i] &&
						meta.IsStatusConditionTrue(c.Status.Conditions, authv1alpha1.ReadyCondition) {
						seen[i], ready[i] = true, time.Since(created[i])
					}
				}
			}
			if rotatedAt == 0 && countRotated(cached, ns) == n {
				rotatedAt = time.Since(start)
			}
			allNew := true
			for _, s := range seen {
				allNew = allNew && s
			}
			if allNew && rotatedAt != 0 {
				break
			}
			time.Sleep(100 * time.Millisecond) //nolint:forbidigo // polling a benchmark's progress
		}
		stop()
		purge(b, ns)
		purge(b, fresh)
		if rotatedAt == 0 {
			b.Fatal("the rotations did not finish")
		}
		b.ReportMetric(rotatedAt.Seconds(), "all-rotated-s")
		b.ReportMetric(percentile(ready, 0.5).Seconds(), "new-ready-p50-s")
		b.ReportMetric(percentile(ready, 0.99).Seconds(), "new-ready-p99-s")
	}
}

func waitCount(b *testing.B, count func() int, want int) {
	b.Helper()
	waitCountEvery(b, 100*time.Millisecond, count, want)
}

// waitCountEvery polls count every interval until it reaches want, for at most 30 minutes.
func waitCountEvery(b *testing.B, interval time.Duration, count func() int, want int) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Minute)
	for count() < want {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d after 30 minutes", count(), want)
		}
		time.Sleep(interval) //nolint:forbidigo // polling a benchmark's progress
	}
}
