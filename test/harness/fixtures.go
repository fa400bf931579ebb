package harness

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

// VerifyStatus is the status /auth/verify at base answers for an API key
// (0 when the request fails).
func VerifyStatus(base, key string) int {
	req, err := http.NewRequest(http.MethodGet, base+"/auth/verify", nil)
	if err != nil {
		return 0
	}
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// WithTokenWebhook writes into dir kube-apiserver's token-webhook kubeconfig
// for an endpoint at server (…/tokenreview), trusting caPEM when it is set
// and checking the certificate is for serverName when that is set (the
// Service name, when server is an address) — the file README documents —
// and returns the RunInput.Configure that points
// kube-apiserver at it, asking the webhook to vouch for audience (its
// --api-audiences; agentcred vouches only for those it is told).
func WithTokenWebhook(dir, server string, caPEM []byte, serverName, audience string) (func(*envtest.Environment), error) {
	path := filepath.Join(dir, "token-webhook.kubeconfig")
	if err := os.WriteFile(path, []byte(tokenWebhookKubeconfig(server, caPEM, serverName)), 0o600); err != nil {
		return nil, err
	}
	return func(e *envtest.Environment) {
		e.ControlPlane.GetAPIServer().Configure().
			Set("authentication-token-webhook-config-file", path).
			Set("authentication-token-webhook-version", "v1").
			Set("authentication-token-webhook-cache-ttl", "1s").
			Set("api-audiences", audience)
	}, nil
}

func tokenWebhookKubeconfig(server string, caPEM []byte, serverName string) string {
	ca := ""
	if len(caPEM) > 0 {
		ca = "\n    certificate-authority-data: " + base64.StdEncoding.EncodeToString(caPEM)
	}
	if serverName != "" {
		ca += "\n    tls-server-name: " + serverName
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: agentcred
  cluster:
    server: %s%s
users:
- name: kube-apiserver
  user: {}
contexts:
- name: webhook
  context: {cluster: agentcred, user: kube-apiserver}
current-context: webhook
`, server, ca)
}

// KeyConsumer is a two-replica Deployment whose pods read the key of Secret
// secretName from an environment variable (the seed's advice), rolled one
// surge pod at a time and never below two available. nodeName binds its
// pods (there is no scheduler in the test clusters): KwokNode to run them,
// a node that does not exist for a rollout that never completes, or "" to
// leave them unscheduled.
func KeyConsumer(ns, name, secretName, nodeName string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1)),
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeName:    nodeName,
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name: "agent", Image: "example.com/agent:1",
						Env: []corev1.EnvVar{{Name: "AGENT_API_KEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
							LocalObjectReference: corev1.LocalObjectReference{Name: secretName}, Key: authv1alpha1.AgentSecretAPIKey,
						}}}},
					}},
				},
			},
		},
	}
}
