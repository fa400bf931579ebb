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
}

// Start starts kube-apiserver and etcd and installs the CRDs from config/crd/bases.
// Callers must Stop it; Stop kills both processes and removes their temp dirs.
func Start(opts ...func(*envtest.Environment)) (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
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
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	return &Env{Environment: env, Config: cfg}, nil
}

// GroupVersionResource of AgentCredentials, for dynamic clients.
var GroupVersionResource = schema.GroupVersionResource{
	Group: authv1alpha1.GroupVersion.Group, Version: authv1alpha1.GroupVersion.Version, Resource: "agentcredentials",
}
