// Package authcert makes the auth endpoint's serving certificate and the CA
// that signs it, and decides when either is due for renewal. It is pure:
// callers pass the time and store the PEM where they like (the controller
// keeps the CA's key in the webhook-certificate namespace, which the auth
// endpoint cannot read, and gives the endpoint only its own certificate and
// key). ECDSA P-256; the CA lives ten years, a serving certificate ninety
// days, and each is renewed once two thirds of its lifetime have passed, as
// cert-manager does by default.
package authcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert    *x509.Certificate
	key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA valid from now for CAValidity, constrained
// to sign for dnsNames only: a leaked bundle, added to a general trust
// store by mistake, vouches for nothing else.
func NewCA(now time.Time, dnsNames []string) (CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CA{}, err
	}
	serial, err := serialNumber()
	if err != nil {
		return CA{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:                serial,
		Subject:                     pkix.Name{CommonName: "agentcred auth endpoint CA", Organization: []string{"agentcred"}},
		NotBefore:                   now.Add(-backdate),
		NotAfter:                    now.Add(CAValidity),
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLenZero:              true,
		PermittedDNSDomains:         slices.Clone(dnsNames),
		PermittedDNSDomainsCritical: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return CA{}, err
	}
	return parsedCA(der, key)
}

func parsedCA(der []byte, key *ecdsa.PrivateKey) (CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return CA{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return CA{}, err
	}
	return CA{
		Cert: cert, key: key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// ParseCA reads a CA NewCA made back from its PEM. It refuses anything else:
// not a CA, or a key that is not the certificate's.
func ParseCA(certPEM, keyPEM []byte) (CA, error) {
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return CA{}, err
	}
	if !cert.IsCA {
		return CA{}, errors.New("the certificate is not a CA")
	}
	key, err := matchingKey(cert, keyPEM)
	if err != nil {
		return CA{}, fmt.Errorf("the private key: %w", err)
	}
	return parsedCA(cert.Raw, key)
}

// Issue makes a serving certificate for dnsNames, valid from now for
// ServingValidity (never past the CA's own expiry).
func (ca CA) Issue(dnsNames []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	if len(dnsNames) == 0 {
		return nil, nil, errors.New("no DNS names")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(ServingValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: dnsNames[0]},
		DNSNames:     dnsNames,
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// caState is what a CA can do at now for the endpoint's names.
type caState int

const (
	// caSigns: valid, constrained to the names, a third of its life left.
	caSigns caState = iota
	// caAging: as caSigns, but two thirds of its lifetime have passed.
	caAging
	// caUnusable: missing, not valid yet, expired or for other names.
	caUnusable
)

// assess says what ca can do at now for dnsNames, and why not when it
// cannot sign.
func assess(ca CA, dnsNames []string, now time.Time) (caState, string) {
	// Ifs, not a switch: Go's coverage does not mark a case expression as
	// run, which would hide these checks from mutation testing.
	if ca.Cert == nil {
		return caUnusable, "none"
	}
	if now.Before(ca.Cert.NotBefore) {
		return caUnusable, "not valid yet"
	}
	if !now.Before(ca.Cert.NotAfter) {
		return caUnusable, "expired"
	}
	if !slices.Equal(ca.Cert.PermittedDNSDomains, dnsNames) {
		return caUnusable, "constrained to other names"
	}
	if due(ca.Cert, now) {
		return caAging, "two thirds of its lifetime have passed"
	}
	return caSigns, ""
}

// ServingDue says whether the serving certificate certPEM (with keyPEM)
// must be reissued at now by ca for dnsNames, and why.
func ServingDue(certPEM, keyPEM []byte, ca CA, dnsNames []string, now time.Time) (bool, string) {
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return true, "no usable certificate: " + err.Error()
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		return true, "signed by another CA"
	}
	if !slices.Equal(cert.DNSNames, dnsNames) {
		return true, "its DNS names are not the endpoint's"
	}
	if _, err := matchingKey(cert, keyPEM); err != nil {
		return true, "its private key does not match: " + err.Error()
	}
	if now.Before(cert.NotBefore) {
		return true, "not valid yet"
	}
	if due(cert, now) {
		return true, "two thirds of its lifetime have passed"
	}
	return false, ""
}

// matchingKey reads keyPEM, which must be cert's private key.
func matchingKey(cert *x509.Certificate, keyPEM []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("another key")
	}
	return key, nil
}

// due: two thirds of cert's lifetime have passed at now.
func due(cert *x509.Certificate, now time.Time) bool {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return !now.Before(cert.NotBefore.Add(lifetime / 3 * 2))
}

func parseCertificate(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}
