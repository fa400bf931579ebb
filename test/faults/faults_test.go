// Package faults runs the real manager binary — two replicas with leader
// election against one real kube-apiserver — and breaks things: it SIGKILLs
// the leader in the middle of rotating many credentials, restarts it, and
// checks that leadership moves within the lease time, that only the leader
// reconciles, and that every credential converges to a key that verifies,
// with no stale key still verifying and no rotation counted twice.
package faults

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

const operatorNamespace = harness.OperatorNamespace

var (
	env        *controlplane.Env
	k8s        client.Client
	kubeconfig string
	binary     string
	ctx        = context.Background()
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "agentcred-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	return harness.Run(harness.RunInput{M: m, Setup: func(_ context.Context, e *harness.Env) (func() error, error) {
		env, k8s = e.Env, e.Client
		binary = filepath.Join(dir, "manager")
		build := exec.Command("go", "build", "-o", binary, "./cmd/manager")
		build.Dir = controlplane.RepoRoot()
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building the manager: %w\n%s", err, out)
		}
		// The replicas are separate processes: they get a kubeconfig.
		user, err := env.AddUser(envtest.User{Name: "faults-admin", Groups: []string{"system:masters"}}, nil)
		if err != nil {
			return nil, err
		}
		raw, err := user.KubeConfig()
		if err != nil {
			return nil, err
		}
		kubeconfig = filepath.Join(dir, "kubeconfig")
		return nil, os.WriteFile(kubeconfig, raw, 0o600)
	}})
}

// replica is one manager process.
type replica struct {
	name    string
	cmd     *exec.Cmd
	authURL string
	mu      sync.Mutex
	log     bytes.Buffer
	exited  chan struct{}
}

func (r *replica) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.Write(p)
}

func (r *replica) logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// startReplica starts the manager binary with leader election; it is
// SIGKILLed (if still running) when the test ends.
func startReplica(t *testing.T, name string) *replica {
	t.Helper()
	return startReplicaWith(t, name, kubeconfig, "--leader-elect")
}

func startReplicaWith(t *testing.T, name, kubeconfigPath string, extra ...string) *replica {
	t.Helper()
	auth := harness.FreeLoopbackAddr(t)
	r := &replica{name: name, authURL: "http://" + auth, exited: make(chan struct{})}
	args := append([]string{"--enable-webhook=false",
		"--metrics-bind-address=0", "--health-probe-bind-address=" + harness.FreeLoopbackAddr(t), "--auth-bind-address=" + auth,
		"--operator-namespace=" + operatorNamespace, "--zap-log-level=info"}, extra...)
	r.cmd = exec.Command(binary, args...)
	r.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath)
	r.cmd.Stdout, r.cmd.Stderr = r, r
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *replica) kill() {
	select {
	case <-r.exited:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
}

func (r *replica) isLeader() bool {
	return strings.Contains(strings.ToLower(r.logs()), "successfully acquired lease")
}

func (r *replica) issued() int { return strings.Count(r.logs(), `"Issued key"`) }

// httpClient gives up quickly, so a hung endpoint fails a check instead of the test.
var httpClient = &http.Client{Timeout: 5 * time.Second}

func verify(url, key string) int {
	req, _ := http.NewRequest(http.MethodGet, url+"/auth/verify", nil)
	req.Header.Set("X-API-Key", key)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func agentKey(g Gomega, cred *authv1alpha1.AgentCredential) string {
	s := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: cred.Namespace, Name: cred.Name}, s)).To(Succeed())
	return string(s.Data["api-key"])
}

// runs makes agent IDs unique across repeated runs (-count) on one API server.
var runs atomic.Int64

