package manifests

import (
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestManagerNetworkPolicyOpensOnlyTheWebhookAndMetricsPorts: the install
// isolates the controller-manager pods for ingress and admits exactly the
// ports kube-apiserver (webhook) and Prometheus (metrics) reach, by the
// names the container declares — a renamed port would otherwise lock
// kube-apiserver out, and with failurePolicy Fail every AgentCredential
// write with it. It selects no auth pod and leaves egress alone (the
// manager talks to the API server). docs/security.md, "Forged
// AdmissionReviews", says why the webhook port has no `from`.
func TestManagerNetworkPolicyOpensOnlyTheWebhookAndMetricsPorts(t *testing.T) {
	g := NewWithT(t)
	var policies []networkingv1.NetworkPolicy
	deployments := map[string]appsv1.Deployment{}
	var webhookService corev1.Service
	for _, o := range render(t, "default") {
		switch o.GetKind() {
		case "NetworkPolicy":
			var p networkingv1.NetworkPolicy
			g.Expect(convert(o, &p)).To(Succeed())
			policies = append(policies, p)
		case "Deployment":
			var d appsv1.Deployment
			g.Expect(convert(o, &d)).To(Succeed())
			deployments[d.Name] = d
		case "Service":
			if o.GetName() == "agentcred-webhook-service" {
				g.Expect(convert(o, &webhookService)).To(Succeed())
			}
		}
	}
	g.Expect(policies).To(HaveLen(1))
	p := policies[0]
	g.Expect(p.Name).To(Equal("agentcred-controller-manager"))
	g.Expect(p.Namespace).To(Equal(operatorNamespace))
	g.Expect(p.Spec.PolicyTypes).To(Equal([]networkingv1.PolicyType{networkingv1.PolicyTypeIngress}))

	selector := labels.SelectorFromSet(p.Spec.PodSelector.MatchLabels)
	manager, auth := deployments["agentcred-controller-manager"], deployments["agentcred-auth"]
	g.Expect(selector.Matches(labels.Set(manager.Spec.Template.Labels))).To(BeTrue(), "it selects the manager pods")
	g.Expect(selector.Matches(labels.Set(auth.Spec.Template.Labels))).To(BeFalse(), "it leaves the auth pods alone")

	declared := map[string]bool{}
	for _, port := range manager.Spec.Template.Spec.Containers[0].Ports {
		declared[port.Name] = true
	}
	var admitted []string
	for _, rule := range p.Spec.Ingress {
		g.Expect(rule.From).To(BeEmpty(), "kube-apiserver's and Prometheus' sources cannot be selected portably")
		for _, port := range rule.Ports {
			g.Expect(port.Port).NotTo(BeNil())
			g.Expect(declared).To(HaveKey(port.Port.StrVal), "a port the manager container declares")
			admitted = append(admitted, port.Port.StrVal)
		}
	}
	g.Expect(admitted).To(ConsistOf("webhook", "metrics"))
	g.Expect(webhookService.Spec.Ports).To(HaveLen(1))
	g.Expect(admitted).To(ContainElement(webhookService.Spec.Ports[0].TargetPort.StrVal), "the port the webhook Service sends to")
}

func convert(o *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into)
}
