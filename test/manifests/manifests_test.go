// Package manifests renders every kustomization under config/ and proves it
// against a real API server: each object passes a server-side dry-run apply,
// and the rendered RBAC grants the manager and the auth-only Deployment what
// they need and nothing more.
package manifests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

const operatorNamespace = harness.OperatorNamespace

var (
	k8s       client.Client
	apiConfig *rest.Config
	ctx       = context.Background()
)

func TestMain(m *testing.M) {
	os.Exit(harness.Run(harness.RunInput{M: m, ShortTests: "^TestDefaultInstallShape$", Setup: func(_ context.Context, env *harness.Env) (func() error, error) {
		apiConfig = env.Config
		scheme := controlplane.Scheme()
		if err := apiextensionsv1.AddToScheme(scheme); err != nil {
			return nil, err
		}
		var err error
		k8s, err = client.New(env.Config, client.Options{Scheme: scheme})
		return nil, err
	}}))
}

// render builds a kustomization under config/ the way `kustomize build` does.
func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	return harness.Kustomize(t, dir)
}

// stubCRD installs a schemaless CRD so objects of other projects (cert-manager,
// Prometheus Operator) can be dry-run without installing those projects.
func stubCRD(t *testing.T, group, kind, plural string) {
	t.Helper()
	preserve := true
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, Plural: plural},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: &preserve,
				}},
			}},
		},
	}
	if err := k8s.Create(ctx, crd); err != nil && !isAlreadyExists(err) {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func() error {
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion(group + "/v1")
		list.SetKind(kind + "List")
		return k8s.List(ctx, list)
	}).WithTimeout(timeoutDuration).Should(Succeed())
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !isAlreadyExists(err) {
		t.Fatal(err)
	}
}

func TestEveryKustomizationPassesServerSideDryRun(t *testing.T) {
	stubCRD(t, "cert-manager.io", "Certificate", "certificates")
	stubCRD(t, "cert-manager.io", "Issuer", "issuers")
	stubCRD(t, "monitoring.coreos.com", "ServiceMonitor", "servicemonitors")
	stubCRD(t, "monitoring.coreos.com", "PrometheusRule", "prometheusrules")
	ensureNamespace(t, operatorNamespace)
	for _, dir := range []string{"default", "overlays/cert-manager", "overlays/prometheus", "overlays/plain-http", "crd"} {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			if len(objs) == 0 {
				t.Fatal("rendered nothing")
			}
			for _, o := range objs {
				err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.DryRunAll, client.FieldOwner("manifests-test"), client.ForceOwnership)
				if err != nil {
					raw, _ := yaml.Marshal(o.Object)
					t.Errorf("%s %s/%s refused: %v\n%s", o.GetKind(), o.GetNamespace(), o.GetName(), err, raw)
				}
			}
		})
	}
}

