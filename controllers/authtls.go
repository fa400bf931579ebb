package controllers

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/authcert"
)

// AuthTLSIssuer keeps the auth endpoint's serving certificate: a CA in the
// Secret AuthCAName in CANamespace (apart from the operator namespace, whose
// Secrets the auth endpoint reads, so the endpoint never holds the CA key),
// a certificate for the endpoint's Service names in the kubernetes.io/tls
// Secret SecretName in Namespace (which the auth pods mount; their
// certificate watcher reloads it), and the CA bundle for clients in the
// ConfigMap AuthCAName in Namespace. It renews the certificate once two
// thirds of its lifetime have passed, changes CA as authcert.PlanAuthority
// says (announced in the bundle before it signs), rewrites whatever of its
// own is missing or damaged, and never overwrites an object under these
// names that it did not create.
type AuthTLSIssuer struct {
	Client    client.Client
	APIReader client.Reader
	// Namespace is the operator namespace; CANamespace keeps the CA.
	Namespace, CANamespace string
	SecretName             string
	// ServiceName is the auth endpoint's Service: the certificate names
	// <ServiceName>.<Namespace>.svc and its cluster.local form.
	ServiceName string
	Clock       clock.Clock
	// Every is how often it checks (and repairs); 0 means five minutes.
	Every time.Duration
	Log   logr.Logger
}

// NeedLeaderElection is true: one writer.
func (r *AuthTLSIssuer) NeedLeaderElection() bool { return true }

// DNSNames are the names the serving certificate is for.
func (r *AuthTLSIssuer) DNSNames() []string {
	svc := r.ServiceName + "." + r.Namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// Start checks at once, then every Every, until ctx ends.
func (r *AuthTLSIssuer) Start(ctx context.Context) error {
	every := r.Every
	if every == 0 {
		every = 5 * time.Minute
	}
	repeat(ctx, r.Clock, every, nil, r.Log, "Failed to keep the auth endpoint's TLS certificate", r.IssueOnce)
	return nil
}

// IssueOnce brings the CA, the published bundle and the serving
// certificate up to date, in that order: clients can read a new CA before
// anything is signed by it.
func (r *AuthTLSIssuer) IssueOnce(ctx context.Context) error {
	now := r.Clock.Now()
	authority, err := r.ensureCA(ctx, now)
	if err != nil {
		return err
	}
	bundle := authority.Bundle(now)
	if err := r.publish(ctx, bundle); err != nil {
		return err
	}
	return r.ensureServing(ctx, authority.Signing, bundle, now)
}

func (r *AuthTLSIssuer) ensureCA(ctx context.Context, now time.Time) (authcert.Authority, error) {
	s, exists, err := r.getSecret(ctx, r.CANamespace, authv1alpha1.AuthCAName)
	if err != nil {
		return authcert.Authority{}, err
	}
	authority, changed, why, err := authcert.PlanAuthority(authcert.ParseAuthority(s.Data), r.DNSNames(), now)
	if err != nil || !changed {
		return authority, err
	}
	if err := r.writeSecret(ctx, s, exists, secretSpec{r.CANamespace, authv1alpha1.AuthCAName, authv1alpha1.SecretRoleAuthCA, corev1.SecretTypeOpaque}, authority.Data()); err != nil {
		return authcert.Authority{}, fmt.Errorf("writing the auth endpoint's CA: %w", err)
	}
	r.Log.Info("Changed the auth endpoint's CA", "reason", why, "secret", r.CANamespace+"/"+authv1alpha1.AuthCAName)
	return authority, nil
}

func (r *AuthTLSIssuer) ensureServing(ctx context.Context, ca authcert.CA, bundle []byte, now time.Time) error {
	s, exists, err := r.getSecret(ctx, r.Namespace, r.SecretName)
	if err != nil {
		return err
	}
	certPEM, keyPEM := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	due, why := authcert.ServingDue(certPEM, keyPEM, ca, r.DNSNames(), now)
	if !due && bytes.Equal(s.Data[authv1alpha1.AuthCACertKey], bundle) && s.Type == corev1.SecretTypeTLS {
		return nil
	}
	if due {
		if certPEM, keyPEM, err = ca.Issue(r.DNSNames(), now); err != nil {
			return err
		}
	}
	data := map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM, authv1alpha1.AuthCACertKey: bundle}
	if err := r.writeSecret(ctx, s, exists, secretSpec{r.Namespace, r.SecretName, authv1alpha1.SecretRoleAuthTLS, corev1.SecretTypeTLS}, data); err != nil {
		return fmt.Errorf("writing the auth endpoint's certificate: %w", err)
	}
	if due {
		r.Log.Info("Issued the auth endpoint's certificate", "secret", r.Namespace+"/"+r.SecretName, "dnsNames", r.DNSNames(), "reason", why)
	}
	return nil
}

