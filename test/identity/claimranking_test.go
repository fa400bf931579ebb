package identity_test

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/internal/tenancy"
	"github.com/agrenting/agentcred/test/harness"
)

// TestSquatterOverTheClaimLimitBlocksNobody is issue 23 item 9 (review
// finding 10) with --max-claims-per-namespace=1: a namespace at its limit
// names an identity nobody uses yet. It gets no claim (ClaimLimitReached),
// so kubectl shows none; a younger credential in another namespace must
// then get the identity, not AgentIDConflict against a claim that does
// not exist. The same with --max-credentials-per-namespace=1, where the
// squatting credential is one too many (CredentialLimitReached).
func TestSquatterOverTheClaimLimitBlocksNobody(t *testing.T) {
	for _, tt := range []struct {
		name   string
		limit  func(*operator.Options)
		reason string
	}{
		{"--max-claims-per-namespace=1", func(o *operator.Options) { o.MaxClaimsPerNamespace = 1 }, authv1alpha1.ReasonClaimLimitReached},
		{"--max-credentials-per-namespace=1", func(o *operator.Options) { o.MaxCredentialsPerNamespace = 1 }, controllers.ReasonCredentialLimitReached},
	} {
		t.Run(tt.name, func(t *testing.T) { squatOverALimit(t, tt.limit, tt.reason) })
	}
}

func squatOverALimit(t *testing.T, limit func(*operator.Options), reason string) {
	g := NewWithT(t)
	mallory, finance := newNamespace(t), newNamespace(t)
	own, wanted := newAgentID(), newAgentID()
	t.Cleanup(func() {
		for _, id := range []string{own, wanted} {
			claim := &authv1alpha1.IdentityClaim{ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(tenancy.Agent(id))}}
			_ = client.IgnoreNotFound(k8s.Delete(ctx, claim))
		}
	})
	o := harness.OperatorOptions()
	limit(&o)
	_, stopOp, err := harness.StartOperator(ctx, config, o, operator.Deps{})
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() {
		if err := stopOp(); err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// mallory's one claim, then a credential naming an identity it cannot claim.
	one := apiKey(mallory, "one", own)
	g.Expect(k8s.Create(ctx, one)).To(Succeed())
	waitReason(t, one, metav1.ConditionTrue, authv1alpha1.ReasonIssued)
	squat := apiKey(mallory, "squat", wanted)
	g.Expect(k8s.Create(ctx, squat)).To(Succeed())
	squat = waitReason(t, squat, metav1.ConditionFalse, reason)
	err = k8s.Get(ctx, client.ObjectKey{Name: tenancy.ClaimName(tenancy.Agent(wanted))}, &authv1alpha1.IdentityClaim{})
	g.Expect(err).To(MatchError(ContainSubstring("not found")), "a claim over the limit exists")

	// finance, strictly younger, gets it.
	time.Sleep(time.Until(squat.CreationTimestamp.Add(time.Second)))
	mine := apiKey(finance, "mine", wanted)
	g.Expect(k8s.Create(ctx, mine)).To(Succeed())
	mine = waitReason(t, mine, metav1.ConditionTrue, authv1alpha1.ReasonIssued)
	g.Expect(mine.CreationTimestamp.After(squat.CreationTimestamp.Time)).To(BeTrue())
	g.Eventually(func(g Gomega) {
		g.Expect(claimOf(g, tenancy.Agent(wanted)).Spec.Namespace).To(Equal(finance))
	}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	g.Expect(hasHashSecret(squat)).To(BeFalse(), "the squatter got a key")
}
