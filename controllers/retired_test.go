package controllers_test

import (
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/credential"
)

// Issue 23 item 8 against the real API server, as the security review's
// recipe does it: the tenant patches status.keyID (the /status subresource)
// to a retired key's keyID and writes that key back into its agent Secret.

// writeBackRetired is the tenant's move, in the recipe's order.
func writeBackRetired(t *testing.T, cred *authv1alpha1.AgentCredential, key string) {
	t.Helper()
	g := NewWithT(t)
	status := fmt.Sprintf(`{"status":{"keyID":%q}}`, credential.KeyID(key))
	g.Expect(k8s.Status().Patch(ctx, get(t, cred), client.RawPatch("application/merge-patch+json", []byte(status)))).To(Succeed())
	g.Expect(get(t, cred).Status.KeyID).To(Equal(credential.KeyID(key)))
	s := agentSecret(t, cred.Namespace, cred.Name)
	s.Data[authv1alpha1.AgentSecretAPIKey] = []byte(key)
	g.Expect(k8s.Update(ctx, s)).To(Succeed())
}

// assertNeverVerifiesAgain: the controller answers the write-back with a
// key of its own (the agent Secret does not keep the retired key), the
// record never accepts the retired key, the key in the agent Secret is the
// record's current one and the status names it; no record was rebuilt.
func assertNeverVerifiesAgain(t *testing.T, cred *authv1alpha1.AgentCredential, retired string) {
	t.Helper()
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		key := string(agentSecret(t, cred.Namespace, cred.Name).Data[authv1alpha1.AgentSecretAPIKey])
		g.Expect(key).NotTo(Equal(retired), "the agent Secret kept the retired key")
		rec, err := tryHashRecord(cred)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(rec.Accepts(credential.DigestOf(retired), fakeClock.Now())).To(BeFalse(), "the retired key verifies again")
		g.Expect(rec.Current.Digest.Equal(credential.DigestOf(key))).To(BeTrue(), "the key in the agent Secret does not verify")
		c := get(t, cred)
		g.Expect(c.Status.KeyID).To(Equal(credential.KeyID(key)))
		g.Expect(readyMessage(c)).To(ContainSubstring("is issued"))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	waitEvent(t, cred, controllers.EventReissued)
	g.Expect(eventReasons(t, cred)).NotTo(ContainElement(controllers.EventHashRepaired), "the intact hash record was rebuilt from the status")
	// Nothing that happens later revives it either.
	pokeAndWaitForReconcile(t, cred)
	rec := hashRecord(t, cred)
	g.Expect(rec.Accepts(credential.DigestOf(retired), fakeClock.Now())).To(BeFalse())
	g.Expect(rec.IsRetired(credential.KeyID(retired))).To(BeTrue())
}

// TestRetiredKeyNeverReturnsThroughStatus: after a rotation requested
// because of a leak, the tenant cannot bring the leaked key back.
func TestRetiredKeyNeverReturnsThroughStatus(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	cred := apiKeyCredential(ns, "leaked")
	create(t, cred)
	cred = waitReady(t, cred)
	leaked := string(agentSecret(t, ns, "leaked").Data[authv1alpha1.AgentSecretAPIKey])

	annotate(t, cred, authv1alpha1.RotateAnnotation, "leak-2026-12-04")
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	g.Expect(hashRecord(t, cred).Accepts(credential.DigestOf(leaked), fakeClock.Now())).To(BeFalse())

	writeBackRetired(t, cred, leaked)
	assertNeverVerifiesAgain(t, cred, leaked)
}

// TestExpiredKeyNeverReturnsAfterRenewal: an expired key, renewed by
// moving spec.expiresAt (a new key), stays dead when written back.
func TestExpiredKeyNeverReturnsAfterRenewal(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	expiresAt := fakeClock.Now().Add(time.Hour).UTC().Truncate(time.Second)
	cred := apiKeyCredential(ns, "renewed", func(c *authv1alpha1.AgentCredential) {
		c.Spec.ExpiresAt = &metav1.Time{Time: expiresAt}
	})
	create(t, cred)
	cred = waitReady(t, cred)
	expired := string(agentSecret(t, ns, "renewed").Data[authv1alpha1.AgentSecretAPIKey])
	fakeClock.SetTime(expiresAt)
	poke(t, cred)
	cred = waitCondition(t, cred, metav1.ConditionFalse, authv1alpha1.ReasonExpired)

	later := fakeClock.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	ext := get(t, cred)
	patch := client.MergeFrom(ext.DeepCopy())
	ext.Spec.ExpiresAt = &metav1.Time{Time: later}
	g.Expect(k8s.Patch(ctx, ext, patch)).To(Succeed())
	cred = waitKeyChange(t, cred, cred.Status.KeyID)
	waitEvent(t, cred, controllers.EventRenewed)

	writeBackRetired(t, cred, expired)
	assertNeverVerifiesAgain(t, cred, expired)
	g.Expect(hashRecord(t, cred).ExpiresAt).To(BeTemporally("==", later))
}
