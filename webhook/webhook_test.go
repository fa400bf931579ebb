package webhook_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/internal/tenancy"
	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
	"github.com/agrenting/agentcred/webhook"
)

var (
	k8s      client.Client
	cached   client.Client // the webhook's own cache-backed view
	warned   client.Client // a client whose warnings land in warnings
	adminCfg *rest.Config  // the control plane's admin, for impersonation
	warnings = &warningRecorder{}
	ctx      = context.Background()

	// The suite's webhook requires kube-apiserver's client certificate,
	// apiserverPKI's; the open webhook, as the default install runs it,
	// requires none.
	webhookAddr, openWebhookAddr string
	servingCA                    []byte
	apiserverPKI                 *clientPKI
	openCached                   client.Client
)

// warningRecorder collects the warnings the API server relays, as kubectl shows them.
type warningRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.seen
	w.seen = nil
	return out
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "agentcred-webhook-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	apiserverPKI, err = newClientPKI("kube-apiserver")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clientCAFile, admissionConfig, err := apiserverPKI.admissionConfig(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return harness.Run(harness.RunInput{
		M: m, ShortTests: "^TestValidator",
		Configure: []func(*envtest.Environment){func(e *envtest.Environment) {
			e.WebhookInstallOptions = envtest.WebhookInstallOptions{
				Paths: []string{filepath.Join(controlplane.RepoRoot(), "config", "webhook")},
			}
			e.ControlPlane.GetAPIServer().Configure().Set("admission-control-config-file", admissionConfig)
		}},
		Setup: func(ctx context.Context, env *harness.Env) (func() error, error) {
			// The webhook alone, assembled as the binary assembles it, serving
			// on the address and certificate envtest registered, answering
			// kube-apiserver only.
			wio := &env.WebhookInstallOptions
			servingCA = wio.LocalServingCAData
			o := harness.OperatorOptions()
			o.EnableController, o.EnableWebhook = false, true
			o.WebhookHost, o.WebhookPort, o.WebhookCertDir = wio.LocalServingHost, wio.LocalServingPort, wio.LocalServingCertDir
			o.WebhookCertManagement = operator.ExternalCerts
			o.WebhookClientCAFile = clientCAFile
			op, stop, err := harness.StartOperator(ctx, env.Config, o, operator.Deps{})
			if err != nil {
				return nil, err
			}
			cached, k8s, adminCfg = op.GetClient(), env.Client, env.Config
			webhookAddr = net.JoinHostPort(wio.LocalServingHost, strconv.Itoa(wio.LocalServingPort))
			if err := waitForTLS(webhookAddr); err != nil {
				return stop, err
			}
			// The same without a client CA, for the forged reviews.
			open := o
			open.WebhookClientCAFile = ""
			open.WebhookPort, err = freePort()
			if err != nil {
				return stop, err
			}
			openOp, stopOpen, err := harness.StartOperator(ctx, env.Config, open, operator.Deps{})
			if err != nil {
				return stop, err
			}
			stopBoth := func() error { return errors.Join(stopOpen(), stop()) }
			openCached = openOp.GetClient()
			openWebhookAddr = net.JoinHostPort(wio.LocalServingHost, strconv.Itoa(open.WebhookPort))
			if err := waitForTLS(openWebhookAddr); err != nil {
				return stopBoth, err
			}
			cfg := rest.CopyConfig(env.Config)
			cfg.WarningHandler = warnings
			warned, err = client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
			return stopBoth, err
		},
	})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitForTLS waits until the webhook server answers TLS at addr.
func waitForTLS(addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{apiserverPKI.clientCertificate}}) //nolint:gosec // readiness probe only
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("webhook server never came up: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var counter atomic.Int64

func newAgentID() string { return fmt.Sprintf("cccccccc-2222-4000-8000-%012d", counter.Add(1)) }

func newNamespace(t *testing.T) string { return harness.NewNamespace(t, k8s, "wh") }

// seenByWebhook waits until the webhook's cache holds obj: the webhook
// judges claims from its informer, like the controller.
func seenByWebhook(t *testing.T, obj client.Object) {
	t.Helper()
	NewWithT(t).Eventually(func() error {
		return cached.Get(ctx, client.ObjectKeyFromObject(obj), &authv1alpha1.AgentCredential{})
	}).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(Succeed())
}

func apiKey(ns, name, agent string, mutate ...func(*authv1alpha1.AgentCredential)) *authv1alpha1.AgentCredential {
	c := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: agent},
	}
	for _, m := range mutate {
		m(c)
	}
	return c
}

