package controllers_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/tenancy"
)

func getClaim(g Gomega, id tenancy.Identity) *authv1alpha1.IdentityClaim {
	c := &authv1alpha1.IdentityClaim{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: tenancy.ClaimName(id)}, c)).To(Succeed())
	return c
}

func userToken(ns, name, user string, agents ...string) *authv1alpha1.AgentCredential {
	return &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: user, Agents: agents},
	}
}

// assertHeldWithoutKey: the credential is refused for reason, has no key
// the endpoint accepts (no hash Secret), and nothing it shows names the
// namespace that holds the identity.
func assertHeldWithoutKey(t *testing.T, cred *authv1alpha1.AgentCredential, reason, holder string) {
	t.Helper()
	g := NewWithT(t)
	cred = waitCondition(t, cred, metav1.ConditionFalse, reason)
	g.Expect(cred.Status.KeyID).To(BeEmpty())
	g.Eventually(func() error { return k8s.Get(ctx, hashSecretKey(cred), &corev1.Secret{}) }).
		WithTimeout(timeout).Should(MatchError(ContainSubstring("not found")), "a held credential must have no hash Secret")
	g.Expect(readyMessage(cred)).NotTo(ContainSubstring(holder), "the condition names the holder")
	waitEvent(t, cred, controllers.EventConflict)
	events := &eventsv1.EventList{}
	g.Expect(k8s.List(ctx, events, client.InNamespace(cred.Namespace))).To(Succeed())
	for _, e := range events.Items {
		g.Expect(e.Note).NotTo(ContainSubstring(holder), "an event names the holder")
	}
}

// TestTakeoverAfterRevokeIsRefused: the owner revokes (deletes) its
// credential and recreates it within seconds while another namespace keeps
// creating credentials for the same agent: the owner gets it back, the
// other never gets a Ready credential or a hash the endpoint would accept.
func TestTakeoverAfterRevokeIsRefused(t *testing.T) {
	g := NewWithT(t)
	owner, intruder := newNamespace(t), newNamespace(t)
	first := apiKeyCredential(owner, "first")
	agent := first.Spec.AgentID
	create(t, first)
	waitReady(t, first)
	claim := getClaim(g, tenancy.Agent(agent))
	g.Expect(claim.Spec.Namespace).To(Equal(owner))
	g.Expect(claim.Status.Credentials).To(ConsistOf("first"))

	g.Expect(k8s.Delete(ctx, first)).To(Succeed())
	waitGone(t, first)
	// Revoked, but the identity stays with the namespace.
	g.Eventually(func(g Gomega) {
		c := getClaim(g, tenancy.Agent(agent))
		g.Expect(c.Spec.Namespace).To(Equal(owner))
		g.Expect(c.Status.Credentials).To(BeEmpty())
		g.Expect(c.Status.LastUsedTime).NotTo(BeNil())
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())

	// The intruder retries; the owner recreates in the middle of it.
	var recreated *authv1alpha1.AgentCredential
	for i := range 4 {
		try := apiKeyCredential(intruder, fmt.Sprintf("grab-%d", i), func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = agent })
		create(t, try)
		if i == 1 {
			recreated = apiKeyCredential(owner, "first", func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = agent })
			create(t, recreated)
		}
		assertHeldWithoutKey(t, try, authv1alpha1.ReasonAgentIDConflict, owner)
		if i%2 == 0 {
			g.Expect(k8s.Delete(ctx, try)).To(Succeed())
		}
	}
	waitReady(t, recreated)
	g.Consistently(func(g Gomega) {
		list := &authv1alpha1.AgentCredentialList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace(intruder))).To(Succeed())
		for _, c := range list.Items {
			g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, authv1alpha1.ReadyCondition)).To(BeFalse(), c.Name+" became Ready")
			g.Expect(c.Status.KeyID).To(BeEmpty())
		}
	}).WithTimeout(time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// TestSimultaneousClaimsHaveOneWinner: two namespaces create credentials for
// the same new agent at the same instant (no webhook): exactly one is Ready,
// it is the one whose namespace holds the claim, and that never changes.
func TestSimultaneousClaimsHaveOneWinner(t *testing.T) {
	g := NewWithT(t)
	nsA, nsB := newNamespace(t), newNamespace(t)
	for run := range 20 {
		agent := newAgentID()
		a := apiKeyCredential(nsA, fmt.Sprintf("race-%d", run), func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = agent })
		b := apiKeyCredential(nsB, fmt.Sprintf("race-%d", run), func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = agent })
		errs := make(chan error, 2)
		go func() { errs <- k8s.Create(ctx, a) }()
		go func() { errs <- k8s.Create(ctx, b) }()
		g.Expect(<-errs).To(Succeed())
		g.Expect(<-errs).To(Succeed())
		readyOf := func(g Gomega) (bool, bool) {
			var ready [2]bool
			for i, c := range []*authv1alpha1.AgentCredential{a, b} {
				got := &authv1alpha1.AgentCredential{}
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(c), got)).To(Succeed())
				cond := meta.FindStatusCondition(got.Status.Conditions, authv1alpha1.ReadyCondition)
				g.Expect(cond).NotTo(BeNil())
				ready[i] = cond.Status == metav1.ConditionTrue
			}
			return ready[0], ready[1]
		}
		var winner string
		g.Eventually(func(g Gomega) {
			ra, rb := readyOf(g)
			g.Expect(ra != rb).To(BeTrue(), "exactly one must be Ready")
			winner = nsA
			if rb {
				winner = nsB
			}
		}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
		g.Expect(getClaim(g, tenancy.Agent(agent)).Spec.Namespace).To(Equal(winner))
		g.Consistently(func(g Gomega) {
			ra, rb := readyOf(g)
			g.Expect(ra).To(Equal(winner == nsA))
			g.Expect(rb).To(Equal(winner == nsB))
		}).WithTimeout(200 * time.Millisecond).WithPolling(50 * time.Millisecond).Should(Succeed())
	}
}

