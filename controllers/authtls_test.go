package controllers_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/authcert"
)

// issuer keeps the auth endpoint's TLS in a namespace of the test's own
// (as operator namespace) and another (as the CA's), on its own clock.
func issuer(t *testing.T, clk *clocktesting.FakeClock) *controllers.AuthTLSIssuer {
	return &controllers.AuthTLSIssuer{
		Client: k8s, APIReader: k8s, Namespace: newNamespace(t), CANamespace: newNamespace(t),
		SecretName: "agentcred-auth-tls", ServiceName: "agentcred-auth", Clock: clk, Log: logr.Discard(),
	}
}

func getSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	NewWithT(t).Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
	return s
}

func signedBy(t *testing.T, certPEM, caPEM []byte) bool {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	block, _ = pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return cert.CheckSignatureFrom(ca) == nil
}

// TestAuthTLSIssuerRotatesWithoutBreakingClients: the first pass makes the
// CA, publishes it and issues the certificate; years later a new CA is
// published while the old one still signs, and signs only after the
// overlap, so a client that copied the bundle during the overlap never
// sees a certificate it cannot verify.
func TestAuthTLSIssuerRotatesWithoutBreakingClients(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	r := issuer(t, clk)
	g.Expect(r.IssueOnce(ctx)).To(Succeed())

	caSecret := getSecret(t, r.CANamespace, authv1alpha1.AuthCAName)
	first := authcert.ParseAuthority(caSecret.Data)
	g.Expect(first.Signing.Cert).NotTo(BeNil())
	g.Expect(first.Signing.Cert.PermittedDNSDomains).To(Equal(r.DNSNames()))
	tlsSecret := getSecret(t, r.Namespace, r.SecretName)
	g.Expect(tlsSecret.Type).To(Equal(corev1.SecretTypeTLS))
	g.Expect(tlsSecret.Data).NotTo(HaveKey("ca.key"), "the endpoint's Secret must not carry a CA key")
	g.Expect(signedBy(t, tlsSecret.Data[corev1.TLSCertKey], first.Signing.CertPEM)).To(BeTrue())
	cm := &corev1.ConfigMap{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: authv1alpha1.AuthCAName}, cm)).To(Succeed())
	g.Expect(cm.Data[authv1alpha1.AuthCACertKey]).To(Equal(string(first.Signing.CertPEM)))
	// Nothing changes on a pass with nothing due.
	rv := tlsSecret.ResourceVersion
	g.Expect(r.IssueOnce(ctx)).To(Succeed())
	g.Expect(getSecret(t, r.Namespace, r.SecretName).ResourceVersion).To(Equal(rv))

	// Two thirds into the CA's ten years: a new CA is announced, the old
	// one still signs (the serving certificate, renewed, is still its).
	clk.SetTime(first.Signing.Cert.NotBefore.Add(first.Signing.Cert.NotAfter.Sub(first.Signing.Cert.NotBefore) / 3 * 2))
	g.Expect(r.IssueOnce(ctx)).To(Succeed())
	announced := authcert.ParseAuthority(getSecret(t, r.CANamespace, authv1alpha1.AuthCAName).Data)
	g.Expect(announced.Next.Cert).NotTo(BeNil())
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: authv1alpha1.AuthCAName}, cm)).To(Succeed())
	copied := []byte(cm.Data[authv1alpha1.AuthCACertKey]) // a proxy copies the bundle now
	g.Expect(bytes.Contains(copied, announced.Next.CertPEM)).To(BeTrue(), "the new CA must be published before it signs")
	tlsSecret = getSecret(t, r.Namespace, r.SecretName)
	g.Expect(signedBy(t, tlsSecret.Data[corev1.TLSCertKey], first.Signing.CertPEM)).To(BeTrue(), "the old CA must keep signing during the overlap")

	// After the overlap the new CA signs; the copied bundle still verifies.
	clk.Step(authcert.Overlap + 10*time.Minute)
	g.Expect(r.IssueOnce(ctx)).To(Succeed())
	tlsSecret = getSecret(t, r.Namespace, r.SecretName)
	g.Expect(signedBy(t, tlsSecret.Data[corev1.TLSCertKey], announced.Next.CertPEM)).To(BeTrue(), "the announced CA must sign after the overlap")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(copied)
	block, _ := pem.Decode(tlsSecret.Data[corev1.TLSCertKey])
	cert, err := x509.ParseCertificate(block.Bytes)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = cert.Verify(x509.VerifyOptions{DNSName: r.DNSNames()[0], Roots: roots, CurrentTime: clk.Now()})
	g.Expect(err).NotTo(HaveOccurred(), "a client holding the bundle from the overlap must verify the new certificate")
}

// TestAuthTLSIssuerNeverTakesOverForeignObjects: a Secret or ConfigMap
// under agentcred's names that agentcred did not create (an admin's, or
// cert-manager's) is left as it is, with an error that says what to do; one
// of agentcred's own of the wrong type is replaced.
func TestAuthTLSIssuerNeverTakesOverForeignObjects(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	r := issuer(t, clocktesting.NewFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)))
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.SecretName},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: []byte("theirs"), corev1.TLSPrivateKeyKey: []byte("theirs")}}
	g.Expect(k8s.Create(ctx, foreign)).To(Succeed())
	err := r.IssueOnce(ctx)
	g.Expect(err).To(MatchError(ContainSubstring("is not agentcred's")))
	g.Expect(err).To(MatchError(ContainSubstring("--auth-tls-secret-name")))
	g.Expect(getSecret(t, r.Namespace, r.SecretName).Data[corev1.TLSCertKey]).To(Equal([]byte("theirs")))
	g.Expect(k8s.Delete(ctx, foreign)).To(Succeed())

	// The bundle was published before the Secret was refused; replace it
	// with one of someone else's.
	theirMap := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: authv1alpha1.AuthCAName}, Data: map[string]string{"ca.crt": "theirs"}}
	g.Expect(k8s.Delete(ctx, theirMap)).To(Succeed())
	g.Expect(k8s.Create(ctx, theirMap)).To(Succeed())
	g.Expect(r.IssueOnce(ctx)).To(MatchError(ContainSubstring("ConfigMap")))
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(theirMap), theirMap)).To(Succeed())
	g.Expect(theirMap.Data["ca.crt"]).To(Equal("theirs"))
	g.Expect(k8s.Delete(ctx, theirMap)).To(Succeed())

	// Our own CA Secret, damaged into the wrong (immutable) type: replaced.
	g.Expect(r.IssueOnce(ctx)).To(Succeed())
	g.Expect(k8s.Delete(ctx, getSecret(t, r.CANamespace, authv1alpha1.AuthCAName))).To(Succeed())
	g.Expect(k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: r.CANamespace, Name: authv1alpha1.AuthCAName, Labels: map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue}},
		Type:       corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: []byte("x"), corev1.TLSPrivateKeyKey: []byte("x")},
	})).To(Succeed())
	g.Expect(r.IssueOnce(ctx)).To(Succeed())
	repaired := getSecret(t, r.CANamespace, authv1alpha1.AuthCAName)
	g.Expect(repaired.Type).To(Equal(corev1.SecretTypeOpaque))
	g.Expect(authcert.ParseAuthority(repaired.Data).Signing.Cert).NotTo(BeNil())
}
