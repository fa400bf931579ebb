// Package helm proves the Helm chart in charts/agentcred with Helm's own Go
// packages: it lints; its default render is the kustomize install
// (config/default) object for object, and its cert-manager and Prometheus
// variants are the overlays, so the two cannot drift; bad values get clear
// errors; and `helm install`, `upgrade` and `uninstall` work against a real
// kube-apiserver without undoing what the running operator and the
// HorizontalPodAutoscaler changed.
package helm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	. "github.com/onsi/gomega"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

const (
	namespace   = harness.OperatorNamespace
	releaseName = "agentcred"
	timeout     = 30 * time.Second
)

var env *harness.Env

func TestMain(m *testing.M) {
	os.Exit(harness.Run(harness.RunInput{
		M:          m,
		ShortTests: "^TestChart",
		// Helm installs the CRDs from the chart's crds/.
		Configure: []func(*envtest.Environment){func(e *envtest.Environment) {
			e.CRDDirectoryPaths = nil
			e.ErrorIfCRDPathMissing = false
		}},
		Setup: func(_ context.Context, e *harness.Env) (func() error, error) {
			env = e
			return nil, nil
		},
	}))
}

func chartDir() string { return filepath.Join(controlplane.RepoRoot(), "charts", "agentcred") }

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir())
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return c
}

// template renders the chart like `helm template agentcred charts/agentcred
// -n agentcred-system --include-crds` with vals.
func template(t *testing.T, vals map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()
	install := action.NewInstall(&action.Configuration{})
	install.ClientOnly, install.DryRun, install.IncludeCRDs, install.Replace = true, true, true, true
	install.ReleaseName, install.Namespace = releaseName, namespace
	rel, err := install.Run(loadChart(t), vals)
	if err != nil {
		return nil, err
	}
	return decode(t, rel.Manifest), nil
}

func decode(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	docs := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("reading the rendered chart: %v", err)
		}
		// Through JSON, as kustomize's objects are, so numbers compare.
		raw, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("decoding the rendered chart: %v\n%s", err, doc)
		}
		if string(raw) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			t.Fatalf("decoding the rendered chart: %v\n%s", err, doc)
		}
		out = append(out, u)
	}
}

func key(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
}

// normalized is an object without what is allowed to differ: metadata labels
// (Helm's release labels, kustomize's managed-by), Helm's own resource
// policy annotation, and empty lists, which the API server treats as absent
// (a kustomize `$patch: delete` of the last volume leaves `volumes: []`).
func normalized(o *unstructured.Unstructured) map[string]any {
	c := o.DeepCopy()
	unstructured.RemoveNestedField(c.Object, "metadata", "labels")
	unstructured.RemoveNestedField(c.Object, "metadata", "annotations", "helm.sh/resource-policy")
	if a, found, _ := unstructured.NestedMap(c.Object, "metadata", "annotations"); found && len(a) == 0 {
		unstructured.RemoveNestedField(c.Object, "metadata", "annotations")
	}
	dropEmptyLists(c.Object)
	return c.Object
}

func dropEmptyLists(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case []any:
			if len(v) == 0 {
				delete(m, k)
			}
			for _, e := range v {
				if em, ok := e.(map[string]any); ok {
					dropEmptyLists(em)
				}
			}
		case map[string]any:
			dropEmptyLists(v)
		}
	}
}

func byKey(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := make(map[string]*unstructured.Unstructured, len(objs))
	for _, o := range objs {
		m[key(o)] = o
	}
	return m
}

func TestChartLints(t *testing.T) {
	for name, vals := range map[string]map[string]any{"defaults": nil, "every option": everyOption()} {
		t.Run(name, func(t *testing.T) {
			linter := lint.All(chartDir(), vals, namespace, false)
			for _, msg := range linter.Messages {
				if msg.Severity > support.InfoSev {
					t.Errorf("helm lint: %s", msg)
				}
			}
		})
	}
}

