package scale

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

// managerProcess is the manager binary running in its own process, so that
// its memory is its own and not the benchmark client's.
type managerProcess struct {
	cmd      *exec.Cmd
	exited   chan struct{}
	log      harness.SyncBuffer
	pprofURL string
	readyURL string
}

// startManagerProcess builds cmd/manager and runs it against the control
// plane (controller and auth endpoint, no webhook), on loopback only.
func startManagerProcess(b *testing.B) *managerProcess {
	b.Helper()
	dir, err := os.MkdirTemp("", "agentcred-scale-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	binary := filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", binary, "./cmd/manager")
	build.Dir = controlplane.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the manager: %v\n%s", err, out)
	}
	user, err := env.AddUser(envtest.User{Name: "scale-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := user.KubeConfig()
	if err != nil {
		b.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	pprof, probes := harness.FreeLoopbackAddr(b), harness.FreeLoopbackAddr(b)
	p := &managerProcess{exited: make(chan struct{}), pprofURL: "http://" + pprof + "/debug/pprof/heap", readyURL: "http://" + probes + "/readyz"}
	p.cmd = exec.Command(binary, "--enable-webhook=false", "--pprof-bind-address="+pprof, "--metrics-bind-address=0",
		"--max-claims-per-namespace=0", "--max-credentials-per-namespace=0", // one namespace holds every benchmark credential
		"--health-probe-bind-address="+probes, "--auth-bind-address="+harness.FreeLoopbackAddr(b),
		"--operator-namespace="+operatorNamespace, "--zap-log-level=error")
	p.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	b.Cleanup(p.stop)
	waitCount(b, func() int {
		if p.gone() {
			b.Fatalf("the manager exited:\n%s", p.log.String())
		}
		if resp, err := http.Get(p.readyURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return 1
			}
		}
		return 0
	}, 1)
	return p
}

func (p *managerProcess) gone() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// stop asks the manager to stop (SIGTERM) and kills it after 30 s.
func (p *managerProcess) stop() {
	if p.gone() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

// rssMiB is the manager's resident set size, from /proc.
func (p *managerProcess) rssMiB(b *testing.B) float64 {
	b.Helper()
	v, err := procStatusMiB(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid), "VmRSS:")
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// liveHeapMiB is the manager's heap in use right after a garbage collection:
// the text heap profile with gc=1 collects first and ends with MemStats.
func (p *managerProcess) liveHeapMiB(b *testing.B) float64 {
	b.Helper()
	resp, err := http.Get(p.pprofURL + "?gc=1&debug=1")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f / 1024 / 1024
		}
	}
	b.Fatal("the manager's heap profile has no HeapAlloc")
	return 0
}

// saveHeapProfile writes the manager's heap profile (after a GC) to path.
func (p *managerProcess) saveHeapProfile(b *testing.B, path string) {
	b.Helper()
	resp, err := http.Get(p.pprofURL + "?gc=1")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.Fatal(err)
	}
}

// procStatusMiB reads a "kB" field of a /proc/<pid>/status file in MiB.
func procStatusMiB(path, field string) (float64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024, err
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, field)
}

// BenchmarkManagerProcessMemory runs the manager binary in its own process
// and reports its RSS and its live heap (after a forced GC, through
// --pprof-bind-address) idle, with N credentials issued and indexed,
// and after N unrelated 1 KiB Secrets were created next to them (the Secret
// cache is restricted by label, so those should not move it).
func BenchmarkManagerProcessMemory(b *testing.B) {
	n := scaleN()
	for b.Loop() {
		p := startManagerProcess(b)
		settle := func() { time.Sleep(5 * time.Second) } //nolint:forbidigo // let the informers and GC settle before reading memory
		settle()
		idleRSS, idleHeap := p.rssMiB(b), p.liveHeapMiB(b)

		ns := newNamespace(b, "memory")
		if err := parallel(n, func(i int) error { return k8s.Create(ctx, credential(ns, i)) }); err != nil {
			b.Fatal(err)
		}
		// Progress is read from the API server (this process has no cache),
		// so every 2 s rather than every 100 ms.
		waitCountEvery(b, 2*time.Second, func() int { return countReady(k8s, ns) }, n)
		settle()
		credRSS, credHeap := p.rssMiB(b), p.liveHeapMiB(b)
		if path := os.Getenv("AGENTCRED_SCALE_HEAPPROFILE"); path != "" {
			p.saveHeapProfile(b, path) // for go tool pprof -sample_index=inuse_space -top
		}

		unrelated := newNamespace(b, "memory-unrelated")
		if err := parallel(n, func(i int) error {
			return k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: unrelated, Name: fmt.Sprintf("s-%d", i)},
				Data: map[string][]byte{"blob": make([]byte, 1024)}})
		}); err != nil {
			b.Fatal(err)
		}
		settle()
		unrelatedRSS, unrelatedHeap := p.rssMiB(b), p.liveHeapMiB(b)
		p.stop()
		purge(b, ns)
		purge(b, unrelated)

		b.ReportMetric(idleRSS, "idle-rss-MiB")
		b.ReportMetric(idleHeap, "idle-heap-MiB")
		b.ReportMetric(credRSS, "rss-with-credentials-MiB")
		b.ReportMetric(credHeap, "heap-with-credentials-MiB")
		b.ReportMetric((credRSS-idleRSS)*1024*1024/float64(n), "rss-B/credential")
		b.ReportMetric((credHeap-idleHeap)*1024*1024/float64(n), "heap-B/credential")
		b.ReportMetric(unrelatedRSS, "rss-after-unrelated-secrets-MiB")
		b.ReportMetric(unrelatedHeap, "heap-after-unrelated-secrets-MiB")
	}
}