func TestRefusesToHijackAnUnrelatedSecret(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	db := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-password"}, Data: map[string][]byte{"password": []byte("s3cret")}}
	g.Expect(k8s.Create(ctx, db)).To(Succeed())
	rv := db.ResourceVersion

	err := k8s.Create(ctx, apiKey(ns, "thief", newAgentID(), func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "db-password" }))
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).To(ContainSubstring(`spec.secretName: Forbidden: Secret "db-password" already exists and is not managed by agentcred`))

	after := &corev1.Secret{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(db), after)).To(Succeed())
	g.Expect(after.ResourceVersion).To(Equal(rv), "the foreign Secret must be untouched")
	g.Expect(after.Data).To(Equal(db.Data))

	// Defaulted secretName (the credential's own name) is checked too.
	err = k8s.Create(ctx, apiKey(ns, "db-password", newAgentID()))
	g.Expect(err).To(MatchError(ContainSubstring("spec.secretName")))
}

func TestRefusesAnotherCredentialsSecret(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	first := apiKey(ns, "first", newAgentID(), func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "shared" })
	g.Expect(k8s.Create(ctx, first)).To(Succeed())
	seenByWebhook(t, first)
	err := k8s.Create(ctx, apiKey(ns, "second", newAgentID(), func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "shared" }))
	g.Expect(err).To(MatchError(ContainSubstring(`AgentCredential "first" already issues its key into Secret "shared"`)))

	// A Secret controlled by another credential (issued already) is refused by owner.
	owner := &authv1alpha1.AgentCredential{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "first"}, owner)).To(Succeed())
	isController := true
	issued := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "issued", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: authv1alpha1.GroupVersion.String(), Kind: "AgentCredential", Name: "first", UID: owner.UID, Controller: &isController,
	}}}}
	g.Expect(k8s.Create(ctx, issued)).To(Succeed())
	err = k8s.Create(ctx, apiKey(ns, "third", newAgentID(), func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "issued" }))
	g.Expect(err).To(MatchError(ContainSubstring(`Secret "issued" belongs to AgentCredential "first"`)))
}

// seenByOpenWebhook waits until the open webhook's cache holds the claims.
func seenByOpenWebhook(t *testing.T, claims ...string) {
	t.Helper()
	for _, name := range claims {
		NewWithT(t).Eventually(func() error {
			return openCached.Get(ctx, client.ObjectKey{Name: name}, &authv1alpha1.IdentityClaim{})
		}).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(Succeed())
	}
}

// claimFor creates the IdentityClaim binding id to namespace, as the
// controller (or an admin) would, and waits until the webhook's cache has it.
func claimFor(t *testing.T, id tenancy.Identity, namespace string) {
	t.Helper()
	c := &authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(id)},
		Spec:       authv1alpha1.IdentityClaimSpec{Kind: id.Kind, Value: id.Value, Namespace: namespace},
	}
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, c) })
	NewWithT(t).Eventually(func() error {
		return cached.Get(ctx, client.ObjectKeyFromObject(c), &authv1alpha1.IdentityClaim{})
	}).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(Succeed())
}

// TestRefusesIdentityClaimedElsewhere: agent IDs and users claimed by another
// namespace are refused on create and when added on update, with the field
// path, and the message never names the namespace or credential holding them.
func TestRefusesIdentityClaimedElsewhere(t *testing.T) {
	g := NewWithT(t)
	owner, other := newNamespace(t), newNamespace(t)
	agent := newAgentID()
	user := fmt.Sprintf("alice-%d@example.com", counter.Add(1))
	claimFor(t, tenancy.Agent(agent), owner)
	claimFor(t, tenancy.User(user), owner)
	mine := apiKey(owner, "mine", agent)
	g.Expect(k8s.Create(ctx, mine)).To(Succeed())
	seenByWebhook(t, mine)
	noHolder := func(err error) {
		t.Helper()
		g.Expect(err.Error()).NotTo(ContainSubstring(owner), "the refusal names the holding namespace")
		g.Expect(err.Error()).NotTo(ContainSubstring(`"mine"`))
	}

	err := k8s.Create(ctx, apiKey(other, "theirs", agent))
	g.Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf(`spec.agentID: Forbidden: agent ID %s is claimed by another namespace`, agent))))
	noHolder(err)
	// An upper-case spelling is the same agent.
	err = k8s.Create(ctx, apiKey(other, "theirs", strings.ToUpper(agent)))
	g.Expect(err).To(MatchError(ContainSubstring("spec.agentID: Forbidden")))

	ut := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "token"},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "eve@example.com", Agents: []string{newAgentID(), strings.ToUpper(agent)}},
	}
	err = k8s.Create(ctx, ut)
	g.Expect(err).To(MatchError(ContainSubstring("spec.agents[1]: Forbidden")))
	noHolder(err)

	// A user claimed elsewhere, in any case.
	impostor := ut.DeepCopy()
	impostor.Spec.Agents, impostor.Spec.User = []string{newAgentID()}, strings.ToUpper(user)
	err = k8s.Create(ctx, impostor)
	g.Expect(err).To(MatchError(ContainSubstring("spec.user: Forbidden: user")))
	noHolder(err)

	// The owning namespace may name them again.
	g.Expect(k8s.Create(ctx, apiKey(owner, "mine-too", agent))).To(Succeed())

	// Adding a claimed agent to an existing user token is refused; other updates pass.
	ut.Spec.Agents = []string{newAgentID()}
	g.Expect(k8s.Create(ctx, ut)).To(Succeed())
	ut.Spec.Agents = append(ut.Spec.Agents, agent)
	g.Expect(k8s.Update(ctx, ut)).To(MatchError(ContainSubstring("spec.agents[1]: Forbidden")))
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(ut), ut)).To(Succeed())
	ut.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "1"}
	g.Expect(k8s.Update(ctx, ut)).To(Succeed())
}

