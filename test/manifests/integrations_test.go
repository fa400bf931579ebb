package manifests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/agrenting/agentcred/test/controlplane"
)

// The projects whose CRDs the integration manifests are checked against,
// at pinned versions, as their Go modules ship them.
var integrationCRDs = []struct{ module, file string }{
	{"istio.io/api@v1.32.0", "kubernetes/customresourcedefinitions.gen.yaml"},
	{"github.com/envoyproxy/gateway@v1.9.1", "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_securitypolicies.yaml"},
	// The Gateway API CRDs Envoy Gateway v1.9.1 ships (BackendTLSPolicy).
	{"github.com/envoyproxy/gateway@v1.9.1", "charts/gateway-helm/charts/crds/crds/gatewayapi-crds.yaml"},
}

// moduleFile downloads module (module@version) from the Go module proxy,
// or finds it in the module cache, and returns the path of file in it.
func moduleFile(t *testing.T, module, file string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = t.TempDir() // outside this module: no go.mod to consult
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", module, err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download %s: %s %v", module, info.Error, err)
	}
	return filepath.Join(info.Dir, file)
}

// TestIntegrationManifestsPassTheirProjectsCRDs: the Istio and Envoy
// Gateway manifests in config/integrations, server-side dry-run applied
// against those projects' real CRDs.
func TestIntegrationManifestsPassTheirProjectsCRDs(t *testing.T) {
	g := NewWithT(t)
	var paths []string
	for _, c := range integrationCRDs {
		paths = append(paths, moduleFile(t, c.module, c.file))
	}
	_, err := envtest.InstallCRDs(apiConfig, envtest.CRDInstallOptions{Paths: paths, ErrorIfPathMissing: true})
	g.Expect(err).NotTo(HaveOccurred())
	for _, ns := range []string{"billing", "istio-system", operatorNamespace} {
		ensureNamespace(t, ns)
	}
	files, err := filepath.Glob(filepath.Join(controlplane.RepoRoot(), "config", "integrations", "*", "*.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(len(files)).To(BeNumerically(">=", 6))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		g.Expect(err).NotTo(HaveOccurred())
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			u := &unstructured.Unstructured{}
			g.Expect(yaml.Unmarshal([]byte(doc), &u.Object)).To(Succeed(), f)
			if len(u.Object) == 0 {
				continue
			}
			err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.DryRunAll, client.FieldOwner("integrations-test"))
			g.Expect(err).NotTo(HaveOccurred(), "%s: %s %s", filepath.Base(f), u.GetKind(), u.GetName())
		}
	}
	// The schema is really checked: a misspelt field is refused.
	bad := &unstructured.Unstructured{}
	g.Expect(yaml.Unmarshal([]byte(`apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: bad, namespace: billing}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: billing}]
  extAuth: {grpc: {backendRefs: [{name: agentcred-auth, port: "nine"}]}}
`), &bad.Object)).To(Succeed())
	g.Expect(k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(bad), client.DryRunAll, client.FieldOwner("integrations-test"))).NotTo(Succeed())
}