func TestDefaultInstallShape(t *testing.T) {
	g := NewWithT(t)
	objs := render(t, "default")
	byKind := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		byKind[o.GetKind()] = append(byKind[o.GetKind()], o)
		if o.GetKind() != "CustomResourceDefinition" && o.GetKind() != "ClusterRole" && o.GetKind() != "ClusterRoleBinding" &&
			o.GetKind() != "ValidatingWebhookConfiguration" && o.GetKind() != "Namespace" {
			g.Expect(o.GetNamespace()).To(Equal(operatorNamespace), "%s %s", o.GetKind(), o.GetName())
		}
	}
	// Two Deployments: the controller + webhook with the write RBAC, and the
	// network-facing auth endpoint on its own read-only ServiceAccount.
	deployments := map[string]*unstructured.Unstructured{}
	for _, d := range byKind["Deployment"] {
		deployments[d.GetName()] = d
	}
	g.Expect(deployments).To(HaveLen(2))
	g.Expect(deployments).To(HaveKey("agentcred-controller-manager"))
	g.Expect(deployments).To(HaveKey("agentcred-auth"))
	wantArgs := map[string][]string{
		"agentcred-controller-manager": {"--leader-elect", "--enable-auth-endpoint=false", "--metrics-secure", "--webhook-cert-namespace=" + webhookCertNamespace, "--auth-tls-secret-name=agentcred-auth-tls"},
		// TLS by default, from the Secret the controller keeps.
		"agentcred-auth": {"--enable-controller=false", "--enable-webhook=false", "--metrics-secure", "--auth-tls-cert-file=/etc/agentcred/tls/tls.crt", "--auth-tls-key-file=/etc/agentcred/tls/tls.key"},
	}
	wantSA := map[string]string{"agentcred-controller-manager": "agentcred-controller-manager", "agentcred-auth": "agentcred-auth"}
	for name, d := range deployments {
		replicas, set, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
		if name == "agentcred-auth" {
			// The HorizontalPodAutoscaler owns it: re-applying must not scale it down.
			g.Expect(set).To(BeFalse(), "the auth Deployment must leave replicas to its HPA")
		} else {
			g.Expect(replicas).To(BeEquivalentTo(2), name)
		}
		sa, _, _ := unstructured.NestedString(d.Object, "spec", "template", "spec", "serviceAccountName")
		g.Expect(sa).To(Equal(wantSA[name]))
		containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		c := containers[0].(map[string]interface{})
		for _, a := range wantArgs[name] {
			g.Expect(c["args"]).To(ContainElement(a), name)
		}
		sc := c["securityContext"].(map[string]interface{})
		g.Expect(sc["readOnlyRootFilesystem"]).To(BeTrue())
		g.Expect(sc["allowPrivilegeEscalation"]).To(BeFalse())
		g.Expect(c["resources"]).To(HaveKey("limits"))
		g.Expect(c["livenessProbe"]).NotTo(BeNil())
		g.Expect(c["readinessProbe"]).NotTo(BeNil())
		seccomp, _, _ := unstructured.NestedString(d.Object, "spec", "template", "spec", "securityContext", "seccompProfile", "type")
		g.Expect(seccomp).To(Equal("RuntimeDefault"))
	}
	// The auth pods mount the whole certificate Secret (never subPath, so
	// renewals reach them).
	vols, _, _ := unstructured.NestedSlice(deployments["agentcred-auth"].Object, "spec", "template", "spec", "volumes")
	g.Expect(vols).To(ContainElement(HaveKeyWithValue("secret", HaveKeyWithValue("secretName", "agentcred-auth-tls"))))
	g.Expect(byKind["PodDisruptionBudget"]).To(HaveLen(2))
	g.Expect(byKind["HorizontalPodAutoscaler"]).To(HaveLen(1))
	target, _, _ := unstructured.NestedString(byKind["HorizontalPodAutoscaler"][0].Object, "spec", "scaleTargetRef", "name")
	g.Expect(target).To(Equal("agentcred-auth"))
	minReplicas, _, _ := unstructured.NestedInt64(byKind["HorizontalPodAutoscaler"][0].Object, "spec", "minReplicas")
	g.Expect(minReplicas).To(BeEquivalentTo(2))
	namespaces := map[string]bool{}
	for _, n := range byKind["Namespace"] {
		namespaces[n.GetName()] = true
	}
	g.Expect(namespaces).To(Equal(map[string]bool{operatorNamespace: true, webhookCertNamespace: true}))

	vwc := byKind["ValidatingWebhookConfiguration"]
	g.Expect(vwc).To(HaveLen(1))
	g.Expect(vwc[0].GetName()).To(Equal("agentcred-validating-webhook-configuration"), "must match --webhook-configuration-name's default")
	hooks, _, _ := unstructured.NestedSlice(vwc[0].Object, "webhooks")
	svc := hooks[0].(map[string]interface{})["clientConfig"].(map[string]interface{})["service"].(map[string]interface{})
	g.Expect(svc["name"]).To(Equal("agentcred-webhook-service"), "must match --webhook-service-name's default")
	g.Expect(svc["namespace"]).To(Equal(operatorNamespace))
	g.Expect(hooks[0].(map[string]interface{})["failurePolicy"]).To(Equal("Fail"))

	names := map[string]bool{}
	for _, s := range byKind["Service"] {
		names[s.GetName()] = true
	}
	g.Expect(names).To(HaveKey("agentcred-webhook-service"))
	g.Expect(names).To(HaveKey("agentcred-auth"))
	g.Expect(names).To(HaveKey("agentcred-metrics"))
	g.Expect(names).To(HaveKey("agentcred-auth-metrics"))
	for _, svc := range byKind["Service"] {
		if svc.GetName() == "agentcred-auth" {
			sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
			g.Expect(sel).To(HaveKeyWithValue("app.kubernetes.io/component", "auth"), "the auth Service must select the auth Deployment")
		}
	}
}

// applyRBAC creates (for real) the RBAC objects a kustomization renders.
func applyRBAC(t *testing.T, dir string) {
	t.Helper()
	for _, o := range render(t, dir) {
		switch o.GetKind() {
		case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("manifests-test"), client.ForceOwnership); err != nil {
				t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}
}

// can asks the API server whether user may do verb on resource (in ns, "" = cluster-wide).
// can asks the API server whether the ServiceAccount user (of the operator
// namespace) may verb the resource.
func can(t *testing.T, user, verb, group, resource, ns, name string) bool {
	t.Helper()
	return canAs(t, user, []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"}, verb, group, resource, ns, name)
}

func canAs(t *testing.T, user string, groups []string, verb, group, resource, ns, name string) bool {
	t.Helper()
	cs, err := kubernetes.NewForConfig(apiConfig)
	if err != nil {
		t.Fatal(err)
	}
	review, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: groups,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Verb: verb, Group: group, Resource: resource, Namespace: ns, Name: name,
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return review.Status.Allowed
}

// TestSamplesPassServerSideDryRun: every sample, including the consumer
// workloads of docs/consuming-keys.md, is accepted by the real API server
// with agentcred's CRD schema.
func TestSamplesPassServerSideDryRun(t *testing.T) {
	ns := "samples"
	ensureNamespace(t, ns)
	files, err := filepath.Glob(filepath.Join(controlplane.RepoRoot(), "config", "samples", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	top, _ := filepath.Glob(filepath.Join(controlplane.RepoRoot(), "config", "samples", "*.yaml"))
	files = append(files, top...)
	if len(files) < 5 {
		t.Fatalf("found only %d samples", len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			u.SetNamespace(ns)
			if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.DryRunAll, client.FieldOwner("samples-test")); err != nil {
				t.Errorf("%s: %s %s refused: %v", filepath.Base(f), u.GetKind(), u.GetName(), err)
			}
		}
	}
}