// TestPreassignedRefusesUnassignedIdentities: with preassigned claims, an
// identity with no claim for the namespace is refused with what an admin
// must create; an assigned one passes.
func TestPreassignedRefusesUnassignedIdentities(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	v := &webhook.Validator{Credentials: cached, Secrets: k8s, IdentityClaims: tenancy.Preassigned, CallersAuthenticated: true}
	agent := newAgentID()
	_, err := v.ValidateCreate(reviewOf(apiKey(ns, "", "")), apiKey(ns, "unassigned", agent))
	g.Expect(err).To(MatchError(ContainSubstring("spec.agentID: Forbidden: agent ID " + agent + " is not assigned to this namespace: a cluster admin must create IdentityClaim agent-" + agent)))
	claimFor(t, tenancy.Agent(agent), ns)
	_, err = v.ValidateCreate(reviewOf(apiKey(ns, "", "")), apiKey(ns, "assigned", agent))
	g.Expect(err).NotTo(HaveOccurred())
}

func TestValidCreatesAndUpdatesPass(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	c := apiKey(ns, "fine", newAgentID())
	g.Expect(warned.Create(ctx, c)).To(Succeed())
	g.Expect(warnings.take()).To(BeEmpty())
	c.Spec.Rotation.Period = &metav1.Duration{Duration: 24 * time.Hour}
	g.Expect(warned.Update(ctx, c)).To(Succeed())
	g.Expect(warnings.take()).To(BeEmpty())
}

func TestWarningsReachTheClient(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	c := apiKey(ns, "yearly", newAgentID(), func(c *authv1alpha1.AgentCredential) {
		c.Spec.Rotation.Period = &metav1.Duration{Duration: 8760 * time.Hour}
		c.Spec.Rotation.GracePeriod = &metav1.Duration{}
	})
	g.Expect(warned.Create(ctx, c)).To(Succeed(), "warnings must not refuse the object")
	got := warnings.take()
	g.Expect(got).To(ContainElement(ContainSubstring("spec.rotation.period: 8760h0m0s is longer than the 90 days")))
	g.Expect(got).To(ContainElement(ContainSubstring("spec.rotation.gracePeriod: 0s revokes the old key")))
}

// tenantClient acts as user, who may write AgentCredentials in ns and, when
// mayRestart, patch its Deployments.
func tenantClient(t *testing.T, ns, user string, mayRestart bool) client.Client {
	t.Helper()
	rules := []rbacv1.PolicyRule{{APIGroups: []string{authv1alpha1.GroupVersion.Group}, Resources: []string{"agentcredentials"}, Verbs: []string{"get", "create", "update", "patch"}}}
	if mayRestart {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "patch"}})
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user}, Rules: rules}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: user},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	cfg := rest.CopyConfig(adminCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: controlplane.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRestartTargetsOnlyForWhoCouldRestartThem(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	target := func(c *authv1alpha1.AgentCredential) {
		c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{{Kind: authv1alpha1.DeploymentKind, Name: "payments"}}
	}
	// A tenant who may write credentials but not restart workloads cannot
	// restart them through agentcred.
	writer := tenantClient(t, ns, "credential-writer", false)
	err := writer.Create(ctx, apiKey(ns, "sneaky", newAgentID(), target))
	g.Expect(err).To(MatchError(ContainSubstring(`spec.rotation.restartTargets[0]: Forbidden: credential-writer may not patch Deployment "payments"`)))
	// Adding the target later is refused the same way.
	plain := apiKey(ns, "plain", newAgentID())
	g.Expect(writer.Create(ctx, plain)).To(Succeed())
	target(plain)
	g.Expect(writer.Update(ctx, plain)).To(MatchError(ContainSubstring("spec.rotation.restartTargets[0]")))

	// One who may patch the Deployment may name it.
	deployer := tenantClient(t, ns, "deployer", true)
	g.Expect(deployer.Create(ctx, apiKey(ns, "allowed", newAgentID(), target))).To(Succeed())
}
