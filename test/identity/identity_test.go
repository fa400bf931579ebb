// Package identity tests identity claims across operator restarts and
// modes, each with its own operator on one real kube-apiserver + etcd: the
// upgrade from a version without claims (today's owners keep their agent
// IDs and users) and --identity-claims=preassigned.
package identity_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/internal/tenancy"
	"github.com/agrenting/agentcred/test/harness"
)

const operatorNamespace = harness.OperatorNamespace

var (
	k8s    client.Client
	config *rest.Config
	ctx    = context.Background()
)

func TestMain(m *testing.M) {
	os.Exit(harness.Run(harness.RunInput{M: m, Setup: func(_ context.Context, env *harness.Env) (func() error, error) {
		k8s, config = env.Client, env.Config
		return nil, nil
	}}))
}

// startOperator runs the controller with mode until the returned stop is
// called (or the test ends).
func startOperator(t *testing.T, mode tenancy.Mode) (stop func()) {
	t.Helper()
	o := harness.OperatorOptions()
	o.IdentityClaims = mode
	_, stopOp, err := harness.StartOperator(ctx, config, o, operator.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	stop = func() {
		if err := stopOp(); err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func newNamespace(t *testing.T) string { return harness.NewNamespace(t, k8s, "identity") }

var counter int

func newAgentID() string {
	counter++
	return fmt.Sprintf("9a1c2b1e-0000-4000-8000-%012d", counter)
}

func apiKey(ns, name, agent string) *authv1alpha1.AgentCredential {
	return &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: agent},
	}
}

func userToken(ns, name, user, agent string) *authv1alpha1.AgentCredential {
	return &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: user, Agents: []string{agent}},
	}
}

// waitReason waits until cred's Ready condition has status and reason and
// returns the credential as it then is.
func waitReason(t *testing.T, cred *authv1alpha1.AgentCredential, status metav1.ConditionStatus, reason string) *authv1alpha1.AgentCredential {
	t.Helper()
	return harness.WaitReady(t, k8s, cred, status, reason, 20*time.Second)
}

func claimOf(g Gomega, id tenancy.Identity) *authv1alpha1.IdentityClaim {
	c := &authv1alpha1.IdentityClaim{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: tenancy.ClaimName(id)}, c)).To(Succeed())
	return c
}

func hasHashSecret(cred *authv1alpha1.AgentCredential) bool {
	err := k8s.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: hashsecret.Name(cred.Namespace, cred.Name)}, &corev1.Secret{})
	return err == nil
}

