// Package controlplane starts a real kube-apiserver and etcd (envtest) with
// agentcred's CRDs installed, for integration tests and `make run`. The binaries come from
// KUBEBUILDER_ASSETS or, when that is unset, from hack/controlplane.sh, which
// builds them from the Go module proxy on first use.
package controlplane

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/operator"
)

// RepoRoot is the root of the agentcred repository.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// AssetsDir returns the directory holding kube-apiserver and etcd.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "controlplane.sh"))
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the control plane with hack/controlplane.sh: %w", err)
	}
	return strings.TrimSpace(out.String()), nil
}

// Scheme returns the operator's scheme: the built-in types and agentcred's API.
func Scheme() *k8sruntime.Scheme { return operator.Scheme() }

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	// launchers is the directory of DieWithParent's launchers.
	launchers string
}

// Stop stops kube-apiserver and etcd and removes their launchers.
func (e *Env) Stop() error {
	err := e.Environment.Stop()
	if e.launchers != "" {
		if rmErr := os.RemoveAll(e.launchers); err == nil {
			err = rmErr
		}
	}
	return err
}

// DieWithParent writes, into dir, launchers of kube-apiserver and etcd that
// exec the binaries in assets under `setpriv --pdeathsig KILL`, so that the
// kernel kills them if the process that started them dies, even by SIGKILL,
// and points envtest at them (TEST_ASSET_KUBE_APISERVER, TEST_ASSET_ETCD,
// which envtest prefers to KUBEBUILDER_ASSETS). Without setpriv
// (util-linux) it changes nothing and returns assets.
func DieWithParent(assets, dir string) (string, error) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return assets, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for name, env := range map[string]string{"kube-apiserver": "TEST_ASSET_KUBE_APISERVER", "etcd": "TEST_ASSET_ETCD"} {
		script := fmt.Sprintf("#!/bin/sh\nexec %q --pdeathsig KILL -- %q \"$@\"\n", setpriv, filepath.Join(assets, name))
		launcher := filepath.Join(dir, name)
		if err := os.WriteFile(launcher, []byte(script), 0o700); err != nil { //nolint:gosec // an executable launcher in a private temp dir
			return "", err
		}
		if err := os.Setenv(env, launcher); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// Start starts kube-apiserver and etcd and installs the CRDs from config/crd/bases.
// Callers must Stop it; Stop kills both processes and removes their temp dirs.
func Start(opts ...func(*envtest.Environment)) (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	// A test binary killed (a timeout, Ctrl-C) takes its control plane with it.
	launchers, err := os.MkdirTemp("", "agentcred-launchers-")
	if err != nil {
		return nil, err
	}
	if _, err := DieWithParent(assets, launchers); err != nil {
		_ = os.RemoveAll(launchers)
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
		Scheme:                Scheme(),
	}
	for _, o := range opts {
		o(env)
	}
	e := &Env{Environment: env, launchers: launchers}
	cfg, err := env.Start()
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	e.Config = cfg
	return e, nil
}

// GroupVersionResource of AgentCredentials, for dynamic clients.
var GroupVersionResource = schema.GroupVersionResource{
	Group: authv1alpha1.GroupVersion.Group, Version: authv1alpha1.GroupVersion.Version, Resource: "agentcredentials",
}
