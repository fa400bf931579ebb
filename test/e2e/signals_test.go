package e2e

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// listening reports whether something accepts connections at addr.
func listening(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// TestMakeRunStopsOnTermAndHangup: SIGTERM and SIGHUP (closing the
// terminal) stop make run like Ctrl-C: kube-apiserver and etcd stop and
// the kubeconfig directory is removed.
func TestMakeRunStopsOnTermAndHangup(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: it runs make run's binary on a real control plane")
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			g := NewWithT(t)
			r := startMakeRun(t)
			apiServer := apiServerAddress(t, r.kubeconfig)
			g.Expect(listening(apiServer)).To(BeTrue())
			g.Expect(syscall.Kill(-r.cmd.Process.Pid, sig)).To(Succeed())
			select {
			case <-r.outputClosed:
			case <-time.After(timeout):
				t.Fatalf("make run did not stop within %s of %s\n%s", timeout, sig, r.output)
			}
			g.Expect(r.output.String()).To(ContainSubstring("stopped kube-apiserver and etcd"), "agentcred-local must shut down in order on %s", sig)
			_, err := os.Stat(filepath.Dir(r.kubeconfig))
			g.Expect(os.IsNotExist(err)).To(BeTrue(), "the kubeconfig directory must be removed")
			g.Eventually(func() bool { return listening(apiServer) }).WithTimeout(timeout).Should(BeFalse(), "kube-apiserver outlived make run")
		})
	}
}

// TestMakeRunKilledLeavesNoControlPlane: when make run is killed outright
// (nothing can clean up), kube-apiserver and etcd die with it (parent-death
// signal), and the next make run recognises the stale KUBECONFIG instead of
// using it.
func TestMakeRunKilledLeavesNoControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: it runs make run's binary on a real control plane")
	}
	g := NewWithT(t)
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "k8s_test_framework_*"))
	r := startMakeRun(t)
	kubeconfig := r.kubeconfig
	apiServer := apiServerAddress(t, kubeconfig)
	g.Expect(syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)).To(Succeed())
	<-r.outputClosed
	// What a SIGKILL leaves behind is the test's to remove.
	t.Cleanup(func() {
		_ = os.RemoveAll(filepath.Dir(kubeconfig))
		after, _ := filepath.Glob(filepath.Join(os.TempDir(), "k8s_test_framework_*"))
		for _, d := range after {
			if !contains(before, d) {
				_ = os.RemoveAll(d)
			}
		}
	})
	g.Eventually(func() bool { return listening(apiServer) }).WithTimeout(timeout).Should(BeFalse(), "kube-apiserver outlived a killed make run")

	// The old KUBECONFIG is still exported: the next run says so and starts its own.
	next := startMakeRunWith(t, kubeconfig)
	g.Expect(next.output.String()).To(ContainSubstring("belongs to an earlier make run"))
	g.Expect(next.kubeconfig).NotTo(Equal(kubeconfig))
	next.stop(t)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