// TestUpgradeClaimsOldestFirst: credentials made before claims existed
// claim their identities oldest-first when the new operator starts, so
// today's owners keep them (with their keys), even against a newer
// credential elsewhere whose namespace and name sort first.
func TestUpgradeClaimsOldestFirst(t *testing.T) {
	g := NewWithT(t)
	owner, newcomer := newNamespace(t), newNamespace(t)
	agent, user := newAgentID(), "owner@example.com"
	if newcomer > owner {
		owner, newcomer = newcomer, owner // the newcomer's namespace sorts first: age, not names, decides
	}
	stop := startOperator(t, tenancy.FirstUse)
	key := apiKey(owner, "key", agent)
	tok := userToken(owner, "token", user, newAgentID())
	g.Expect(k8s.Create(ctx, key)).To(Succeed())
	g.Expect(k8s.Create(ctx, tok)).To(Succeed())
	key = waitReason(t, key, metav1.ConditionTrue, authv1alpha1.ReasonIssued)
	tok = waitReason(t, tok, metav1.ConditionTrue, authv1alpha1.ReasonIssued)
	stop()

	// The state an operator without claims leaves: no claims at all, and a
	// newer credential elsewhere naming the same identities.
	g.Expect(k8s.DeleteAllOf(ctx, &authv1alpha1.IdentityClaim{})).To(Succeed())
	time.Sleep(time.Until(tok.CreationTimestamp.Add(time.Second))) // strictly newer: timestamps have one-second resolution
	takeKey := apiKey(newcomer, "a", agent)
	takeTok := userToken(newcomer, "a-token", user, newAgentID())
	g.Expect(k8s.Create(ctx, takeKey)).To(Succeed())
	g.Expect(k8s.Create(ctx, takeTok)).To(Succeed())

	startOperator(t, tenancy.FirstUse)
	// The newcomers are refused at once (the older credential goes first
	// even before its claim exists), and the owner's claims appear.
	waitReason(t, takeKey, metav1.ConditionFalse, authv1alpha1.ReasonAgentIDConflict)
	waitReason(t, takeTok, metav1.ConditionFalse, authv1alpha1.ReasonUserConflict)
	g.Eventually(func(g Gomega) {
		g.Expect(claimOf(g, tenancy.Agent(agent)).Spec.Namespace).To(Equal(owner))
		g.Expect(claimOf(g, tenancy.User(user)).Spec.Namespace).To(Equal(owner))
	}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	g.Expect(waitReason(t, key, metav1.ConditionTrue, authv1alpha1.ReasonIssued).Status.KeyID).To(Equal(key.Status.KeyID), "the owner's key changed")
	g.Expect(waitReason(t, tok, metav1.ConditionTrue, authv1alpha1.ReasonIssued).Status.KeyID).To(Equal(tok.Status.KeyID))
	g.Expect(hasHashSecret(takeKey) || hasHashSecret(takeTok)).To(BeFalse(), "a newcomer got a key")
}

// TestPreassignedModeWithoutClaim: with --identity-claims=preassigned the
// controller never creates a claim; a credential without one is held with
// a message saying what an admin must create, and is issued once it exists.
func TestPreassignedModeWithoutClaim(t *testing.T) {
	g := NewWithT(t)
	ns, other := newNamespace(t), newNamespace(t)
	agent := newAgentID()
	startOperator(t, tenancy.Preassigned)

	cred := apiKey(ns, "waiting", agent)
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	held := waitReason(t, cred, metav1.ConditionFalse, authv1alpha1.ReasonIdentityNotAssigned)
	msg := meta.FindStatusCondition(held.Status.Conditions, authv1alpha1.ReadyCondition).Message
	g.Expect(msg).To(ContainSubstring(fmt.Sprintf("a cluster admin must create IdentityClaim agent-%s with spec {kind: Agent, value: %q, namespace: %s}", agent, agent, ns)))
	g.Expect(held.Status.KeyID).To(BeEmpty())
	g.Expect(hasHashSecret(cred)).To(BeFalse())
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: tenancy.ClaimName(tenancy.Agent(agent))}, &authv1alpha1.IdentityClaim{})).NotTo(Succeed(), "the controller made a claim in preassigned mode")

	// An admin assigns it to another namespace: a conflict, not "unassigned".
	claim := &authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(tenancy.Agent(agent))},
		Spec:       authv1alpha1.IdentityClaimSpec{Kind: authv1alpha1.AgentIdentity, Value: agent, Namespace: other},
	}
	g.Expect(k8s.Create(ctx, claim)).To(Succeed())
	waitReason(t, cred, metav1.ConditionFalse, authv1alpha1.ReasonAgentIDConflict)

	// The admin moves it here: issued.
	g.Expect(k8s.Delete(ctx, claim)).To(Succeed())
	claim = &authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(tenancy.Agent(agent))},
		Spec:       authv1alpha1.IdentityClaimSpec{Kind: authv1alpha1.AgentIdentity, Value: agent, Namespace: ns},
	}
	g.Eventually(func() error { return k8s.Create(ctx, claim) }).WithTimeout(10 * time.Second).Should(Succeed())
	waitReason(t, cred, metav1.ConditionTrue, authv1alpha1.ReasonIssued)
	g.Eventually(func(g Gomega) {
		g.Expect(claimOf(g, tenancy.Agent(agent)).Status.Credentials).To(ConsistOf("waiting"))
	}).WithTimeout(10 * time.Second).Should(Succeed())
}
