package webhook_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/tenancy"
	"github.com/agrenting/agentcred/webhook"
)

// The suite's webhook (through which every API-server test goes) requires
// kube-apiserver's client certificate, as --webhook-client-ca-file sets up;
// kube-apiserver presents it through its AdmissionConfiguration's
// kubeConfigFile, as docs/security.md says. A second webhook server, as the
// default install runs it (no client CA), takes the forged reviews any pod
// could send.

// clientPKI is a CA and the client certificate it issued to kube-apiserver.
type clientPKI struct {
	caPEM             []byte
	certPEM, keyPEM   []byte
	clientCertificate tls.Certificate
}

func newClientPKI(cn string) (*clientPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn + " CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	p := &clientPKI{
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	p.clientCertificate, err = tls.X509KeyPair(p.certPEM, p.keyPEM)
	return p, err
}

// admissionConfig writes the CA file for --webhook-client-ca-file and the
// AdmissionConfiguration (with its kubeConfigFile) that makes kube-apiserver
// present the client certificate to every webhook, and returns the paths.
func (p *clientPKI) admissionConfig(dir string) (caFile, configFile string, err error) {
	caFile = filepath.Join(dir, "webhook-client-ca.crt")
	kubeconfig := filepath.Join(dir, "admission.kubeconfig")
	configFile = filepath.Join(dir, "admission.yaml")
	files := map[string]string{
		caFile: string(p.caPEM),
		kubeconfig: fmt.Sprintf(`apiVersion: v1
kind: Config
users:
# '*' matches every webhook; name the Service (agentcred-webhook-service.agentcred-system.svc) to present it to agentcred's only.
- name: '*'
  user:
    client-certificate-data: %s
    client-key-data: %s
`, base64.StdEncoding.EncodeToString(p.certPEM), base64.StdEncoding.EncodeToString(p.keyPEM)),
		configFile: fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %s
`, kubeconfig),
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return "", "", err
		}
	}
	return caFile, configFile, nil
}

// forger posts AdmissionReviews straight to a webhook server's HTTPS port,
// as any pod that reaches the Service can.
type forger struct {
	addr   string
	client *http.Client
}

func newForger(addr string, servingCA []byte, cert *tls.Certificate) *forger {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(servingCA)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &forger{addr: addr, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}}
}

// review sends an AdmissionReview for obj (old too, for an update) in
// namespace, as user, and returns the webhook's answer.
func (f *forger) review(namespace string, user authenticationv1.UserInfo, obj, old *authv1alpha1.AgentCredential) (*admissionv1.AdmissionResponse, error) {
	raw := func(c *authv1alpha1.AgentCredential) runtime.RawExtension {
		if c == nil {
			return runtime.RawExtension{}
		}
		c = c.DeepCopy()
		c.APIVersion, c.Kind = authv1alpha1.GroupVersion.String(), "AgentCredential"
		b, _ := json.Marshal(c)
		return runtime.RawExtension{Raw: b}
	}
	op := admissionv1.Create
	if old != nil {
		op = admissionv1.Update
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID(fmt.Sprintf("11111111-1111-1111-1111-%012d", counter.Add(1))),
			Kind:      metav1.GroupVersionKind{Group: authv1alpha1.GroupVersion.Group, Version: authv1alpha1.GroupVersion.Version, Kind: "AgentCredential"},
			Resource:  metav1.GroupVersionResource{Group: authv1alpha1.GroupVersion.Group, Version: authv1alpha1.GroupVersion.Version, Resource: "agentcredentials"},
			Name:      obj.Name,
			Namespace: namespace, Operation: op, UserInfo: user,
			Object: raw(obj), OldObject: raw(old),
		},
	})
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Post("https://"+f.addr+webhook.Path, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decoding the webhook's answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if out.Response == nil {
		return nil, fmt.Errorf("no response in the webhook's answer (HTTP %d)", resp.StatusCode)
	}
	return out.Response, nil
}

// answer is what a caller learns from a response.
func answer(r *admissionv1.AdmissionResponse) string {
	msg := ""
	if r.Result != nil {
		msg = fmt.Sprintf("%d %s %s", r.Result.Code, r.Result.Reason, r.Result.Message)
	}
	return fmt.Sprintf("allowed=%t %s warnings=%q", r.Allowed, msg, r.Warnings)
}

func mustAnswer(t *testing.T, f *forger, namespace string, user authenticationv1.UserInfo, obj, old *authv1alpha1.AgentCredential) string {
	t.Helper()
	r, err := f.review(namespace, user, obj, old)
	if err != nil {
		t.Fatal(err)
	}
	return answer(r)
}

var tenantB = authenticationv1.UserInfo{Username: "system:serviceaccount:team-b:ci",
	Groups: []string{"system:serviceaccounts", "system:serviceaccounts:team-b", "system:authenticated"}}

// TestForgedReviewsAreNoOracle: the security review's probe, sent straight
// to a webhook server without client authentication (the default install),
// learns nothing: the answer is the same whether another namespace holds an
// agent ID or a user, this one does, or none; a review whose object lies in
// another namespace is refused before any lookup, so it tells neither
// whether a Secret exists there nor what a SubjectAccessReview would say.
func TestForgedReviewsAreNoOracle(t *testing.T) {
	g := NewWithT(t)
	owner, other := newNamespace(t), newNamespace(t)
	held, free := newAgentID(), newAgentID()
	user := fmt.Sprintf("ceo-%d@example.com", counter.Add(1))
	claimFor(t, tenancy.Agent(held), owner)
	claimFor(t, tenancy.User(user), owner)
	seenByOpenWebhook(t, tenancy.ClaimName(tenancy.Agent(held)), tenancy.ClaimName(tenancy.User(user)))
	f := newForger(openWebhookAddr, servingCA, nil)

	probe := func(ns, agent, usr string) *authv1alpha1.AgentCredential {
		return &authv1alpha1.AgentCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"},
			Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: usr, Agents: []string{agent}},
		}
	}
	unclaimedUser := fmt.Sprintf("nobody-%d@example.com", counter.Add(1))
	want := mustAnswer(t, f, other, tenantB, probe(other, free, unclaimedUser), nil)
	g.Expect(want).To(HavePrefix("allowed=true"))
	for _, p := range []struct{ ns, agent, user string }{
		{other, held, unclaimedUser}, {other, free, user}, {other, held, user}, // held by another namespace
		{owner, held, user}, {owner, free, unclaimedUser}, // this one, none
		{"no-such-namespace", held, user},
	} {
		g.Expect(mustAnswer(t, f, p.ns, tenantB, probe(p.ns, p.agent, p.user), nil)).To(Equal(want),
			"a forged review for %s naming %s and %s", p.ns, p.agent, p.user)
	}
	// Adding a held agent on update: the same.
	old := probe(other, free, unclaimedUser)
	cur := old.DeepCopy()
	cur.Spec.Agents = append(cur.Spec.Agents, held)
	g.Expect(mustAnswer(t, f, other, tenantB, cur, old)).To(HavePrefix("allowed=true"))

	// Secrets and RBAC of another namespace: refused before any lookup.
	g.Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: owner, Name: "db-password"}})).To(Succeed())
	tenantClient(t, owner, "payments-admin", true)
	elsewhere := func(secret string) *authv1alpha1.AgentCredential {
		return apiKey(owner, "probe", newAgentID(), func(c *authv1alpha1.AgentCredential) {
			c.Spec.SecretName = secret
			c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{{Kind: authv1alpha1.DeploymentKind, Name: "payments"}}
		})
	}
	refused := fmt.Sprintf(`metadata.namespace: Forbidden: the object's namespace %q is not the request's %q`, owner, other)
	var answers []string
	for _, secret := range []string{"db-password", "no-such-secret"} {
		for _, u := range []string{"payments-admin", "nobody"} {
			a := mustAnswer(t, f, other, authenticationv1.UserInfo{Username: u}, elsewhere(secret), nil)
			g.Expect(a).To(ContainSubstring(refused))
			g.Expect(a).NotTo(ContainSubstring("spec."), "nothing about the object's Secret or targets")
			answers = append(answers, a)
		}
	}
	g.Expect(answers).To(HaveEach(Equal(answers[0])), "the same answer whatever the Secret and the user's rights")
	// In the caller's own namespace a check still works as before.
	own := mustAnswer(t, f, owner, authenticationv1.UserInfo{Username: "nobody"}, elsewhere("db-password"), nil)
	g.Expect(own).To(ContainSubstring(`spec.secretName: Forbidden: Secret "db-password" already exists`))
	g.Expect(own).To(ContainSubstring(`spec.rotation.restartTargets[0]: Forbidden: nobody may not patch Deployment "payments"`))
	g.Expect(mustAnswer(t, f, owner, authenticationv1.UserInfo{Username: "payments-admin"}, elsewhere("db-password"), nil)).
		NotTo(ContainSubstring("restartTargets"))
}

// TestWebhookAuthenticatesItsCaller: with --webhook-client-ca-file the
// webhook answers only a caller presenting a certificate that CA issued —
// kube-apiserver, through its kubeConfigFile (every other test of this
// suite goes through it) — and no pod without it, nor one with a
// certificate of another CA.
func TestWebhookAuthenticatesItsCaller(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKey(ns, "probe", newAgentID())
	_, err := newForger(webhookAddr, servingCA, nil).review(ns, tenantB, cred, nil)
	g.Expect(err).To(HaveOccurred(), "no client certificate")
	impostor, err := newClientPKI("kube-apiserver")
	g.Expect(err).NotTo(HaveOccurred())
	_, err = newForger(webhookAddr, servingCA, &impostor.clientCertificate).review(ns, tenantB, cred, nil)
	g.Expect(err).To(HaveOccurred(), "a certificate of another CA")
	r, err := newForger(webhookAddr, servingCA, &apiserverPKI.clientCertificate).review(ns, tenantB, cred, nil)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(r.Allowed).To(BeTrue())
	// And kube-apiserver gets through.
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
}

// TestRotationNeedsThePatchRightOnEveryTarget: a user who may update
// AgentCredentials but not patch their restart targets cannot roll them by
// asking for a new key; someone who may patch them can.
func TestRotationNeedsThePatchRightOnEveryTarget(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	deployer := tenantClient(t, ns, "deployer", true)
	rotator := tenantClient(t, ns, "rotator", false)
	cred := apiKey(ns, "payments-key", newAgentID(), func(c *authv1alpha1.AgentCredential) {
		c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{{Kind: authv1alpha1.DeploymentKind, Name: "payments"}}
	})
	g.Expect(deployer.Create(ctx, cred)).To(Succeed())

	rotate := func(c client.Client, value string) error {
		cur := &authv1alpha1.AgentCredential{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(cred), cur); err != nil {
			return err
		}
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[authv1alpha1.RotateAnnotation] = value
		return c.Update(ctx, cur)
	}
	err := rotate(rotator, "1")
	g.Expect(err).To(MatchError(ContainSubstring(`metadata.annotations[auth.agrenting.io/rotate]: Forbidden: this asks for a new key, which restarts every restart target, and rotator may not patch Deployment "payments" in namespace ` + ns)))
	// Through a merge patch too, as kubectl annotate sends it.
	patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"auth.agrenting.io/rotate":"2"}}}`))
	g.Expect(rotator.Patch(ctx, cred.DeepCopy(), patch)).To(MatchError(ContainSubstring("metadata.annotations[auth.agrenting.io/rotate]: Forbidden")))
	// Other edits stay open to the rotator.
	labelled := &authv1alpha1.AgentCredential{}
	g.Expect(rotator.Get(ctx, client.ObjectKeyFromObject(cred), labelled)).To(Succeed())
	labelled.Labels = map[string]string{"team": "payments"}
	g.Expect(rotator.Update(ctx, labelled)).To(Succeed())
	// The deployer may roll it.
	g.Expect(rotate(deployer, "3")).To(Succeed())
}