// everyOption sets every value the chart offers away from its default.
func everyOption() map[string]any {
	scheduling := func() map[string]any {
		return map[string]any{
			"nodeSelector":   map[string]any{"kubernetes.io/os": "linux"},
			"tolerations":    []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "auth", "effect": "NoSchedule"}},
			"affinity":       map[string]any{"podAntiAffinity": map[string]any{"preferredDuringSchedulingIgnoredDuringExecution": []any{map[string]any{"weight": 100, "podAffinityTerm": map[string]any{"topologyKey": "kubernetes.io/hostname", "labelSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "agentcred"}}}}}}},
			"podAnnotations": map[string]any{"example.com/team": "platform"},
		}
	}
	manager := scheduling()
	manager["replicas"] = 3
	manager["extraArgs"] = []any{"--max-grace=12h", "--identity-claims=preassigned"}
	manager["resources"] = map[string]any{"limits": map[string]any{"memory": "1Gi"}}
	manager["podDisruptionBudget"] = map[string]any{"maxUnavailable": 1}
	auth := scheduling()
	auth["autoscaling"] = map[string]any{"enabled": false}
	auth["replicas"] = 4
	auth["grpc"] = map[string]any{"enabled": false}
	// TLS from a certificate of one's own (cert-manager) instead of the
	// controller's.
	auth["tls"] = map[string]any{"enabled": false}
	auth["extraArgs"] = []any{"--auth-tls-cert-file=/certs/tls.crt", "--auth-tls-key-file=/certs/tls.key"}
	auth["extraVolumes"] = []any{map[string]any{"name": "certs", "secret": map[string]any{"secretName": "agentcred-auth-tls"}}}
	auth["extraVolumeMounts"] = []any{map[string]any{"name": "certs", "mountPath": "/certs", "readOnly": true}}
	return map[string]any{
		"image":              map[string]any{"repository": "registry.example.com/agentcred", "tag": "v0.1.0", "pullPolicy": "IfNotPresent"},
		"imagePullSecrets":   []any{map[string]any{"name": "registry"}},
		"namespace":          map[string]any{"create": true},
		"podSecurityContext": map[string]any{"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": map[string]any{"type": "RuntimeDefault"}},
		"controllerManager":  manager,
		"auth":               auth,
		"webhook":            map[string]any{"certificates": "cert-manager"},
		"metrics":            map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "prometheusRule": map[string]any{"enabled": true}},
	}
}

// TestChartRendersTheKustomizeInstall is the no-drift rule: with the values
// that select each variant, the chart renders exactly the objects kustomize
// builds — same kinds, names and namespaces, and the same content (RBAC
// rules, container args, probes, resources, webhooks, CRDs, alerts) but for
// metadata labels.
func TestChartRendersTheKustomizeInstall(t *testing.T) {
	for _, tc := range []struct {
		overlay string
		values  map[string]any
	}{
		{"default", map[string]any{"namespace": map[string]any{"create": true}}},
		{"overlays/cert-manager", map[string]any{"namespace": map[string]any{"create": true}, "webhook": map[string]any{"certificates": "cert-manager"}}},
		{"overlays/prometheus", map[string]any{"namespace": map[string]any{"create": true}, "metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "prometheusRule": map[string]any{"enabled": true}}}},
		{"overlays/plain-http", map[string]any{"namespace": map[string]any{"create": true}, "auth": map[string]any{"tls": map[string]any{"enabled": false}}}},
	} {
		t.Run(tc.overlay, func(t *testing.T) {
			rendered, err := template(t, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			want, got := byKey(harness.Kustomize(t, tc.overlay)), byKey(rendered)
			for _, k := range sortedKeys(want) {
				o, ok := got[k]
				if !ok {
					t.Errorf("the chart does not render %s", k)
					continue
				}
				if diff := cmp.Diff(normalized(want[k]), normalized(o)); diff != "" {
					t.Errorf("%s differs from config/%s (-kustomize +helm):\n%s", k, tc.overlay, diff)
				}
			}
			for _, k := range sortedKeys(got) {
				if _, ok := want[k]; !ok {
					t.Errorf("the chart renders %s, which config/%s does not have", k, tc.overlay)
				}
			}
		})
	}
}

// TestChartDefaultsLeaveTheNamespaceToHelm: by default the chart renders the
// kustomize install minus the release namespace, which
// `helm install --create-namespace` makes (a chart cannot create the
// namespace Helm stores its release in).
func TestChartDefaultsLeaveTheNamespaceToHelm(t *testing.T) {
	g := NewWithT(t)
	rendered, err := template(t, nil)
	g.Expect(err).NotTo(HaveOccurred())
	got := byKey(rendered)
	g.Expect(got).NotTo(HaveKey("Namespace /" + namespace))
	g.Expect(got).To(HaveKey("Namespace /agentcred-webhook-certs"))
	g.Expect(got).To(HaveLen(len(harness.Kustomize(t, "default")) - 1))
}

// TestChartAppliesEveryOption: each value reaches the objects it is for.
func TestChartAppliesEveryOption(t *testing.T) {
	g := NewWithT(t)
	rendered, err := template(t, everyOption())
	g.Expect(err).NotTo(HaveOccurred())
	objs := byKey(rendered)
	manager := objs["Deployment "+namespace+"/agentcred-controller-manager"]
	auth := objs["Deployment "+namespace+"/agentcred-auth"]
	g.Expect(manager).NotTo(BeNil())
	g.Expect(auth).NotTo(BeNil())

	g.Expect(nested(manager, "spec", "replicas")).To(BeEquivalentTo(3))
	g.Expect(nested(auth, "spec", "replicas")).To(BeEquivalentTo(4), "without autoscaling the chart sets the replicas")
	g.Expect(objs).NotTo(HaveKey("HorizontalPodAutoscaler " + namespace + "/agentcred-auth"))
	for _, d := range []*unstructured.Unstructured{manager, auth} {
		c := container(d)
		g.Expect(c["image"]).To(Equal("registry.example.com/agentcred:v0.1.0"))
		g.Expect(c["imagePullPolicy"]).To(Equal("IfNotPresent"))
		g.Expect(nested(d, "spec", "template", "spec", "imagePullSecrets")).To(ConsistOf(HaveKeyWithValue("name", "registry")))
		g.Expect(nested(d, "spec", "template", "spec", "nodeSelector")).To(HaveKeyWithValue("kubernetes.io/os", "linux"))
		g.Expect(nested(d, "spec", "template", "spec", "tolerations")).To(HaveLen(1))
		g.Expect(nested(d, "spec", "template", "spec", "affinity")).To(HaveKey("podAntiAffinity"))
		g.Expect(nested(d, "spec", "template", "metadata", "annotations")).To(HaveKeyWithValue("example.com/team", "platform"))
		g.Expect(nested(d, "spec", "template", "spec", "securityContext", "runAsUser")).To(BeEquivalentTo(65532))
	}
	// Extra flags come after the chart's own, so the last value wins.
	g.Expect(container(manager)["args"]).To(HaveExactElements(
		"--leader-elect", "--metrics-bind-address=:8080", "--metrics-secure", "--health-probe-bind-address=:8081",
		"--enable-auth-endpoint=false", "--webhook-cert-management=external", "--webhook-cert-namespace=agentcred-webhook-certs",
		"--max-grace=12h", "--identity-claims=preassigned"))
	g.Expect(nested(manager, "spec", "template", "spec", "containers")).To(ContainElement(HaveKeyWithValue("resources",
		HaveKeyWithValue("limits", HaveKeyWithValue("memory", "1Gi")))))
	g.Expect(container(auth)["args"]).NotTo(ContainElement(HavePrefix("--grpc-auth-bind-address")))
	g.Expect(container(auth)["args"]).To(ContainElement("--auth-tls-cert-file=/certs/tls.crt"))
	g.Expect(container(auth)["args"]).NotTo(ContainElement("--auth-tls-cert-file=/etc/agentcred/tls/tls.crt"))
	g.Expect(container(manager)["args"]).NotTo(ContainElement(HavePrefix("--auth-tls-secret-name")))
	g.Expect(container(auth)["volumeMounts"]).To(ConsistOf(HaveKeyWithValue("mountPath", "/certs")))
	g.Expect(nested(auth, "spec", "template", "spec", "volumes")).To(ConsistOf(HaveKeyWithValue("name", "certs")))
	g.Expect(nested(objs["Service "+namespace+"/agentcred-auth"], "spec", "ports")).To(ConsistOf(HaveKeyWithValue("name", "auth")))
	g.Expect(nested(objs["PodDisruptionBudget "+namespace+"/agentcred-controller-manager"], "spec")).To(
		Equal(map[string]any{"maxUnavailable": int64(1), "selector": map[string]any{"matchLabels": map[string]any{
			"app.kubernetes.io/component": "manager", "app.kubernetes.io/name": "agentcred"}}}))
	g.Expect(objs).To(HaveKey("Namespace /" + namespace))
	g.Expect(objs).To(HaveKey("Namespace /agentcred-webhook-certs"), "the auth endpoint's CA lives there, whoever issues the webhook's certificate")
	g.Expect(objs).To(HaveKey("Certificate " + namespace + "/agentcred-serving-cert"))
	g.Expect(objs).To(HaveKey("ServiceMonitor " + namespace + "/agentcred-metrics"))
	g.Expect(objs).To(HaveKey("PrometheusRule " + namespace + "/agentcred-alerts"))
}

// TestChartRefusesBadValues: a typo or a wrong type is an error naming the
// value, not a silently ignored setting.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"misspelled component", map[string]any{"controllerManger": map[string]any{"replicas": 3}}, "controllerManger"},
		{"misspelled field", map[string]any{"auth": map[string]any{"replica": 3}}, "replica"},
		{"replicas not a number", map[string]any{"controllerManager": map[string]any{"replicas": "two"}}, "/controllerManager/replicas"},
		{"zero replicas", map[string]any{"auth": map[string]any{"autoscaling": map[string]any{"minReplicas": 0}}}, "/auth/autoscaling/minReplicas"},
		{"flags not a list", map[string]any{"auth": map[string]any{"extraArgs": "--session-ttl=5m"}}, "/auth/extraArgs"},
		{"unknown certificates", map[string]any{"webhook": map[string]any{"certificates": "vault"}}, "/webhook/certificates"},
		{"bad namespace name", map[string]any{"webhook": map[string]any{"certNamespace": "Agent_Certs"}}, "/webhook/certNamespace"},
		{"unknown pull policy", map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}, "/image/pullPolicy"},
		{"CAs where the auth endpoint reads", map[string]any{"webhook": map[string]any{"certNamespace": namespace}}, "must not be the release namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := template(t, tc.values)
			if err == nil {
				t.Fatal("rendered")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("the error does not name %q: %v", tc.want, err)
			}
		})
	}
}

func nested(o *unstructured.Unstructured, fields ...string) any {
	v, _, _ := unstructured.NestedFieldNoCopy(o.Object, fields...)
	return v
}

func container(d *unstructured.Unstructured) map[string]any {
	cs, _ := nested(d, "spec", "template", "spec", "containers").([]any)
	return cs[0].(map[string]any)
}

func sortedKeys(m map[string]*unstructured.Unstructured) []string {
	return slices.Sorted(maps.Keys(m))
}

// helmConfig is what `helm --kubeconfig … -n agentcred-system` uses: an
// admin of the test API server.
func helmConfig(t *testing.T) *action.Configuration {
	t.Helper()
	user, err := env.AddUser(envtest.User{Name: "helm-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	flags := genericclioptions.NewConfigFlags(false)
	ns := namespace
	flags.KubeConfig, flags.Namespace = &path, &ns
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, namespace, "secret", t.Logf); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func get(t *testing.T, apiVersion, kind, ns, name string) (*unstructured.Unstructured, error) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	return u, env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)
}

// TestHelmInstallUpgradeUninstall runs the chart's life through Helm against
// a real kube-apiserver: install creates the CRDs and every object and the
// webhook fails closed; an upgrade changes what its values say and keeps
// what others own — the CA the manager injected into the webhook
// configuration and the replica count the HorizontalPodAutoscaler chose;
// uninstall removes the operator but keeps the CRDs, and with them every
// AgentCredential and agent Secret, and the namespace of the CAs.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	cfg := helmConfig(t)

	install := action.NewInstall(cfg)
	install.ReleaseName, install.Namespace = releaseName, namespace
	_, err := install.Run(loadChart(t), nil)
	g.Expect(err).NotTo(HaveOccurred())

	for _, crd := range []string{"agentcredentials.auth.agrenting.io", "identityclaims.auth.agrenting.io"} {
		_, err := get(t, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", crd)
		g.Expect(err).NotTo(HaveOccurred(), "helm install must create the CRDs from crds/")
	}
	rendered, err := template(t, nil)
	g.Expect(err).NotTo(HaveOccurred())
	for _, o := range rendered {
		_, err := get(t, o.GetAPIVersion(), o.GetKind(), o.GetNamespace(), o.GetName())
		g.Expect(err).NotTo(HaveOccurred(), key(o))
	}
	// Nothing serves the webhook here: with failurePolicy Fail, no
	// AgentCredential gets past an operator that is not running.
	cred := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "auth.agrenting.io/v1alpha1", "kind": "AgentCredential",
		"metadata": map[string]any{"name": "billing-agent", "namespace": "default"},
		"spec":     map[string]any{"type": "APIKey", "agentID": "6f1c2b1e-1f0a-4c1e-9c3a-2a4b5c6d7e8f"},
	}}
	g.Eventually(func() error { return env.Client.Create(ctx, cred.DeepCopy()) }).WithTimeout(timeout).Should(
		MatchError(ContainSubstring("agentcred-webhook-service")), "the webhook must be registered and fail closed")

	// What others own: the manager's CA in the webhook configuration, the
	// HPA's replica count.
	vwc, err := get(t, "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "", "agentcred-validating-webhook-configuration")
	g.Expect(err).NotTo(HaveOccurred())
	hooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
	caBundle := "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
	g.Expect(unstructured.SetNestedField(hooks[0].(map[string]any), caBundle, "clientConfig", "caBundle")).To(Succeed())
	g.Expect(unstructured.SetNestedSlice(vwc.Object, hooks, "webhooks")).To(Succeed())
	g.Expect(env.Client.Update(ctx, vwc)).To(Succeed())
	auth, err := get(t, "apps/v1", "Deployment", namespace, "agentcred-auth")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(unstructured.SetNestedField(auth.Object, int64(5), "spec", "replicas")).To(Succeed())
	g.Expect(env.Client.Update(ctx, auth)).To(Succeed())

	upgrade := action.NewUpgrade(cfg)
	upgrade.Namespace = namespace
	_, err = upgrade.Run(releaseName, loadChart(t), map[string]any{"controllerManager": map[string]any{
		"replicas": 3, "extraArgs": []any{"--max-grace=12h"},
	}})
	g.Expect(err).NotTo(HaveOccurred())
	manager, err := get(t, "apps/v1", "Deployment", namespace, "agentcred-controller-manager")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(nested(manager, "spec", "replicas")).To(BeEquivalentTo(3))
	g.Expect(container(manager)["args"]).To(ContainElement("--max-grace=12h"))
	auth, err = get(t, "apps/v1", "Deployment", namespace, "agentcred-auth")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(nested(auth, "spec", "replicas")).To(BeEquivalentTo(5), "an upgrade must not undo the autoscaler")
	vwc, err = get(t, "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "", "agentcred-validating-webhook-configuration")
	g.Expect(err).NotTo(HaveOccurred())
	hooks, _, _ = unstructured.NestedSlice(vwc.Object, "webhooks")
	g.Expect(hooks[0]).To(HaveKeyWithValue("clientConfig", HaveKeyWithValue("caBundle", caBundle)),
		"an upgrade must keep the CA the manager injected, or every admission fails until it injects it again")

	_, err = action.NewUninstall(cfg).Run(releaseName)
	g.Expect(err).NotTo(HaveOccurred())
	for _, d := range []string{"agentcred-controller-manager", "agentcred-auth"} {
		g.Eventually(func() bool {
			_, err := get(t, "apps/v1", "Deployment", namespace, d)
			return apierrors.IsNotFound(err)
		}).WithTimeout(timeout).Should(BeTrue(), d)
	}
	_, err = get(t, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "agentcredentials.auth.agrenting.io")
	g.Expect(err).NotTo(HaveOccurred(), "helm uninstall keeps the CRDs, and so every AgentCredential")
	certs, err := get(t, "v1", "Namespace", "", "agentcred-webhook-certs")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(certs.GetDeletionTimestamp()).To(BeNil(), "helm uninstall keeps the CAs' namespace, so a reinstall keeps the CAs clients trust")
	// A reinstall takes the kept namespace (and the CAs in it) back.
	reinstall := action.NewInstall(cfg)
	reinstall.ReleaseName, reinstall.Namespace = releaseName, namespace
	_, err = reinstall.Run(loadChart(t), nil)
	g.Expect(err).NotTo(HaveOccurred(), "helm install after helm uninstall must adopt the kept namespace")
}