// notOurs refuses to overwrite an object agentcred did not create: the
// names are agentcred's, but an admin's (or cert-manager's) object under
// one of them is theirs, and fighting over it every few minutes helps
// nobody.
func notOurs(kind, namespace, name string, labels map[string]string) error {
	if labels[authv1alpha1.ManagedByLabel] == authv1alpha1.ManagedByValue {
		return nil
	}
	return fmt.Errorf("%s %s/%s exists and is not agentcred's (no %s=%s label): agentcred does not overwrite it; delete it, or give agentcred another name (--auth-tls-secret-name)",
		kind, namespace, name, authv1alpha1.ManagedByLabel, authv1alpha1.ManagedByValue)
}

// publish writes the CA bundle clients trust into the ConfigMap.
func (r *AuthTLSIssuer) publish(ctx context.Context, bundle []byte) error {
	cm := &corev1.ConfigMap{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: authv1alpha1.AuthCAName}, cm)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	exists := err == nil
	if exists {
		if err := notOurs("ConfigMap", r.Namespace, authv1alpha1.AuthCAName, cm.Labels); err != nil {
			return err
		}
	}
	data := map[string]string{authv1alpha1.AuthCACertKey: string(bundle)}
	if exists && maps.Equal(cm.Data, data) && len(cm.BinaryData) == 0 {
		return nil
	}
	if !exists {
		cm.ObjectMeta = metav1.ObjectMeta{Namespace: r.Namespace, Name: authv1alpha1.AuthCAName,
			Labels: map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue}}
	}
	cm.Data, cm.BinaryData = data, nil
	if exists {
		err = r.Client.Update(ctx, cm)
	} else {
		err = r.Client.Create(ctx, cm)
	}
	if err != nil {
		return fmt.Errorf("publishing the auth endpoint's CA: %w", err)
	}
	r.Log.Info("Published the auth endpoint's CA bundle", "configMap", r.Namespace+"/"+authv1alpha1.AuthCAName)
	return nil
}

func (r *AuthTLSIssuer) getSecret(ctx context.Context, namespace, name string) (*corev1.Secret, bool, error) {
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return &corev1.Secret{}, false, nil
	}
	return s, err == nil, err
}

// secretSpec is where a Secret the issuer keeps lives and what it is.
type secretSpec struct {
	namespace, name, role string
	typ                   corev1.SecretType
}

// writeSecret writes data into the Secret of spec, s as read (exists says
// whether it was there). It never takes over a Secret agentcred did not
// create, and replaces one of the wrong type (immutable).
func (r *AuthTLSIssuer) writeSecret(ctx context.Context, s *corev1.Secret, exists bool, spec secretSpec, data map[string][]byte) error {
	if exists {
		if err := notOurs("Secret", spec.namespace, spec.name, s.Labels); err != nil {
			return err
		}
		if s.Type != spec.typ {
			if err := r.Client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
				return err
			}
			exists = false
		}
	}
	if !exists {
		s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: spec.namespace, Name: spec.name}, Type: spec.typ}
	}
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels[authv1alpha1.ManagedByLabel] = authv1alpha1.ManagedByValue
	s.Labels[authv1alpha1.SecretRoleLabel] = spec.role
	s.Data = data
	if exists {
		return r.Client.Update(ctx, s)
	}
	return r.Client.Create(ctx, s)
}
