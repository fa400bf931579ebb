package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agrenting/agentcred/test/controlplane"
)

// Process is a program a test started: its own process group, killed with
// the test binary if that dies first (Pdeathsig), and stopped by PID.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit error, once done is closed
}

// StartProcess starts path with args, its output going to out.
func StartProcess(name, path string, args []string, out io.Writer) (*Process, error) {
	cmd := exec.Command(path, args...) //nolint:gosec // the tests' own binaries, built by hack/controlplane.sh
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Stop sends SIGTERM to the process group, then SIGKILL after 10 s, and
// waits for the process to exit.
func (p *Process) Stop() error {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	return nil
}

// Exited reports whether the process has exited, with its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// RolloutCluster adds what envtest lacks for workloads that really roll
// out: kube-controller-manager (the Deployment, ReplicaSet, StatefulSet and
// DaemonSet controllers and the garbage collector) and kwok, which plays
// the kubelet of the fake node KwokNode (pods become Running and Ready
// without containers). Both binaries come from hack/controlplane.sh.
type RolloutCluster struct {
	dir   string
	procs []*Process
}

// KwokNode is the fake node kwok manages; pods name it in spec.nodeName
// (there is no scheduler).
const KwokNode = "kwok-node-0"

// StartRolloutCluster starts kube-controller-manager and kwok against env,
// their logs going to out. Stop stops both and removes their files.
func StartRolloutCluster(env *Env, out io.Writer) (_ *RolloutCluster, err error) {
	assets, err := controlplane.AssetsDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "agentcred-rollout-")
	if err != nil {
		return nil, err
	}
	rc := &RolloutCluster{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, rc.Stop())
		}
	}()
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "rollout-cluster", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	kcmPort, err := freePort()
	if err != nil {
		return nil, err
	}
	kcm, err := StartProcess("kube-controller-manager", filepath.Join(assets, "kube-controller-manager"), []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--controllers=deployment,replicaset,statefulset,daemonset,garbagecollector",
		"--leader-elect=false", "--use-service-account-credentials=false",
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", kcmPort), "--cert-dir=" + filepath.Join(dir, "kcm-certs"),
		"--concurrent-deployment-syncs=2", "--concurrent-replicaset-syncs=2",
	}, out)
	if err != nil {
		return nil, err
	}
	rc.procs = append(rc.procs, kcm)
	kwok, err := StartProcess("kwok", filepath.Join(assets, "kwok"), []string{
		"--kubeconfig=" + kc, "--config=" + filepath.Join(assets, "kwok-stages.yaml"),
		"--manage-single-node=" + KwokNode, "--cidr=10.0.0.0/24", "--node-ip=10.0.0.1",
		"--node-lease-duration-seconds=40",
	}, out)
	if err != nil {
		return nil, err
	}
	rc.procs = append(rc.procs, kwok)
	return rc, nil
}

// Check reports a process of the cluster that has exited.
func (rc *RolloutCluster) Check(context.Context) error {
	for _, p := range rc.procs {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited: %w", p.Name, errors.Join(err, errors.New("it should still run")))
		}
	}
	return nil
}

// Stop stops kwok and kube-controller-manager and removes their files.
func (rc *RolloutCluster) Stop() error {
	for i := len(rc.procs) - 1; i >= 0; i-- {
		_ = rc.procs[i].Stop()
	}
	rc.procs = nil
	return os.RemoveAll(rc.dir)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