func TestLeaderKilledMidRotationConverges(t *testing.T) {
	g := NewWithT(t)
	a, b := startReplica(t, "a"), startReplica(t, "b")
	g.Eventually(func() bool { return a.isLeader() || b.isLeader() }).WithTimeout(60*time.Second).WithPolling(100*time.Millisecond).
		Should(BeTrue(), func() string { return "no replica became leader\n--- a ---\n" + a.logs() + "\n--- b ---\n" + b.logs() })
	leader, follower := a, b
	if b.isLeader() {
		leader, follower = b, a
	}

	const n = 40
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "faults-"}}
	g.Expect(k8s.Create(ctx, ns)).To(Succeed())
	creds := make([]*authv1alpha1.AgentCredential, n)
	for i := range creds {
		creds[i] = &authv1alpha1.AgentCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: fmt.Sprintf("agent-%d", i)},
			Spec:       authv1alpha1.AgentCredentialSpec{AgentID: fmt.Sprintf("eeeeeeee-0000-4000-8000-%012d", runs.Add(1))},
		}
		g.Expect(k8s.Create(ctx, creds[i])).To(Succeed())
	}
	waitConverged(t, creds, 1)
	g.Expect(follower.issued()).To(BeZero(), "only the leader may reconcile")
	g.Expect(leader.issued()).To(Equal(n))

	// Rotate every credential on request, and SIGKILL the leader somewhere in
	// the middle of it.
	oldKeys := map[string]string{}
	for _, c := range creds {
		oldKeys[c.Name] = agentKey(g, c)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"fault-1"}}}`, authv1alpha1.RotateAnnotation)
		g.Expect(k8s.Patch(ctx, c, client.RawPatch("application/merge-patch+json", []byte(patch)))).To(Succeed())
	}
	// Kill it once it has rotated at least one credential, and check that
	// it had not rotated them all: the kill really is mid-rotation.
	g.Eventually(leader.issued).WithTimeout(30*time.Second).WithPolling(2*time.Millisecond).Should(BeNumerically(">", n),
		func() string { return "the leader rotated nothing\n" + leader.logs() })
	killed := time.Now()
	leader.kill()
	rotatedBeforeKill := leader.issued() - n
	t.Logf("the leader was killed after %d of %d rotations", rotatedBeforeKill, n)
	g.Expect(rotatedBeforeKill).To(BeNumerically("<", n), "the leader finished every rotation before the kill: not a mid-rotation kill")

	// The follower takes over within the lease (15 s by default) plus a retry period.
	g.Eventually(follower.isLeader).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(BeTrue(),
		func() string { return "the follower did not take over\n" + follower.logs() })
	takeover := time.Since(killed)
	t.Logf("leadership moved %s after the SIGKILL", takeover.Round(time.Millisecond))

	// A restarted replica joins as a follower.
	restarted := startReplica(t, "a-restarted")
	waitConverged(t, creds, 2)
	for _, c := range creds {
		// 429 once this client has spent its failure budget: still a refusal.
		g.Expect(verify(follower.authURL, oldKeys[c.Name])).To(BeElementOf(401, 429), "%s: the key from before the requested rotation still verifies", c.Name)
		g.Eventually(func(g Gomega) int { return verify(follower.authURL, agentKey(g, c)) }).WithTimeout(10*time.Second).Should(Equal(200), "%s: the current key does not verify", c.Name)
	}
	g.Expect(restarted.issued()).To(BeZero(), "the restarted replica is a follower and must not reconcile")
}

// waitConverged waits until every credential is Ready with rotationCount
// rotations... counted from the first issue (wantIssues = 1 + rotations), its
// agent Secret's key is the hash Secret's current key with nothing pending,
// the status names that key, and the auth endpoint of some replica accepts it.
func waitConverged(t *testing.T, creds []*authv1alpha1.AgentCredential, wantIssues int) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		for _, c := range creds {
			got := &authv1alpha1.AgentCredential{}
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(c), got)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(got.Status.Conditions, authv1alpha1.ReadyCondition)).To(BeTrue(), c.Name)
			g.Expect(got.Status.RotationCount).To(BeEquivalentTo(wantIssues-1), "%s rotated a wrong number of times", c.Name)
			key := agentKey(g, c)
			g.Expect(got.Status.KeyID).To(Equal(credential.KeyID(key)), c.Name)
			h := &corev1.Secret{}
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: hashsecret.Name(c.Namespace, c.Name)}, h)).To(Succeed())
			rec, err := hashsecret.Parse(h.Data)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(rec.Pending).To(BeNil(), "%s: a staged key was left behind", c.Name)
			g.Expect(rec.Current.Digest.Equal(credential.DigestOf(key))).To(BeTrue(), c.Name)
		}
	}).WithTimeout(90 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
}
