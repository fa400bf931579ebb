package authcert

import (
	"bytes"
	"encoding/pem"
	"time"
)

// Keys of the CA Secret's data.
const (
	keySigningCert  = "ca.crt"
	keySigningKey   = "ca.key"
	keyNextCert     = "next-ca.crt"
	keyNextKey      = "next-ca.key"
	keyPreviousCert = "previous-ca.crt"
)

// Authority is what the CA Secret holds: the CA that signs the serving
// certificate, the one announced to take over (in the bundle, not signing
// yet), and the one it replaced (a certificate only, trusted until it
// expires). A zero CA is none.
type Authority struct {
	Signing  CA
	Next     CA
	Previous []byte
}

// ParseAuthority reads the CA Secret's data. A part that does not parse is
// left out (and PlanAuthority replaces it).
func ParseAuthority(data map[string][]byte) Authority {
	var a Authority
	if ca, err := ParseCA(data[keySigningCert], data[keySigningKey]); err == nil {
		a.Signing = ca
	}
	if ca, err := ParseCA(data[keyNextCert], data[keyNextKey]); err == nil {
		a.Next = ca
	}
	if _, err := parseCertificate(data[keyPreviousCert]); err == nil {
		a.Previous = data[keyPreviousCert]
	}
	return a
}

// Data is a as the CA Secret's data.
func (a Authority) Data() map[string][]byte {
	data := map[string][]byte{keySigningCert: a.Signing.CertPEM, keySigningKey: a.Signing.KeyPEM}
	if a.Next.Cert != nil {
		data[keyNextCert], data[keyNextKey] = a.Next.CertPEM, a.Next.KeyPEM
	}
	if a.Previous != nil {
		data[keyPreviousCert] = a.Previous
	}
	return data
}

// PlanAuthority is the CA Secret's next state at now, for a serving
// certificate for dnsNames, whether it changed, and why:
//   - while the signing CA has a third of its life left, nothing changes;
//   - then a new CA is announced: it enters the bundle clients trust, and
//     signs nothing for Overlap, so clients that copy the bundle into a file
//     have that long to take the new one;
//   - after Overlap it signs (the serving certificate is reissued from it)
//     and the old one stays in the bundle until it expires;
//   - a signing CA that is missing, damaged, not valid yet or constrained to
//     other names is replaced at once by the announced one if it can sign,
//     else by a new one (its clients must fetch the bundle again: without
//     the old key there is nothing to overlap with).
func PlanAuthority(a Authority, dnsNames []string, now time.Time) (Authority, bool, string, error) {
	if state, _ := assess(a.Next, dnsNames, now); a.Next.Cert != nil && state != caSigns {
		a.Next = CA{} // for other names, or itself aging: announce another
	}
	switch state, why := assess(a.Signing, dnsNames, now); state {
	case caSigns:
		return a, false, "", nil
	case caUnusable:
		if a.Next.Cert != nil {
			return promote(a), true, "the signing CA is unusable (" + why + "); the announced one signs", nil
		}
		ca, err := NewCA(now, dnsNames)
		if err != nil {
			return a, false, "", err
		}
		return Authority{Signing: ca, Previous: a.Signing.CertPEM}, true, "no usable signing CA (" + why + "); a new one signs at once", nil
	}
	if a.Next.Cert == nil {
		ca, err := NewCA(now, dnsNames)
		if err != nil {
			return a, false, "", err
		}
		a.Next = ca
		return a, true, "two thirds of the signing CA's lifetime have passed; a new one is announced", nil
	}
	if now.Before(a.Next.Cert.NotBefore.Add(backdate + Overlap)) {
		return a, false, "", nil
	}
	return promote(a), true, "the announced CA has been in the bundle for the overlap; it signs", nil
}

// promote makes the announced CA the signing one.
func promote(a Authority) Authority {
	return Authority{Signing: a.Next, Previous: a.Signing.CertPEM}
}

// Bundle is what clients trust at now: the signing CA, the announced one,
// and the previous one while it is still valid.
func (a Authority) Bundle(now time.Time) []byte {
	out := bytes.Clone(a.Signing.CertPEM)
	if a.Next.Cert != nil {
		out = append(out, a.Next.CertPEM...)
	}
	if prev, err := parseCertificate(a.Previous); err == nil && now.Before(prev.NotAfter) && !bytes.Equal(a.Previous, a.Signing.CertPEM) {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: prev.Raw})...)
	}
	return out
}