// TestUserImpersonationIsRefused: a user claimed by one namespace cannot be
// named by a UserToken elsewhere, in any spelling; a UserToken that later
// adds an agent claimed elsewhere loses its key.
func TestUserImpersonationIsRefused(t *testing.T) {
	g := NewWithT(t)
	owner, intruder := newNamespace(t), newNamespace(t)
	user := fmt.Sprintf("alice-%d@example.com", uuidCounter.Add(1))
	real := userToken(owner, "alice", user, newAgentID())
	create(t, real)
	waitReady(t, real)
	g.Expect(getClaim(g, tenancy.User(user)).Spec.Namespace).To(Equal(owner))

	for i, spelling := range []string{user, strings.ToUpper(user), "ａ" + user[1:]} {
		fake := userToken(intruder, fmt.Sprintf("alice-%d", i), spelling, newAgentID())
		create(t, fake)
		assertHeldWithoutKey(t, fake, authv1alpha1.ReasonUserConflict, owner)
	}

	// An intruder token with its own user and agent is Ready; adding the
	// owner's agent (webhook bypassed) revokes its key.
	ownerAgent := real.Spec.Agents[0]
	tok := userToken(intruder, "eve", fmt.Sprintf("eve-%d@example.com", uuidCounter.Add(1)), newAgentID())
	create(t, tok)
	tok = waitReady(t, tok)
	g.Expect(k8s.Get(ctx, hashSecretKey(tok), &corev1.Secret{})).To(Succeed())
	tok.Spec.Agents = append(tok.Spec.Agents, ownerAgent)
	g.Expect(k8s.Update(ctx, tok)).To(Succeed())
	assertHeldWithoutKey(t, tok, authv1alpha1.ReasonAgentIDConflict, owner)
	// Its own identities stay claimed by and recorded for it.
	g.Expect(getClaim(g, tenancy.Agent(tok.Spec.Agents[0])).Status.Credentials).To(ConsistOf("eve"))
}

