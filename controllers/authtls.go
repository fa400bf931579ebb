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
// ConfigMap AuthCAName in Namespace. It renews each once two thirds of its
// lifetime have passed, and rewrites whatever is missing or damaged.
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
	for {
		wait := every
		if err := r.IssueOnce(ctx); err != nil {
			r.Log.Error(err, "Failed to keep the auth endpoint's TLS certificate")
			wait = 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.Clock.After(wait):
		}
	}
}

// IssueOnce brings the CA, the serving certificate and the published
// bundle up to date.
func (r *AuthTLSIssuer) IssueOnce(ctx context.Context) error {
	now := r.Clock.Now()
	ca, bundle, err := r.ensureCA(ctx, now)
	if err != nil {
		return err
	}
	if err := r.ensureServing(ctx, ca, bundle, now); err != nil {
		return err
	}
	return r.publish(ctx, bundle)
}

func (r *AuthTLSIssuer) ensureCA(ctx context.Context, now time.Time) (authcert.CA, []byte, error) {
	s, exists, err := r.getSecret(ctx, r.CANamespace, authv1alpha1.AuthCAName)
	if err != nil {
		return authcert.CA{}, nil, err
	}
	certPEM, keyPEM := s.Data[authv1alpha1.AuthCACertKey], s.Data[authv1alpha1.AuthCAKeyKey]
	if due, why := authcert.CADue(certPEM, keyPEM, now); !due {
		ca, err := authcert.ParseCA(certPEM, keyPEM)
		return ca, authcert.Bundle(certPEM, s.Data[authv1alpha1.AuthCAPreviousKey], now), err
	} else if exists {
		r.Log.Info("Replacing the auth endpoint's CA", "reason", why)
	}
	ca, err := authcert.NewCA(now)
	if err != nil {
		return authcert.CA{}, nil, err
	}
	data := map[string][]byte{authv1alpha1.AuthCACertKey: ca.CertPEM, authv1alpha1.AuthCAKeyKey: ca.KeyPEM}
	if authcert.FirstCertificate(certPEM) != nil {
		data[authv1alpha1.AuthCAPreviousKey] = authcert.FirstCertificate(certPEM)
	}
	s.Type = corev1.SecretTypeOpaque
	if err := r.writeSecret(ctx, s, exists, r.CANamespace, authv1alpha1.AuthCAName, authv1alpha1.SecretRoleAuthCA, data); err != nil {
		return authcert.CA{}, nil, fmt.Errorf("writing the auth endpoint's CA: %w", err)
	}
	return ca, authcert.Bundle(ca.CertPEM, data[authv1alpha1.AuthCAPreviousKey], now), nil
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
	if exists && s.Type != corev1.SecretTypeTLS {
		// The type is immutable: replace the Secret.
		if err := r.Client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
			return err
		}
		exists = false
	}
	s.Type = corev1.SecretTypeTLS
	if err := r.writeSecret(ctx, s, exists, r.Namespace, r.SecretName, authv1alpha1.SecretRoleAuthTLS, data); err != nil {
		return fmt.Errorf("writing the auth endpoint's certificate: %w", err)
	}
	if due {
		r.Log.Info("Issued the auth endpoint's certificate", "secret", r.SecretName, "dnsNames", r.DNSNames(), "reason", why)
	}
	return nil
}

// publish writes the CA bundle clients trust into the ConfigMap.
func (r *AuthTLSIssuer) publish(ctx context.Context, bundle []byte) error {
	cm := &corev1.ConfigMap{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: authv1alpha1.AuthCAName}, cm)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	exists := err == nil
	labels := map[string]string{authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue}
	data := map[string]string{authv1alpha1.AuthCACertKey: string(bundle)}
	if exists && maps.Equal(cm.Data, data) && cm.Labels[authv1alpha1.ManagedByLabel] == authv1alpha1.ManagedByValue {
		return nil
	}
	if !exists {
		cm.ObjectMeta = metav1.ObjectMeta{Namespace: r.Namespace, Name: authv1alpha1.AuthCAName}
	}
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	maps.Copy(cm.Labels, labels)
	cm.Data, cm.BinaryData = data, nil
	if exists {
		err = r.Client.Update(ctx, cm)
	} else {
		err = r.Client.Create(ctx, cm)
	}
	if err != nil {
		return fmt.Errorf("publishing the auth endpoint's CA: %w", err)
	}
	r.Log.Info("Published the auth endpoint's CA", "configMap", r.Namespace+"/"+authv1alpha1.AuthCAName)
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

func (r *AuthTLSIssuer) writeSecret(ctx context.Context, s *corev1.Secret, exists bool, namespace, name, role string, data map[string][]byte) error {
	if !exists {
		s.ObjectMeta = metav1.ObjectMeta{Namespace: namespace, Name: name}
	}
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels[authv1alpha1.ManagedByLabel] = authv1alpha1.ManagedByValue
	s.Labels[authv1alpha1.SecretRoleLabel] = role
	s.Data = data
	if exists {
		return r.Client.Update(ctx, s)
	}
	return r.Client.Create(ctx, s)
}