// TestAdminDeletedClaimStaysWithItsUser: the rule when an admin deletes a
// claim that is in use is the rule for any unclaimed identity: a credential
// holding a key for it goes first, then the oldest live credential naming
// it. So the namespace using it gets it back — not one waiting with a newer
// credential, and not an older credential elsewhere that the identity was
// moved away from (by changing the claim's namespace).
func TestAdminDeletedClaimStaysWithItsUser(t *testing.T) {
	g := NewWithT(t)
	nsA, nsB := newNamespace(t), newNamespace(t)
	a := apiKeyCredential(nsA, "a")
	agent := a.Spec.AgentID
	create(t, a)
	waitReady(t, a)
	nextSecond(get(t, a))
	b := apiKeyCredential(nsB, "b", func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = agent })
	create(t, b)
	waitCondition(t, b, metav1.ConditionFalse, authv1alpha1.ReasonAgentIDConflict)
	keyBefore := get(t, a).Status.KeyID

	deleteClaim := func() types {
		c := getClaim(g, tenancy.Agent(agent))
		g.Expect(k8s.Delete(ctx, c)).To(Succeed())
		return types{uid: string(c.UID)}
	}
	old := deleteClaim()
	g.Eventually(func(g Gomega) {
		c := getClaim(g, tenancy.Agent(agent))
		g.Expect(string(c.UID)).NotTo(Equal(old.uid))
		g.Expect(c.Spec.Namespace).To(Equal(nsA))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	g.Consistently(func(g Gomega) {
		g.Expect(get(t, a).Status.KeyID).To(Equal(keyBefore), "the owner's key must survive the re-claim")
	}).WithTimeout(500 * time.Millisecond).Should(Succeed())
	waitCondition(t, b, metav1.ConditionFalse, authv1alpha1.ReasonAgentIDConflict)

	// An admin moves the identity to nsB by changing the claim's namespace:
	// a's key is revoked, b is issued.
	patch := fmt.Sprintf(`{"spec":{"namespace":%q}}`, nsB)
	g.Expect(k8s.Patch(ctx, getClaim(g, tenancy.Agent(agent)), client.RawPatch("application/merge-patch+json", []byte(patch)))).To(Succeed())
	waitReady(t, b)
	assertHeldWithoutKey(t, a, authv1alpha1.ReasonAgentIDConflict, nsB)
	g.Eventually(func(g Gomega) {
		g.Expect(getClaim(g, tenancy.Agent(agent)).Status.Credentials).To(ConsistOf("b"))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())

	// The admin deletes the claim without making a new one: b holds the
	// key, so nsB claims it back although a is older.
	old = deleteClaim()
	g.Eventually(func(g Gomega) {
		c := getClaim(g, tenancy.Agent(agent))
		g.Expect(string(c.UID)).NotTo(Equal(old.uid))
		g.Expect(c.Spec.Namespace).To(Equal(nsB))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	waitReady(t, b)
	waitCondition(t, a, metav1.ConditionFalse, authv1alpha1.ReasonAgentIDConflict)
}

// TestSleeperCannotWinAReclaim: a tenant keeps an old user token, later
// adds another namespace's agent to it (webhook bypassed; refused), and
// waits for that agent's claim to disappear. Being older does not win it:
// the namespace holding the key does.
func TestSleeperCannotWinAReclaim(t *testing.T) {
	g := NewWithT(t)
	owner, thief := newNamespace(t), newNamespace(t)
	sleeper := userToken(thief, "sleeper", fmt.Sprintf("mallory-%d@example.com", uuidCounter.Add(1)), newAgentID())
	create(t, sleeper)
	waitReady(t, sleeper)
	nextSecond(get(t, sleeper))
	victim := apiKeyCredential(owner, "victim")
	agent := victim.Spec.AgentID
	create(t, victim)
	victim = waitReady(t, victim)

	s := get(t, sleeper)
	s.Spec.Agents = append(s.Spec.Agents, agent)
	g.Expect(k8s.Update(ctx, s)).To(Succeed())
	assertHeldWithoutKey(t, s, authv1alpha1.ReasonAgentIDConflict, owner)

	c := getClaim(g, tenancy.Agent(agent))
	g.Expect(k8s.Delete(ctx, c)).To(Succeed())
	g.Eventually(func(g Gomega) {
		n := getClaim(g, tenancy.Agent(agent))
		g.Expect(n.UID).NotTo(Equal(c.UID))
		g.Expect(n.Spec.Namespace).To(Equal(owner))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	g.Consistently(func(g Gomega) {
		g.Expect(get(t, victim).Status.KeyID).To(Equal(victim.Status.KeyID))
		g.Expect(get(t, s).Status.KeyID).To(BeEmpty())
	}).WithTimeout(500 * time.Millisecond).Should(Succeed())
}

type types struct{ uid string }

// nextSecond waits until the API server's clock has left the second in
// which obj was created, so the next object is strictly newer (creation
// timestamps have one-second resolution; same-second ties have their own
// rule, tested in internal/tenancy).
func nextSecond(obj client.Object) {
	until := obj.GetCreationTimestamp().Add(time.Second)
	time.Sleep(time.Until(until))
}

// TestClaimReleasedAfterHold: a claim agentcred made stays with its
// namespace while unused for less than the hold, and is released after it;
// a claim an admin made is never released by agentcred.
func TestClaimReleasedAfterHold(t *testing.T) {
	g := NewWithT(t)
	nsA, nsB := newNamespace(t), newNamespace(t)
	a := apiKeyCredential(nsA, "a")
	agent := a.Spec.AgentID
	create(t, a)
	waitReady(t, a)
	admin := &authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(tenancy.Agent(newAgentID()))},
	}
	admin.Spec = authv1alpha1.IdentityClaimSpec{Kind: authv1alpha1.AgentIdentity, Value: strings.TrimPrefix(admin.Name, authv1alpha1.AgentClaimPrefix), Namespace: nsA}
	create(t, admin)

	// A claim agentcred made for nsA that an admin moved to nsC is the
	// admin's: never released, however long nsC leaves it unused.
	moved := apiKeyCredential(nsA, "moved")
	create(t, moved)
	waitReady(t, moved)
	movedClaim := getClaim(g, tenancy.Agent(moved.Spec.AgentID))
	patch := fmt.Sprintf(`{"spec":{"namespace":%q}}`, newNamespace(t))
	g.Expect(k8s.Patch(ctx, movedClaim, client.RawPatch("application/merge-patch+json", []byte(patch)))).To(Succeed())

	g.Expect(k8s.Delete(ctx, a)).To(Succeed())
	waitGone(t, a)
	g.Eventually(func(g Gomega) {
		g.Expect(getClaim(g, tenancy.Agent(agent)).Status.Credentials).To(BeEmpty())
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())

	// Before the hold is over the namespace keeps it.
	fakeClock.Step(controllers.DefaultClaimHold - time.Hour)
	touchClaim(t, tenancy.ClaimName(tenancy.Agent(agent)))
	touchClaim(t, admin.Name)
	b := apiKeyCredential(nsB, "b", func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = agent })
	create(t, b)
	waitCondition(t, b, metav1.ConditionFalse, authv1alpha1.ReasonAgentIDConflict)

	// After it, the claim is released and the next user claims it.
	fakeClock.Step(2 * time.Hour)
	touchClaim(t, tenancy.ClaimName(tenancy.Agent(agent)))
	touchClaim(t, admin.Name)
	touchClaim(t, movedClaim.Name)
	waitReady(t, b)
	g.Expect(getClaim(g, tenancy.Agent(agent)).Spec.Namespace).To(Equal(nsB))
	g.Consistently(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(admin), &authv1alpha1.IdentityClaim{})).To(Succeed(), "an admin-made claim was released")
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(movedClaim), &authv1alpha1.IdentityClaim{})).To(Succeed(), "a moved claim was released")
	}).WithTimeout(500 * time.Millisecond).Should(Succeed())
}

// touchClaim changes a claim's annotations so that the claim controller
// looks at it again (after the test moved the fake clock).
func touchClaim(t *testing.T, name string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"test/touched":"%d"}}}`, time.Now().UnixNano())
	c := &authv1alpha1.IdentityClaim{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Patch(ctx, c, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}
