package authcert

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

// TestPlanAuthority walks the CA through its life: a new CA is announced
// once two thirds of the signing one's lifetime have passed, signs only
// after Overlap in the bundle, and the old one stays trusted until it
// expires; an unusable signing CA is replaced at once.
func TestPlanAuthority(t *testing.T) {
	signing := mustCA(t, t0)
	aging := signing.Cert.NotBefore.Add(signing.Cert.NotAfter.Sub(signing.Cert.NotBefore) / 3 * 2)
	announced := mustCA(t, aging)
	otherNames, err := NewCA(t0, []string{"agentcred-auth.elsewhere.svc"})
	if err != nil {
		t.Fatal(err)
	}
	future := mustCA(t, t0.Add(time.Hour))
	for _, tc := range []struct {
		name    string
		in      Authority
		now     time.Time
		changed bool
		why     string
		check   func(t *testing.T, in, out Authority)
	}{
		{"a signing CA with a third of its life left", Authority{Signing: signing}, aging.Add(-time.Second), false, "", nil},
		{"nothing at all", Authority{}, t0, true, "no usable signing CA (none)", func(t *testing.T, _, out Authority) {
			if out.Signing.Cert == nil || out.Next.Cert != nil {
				t.Fatal("want a new signing CA and none announced")
			}
		}},
		{"two thirds gone", Authority{Signing: signing}, aging, true, "a new one is announced", func(t *testing.T, in, out Authority) {
			if !bytes.Equal(out.Signing.CertPEM, in.Signing.CertPEM) || out.Next.Cert == nil {
				t.Fatal("the old CA must keep signing while the new one is announced")
			}
		}},
		{"announced, within the overlap", Authority{Signing: signing, Next: announced}, announced.Cert.NotBefore.Add(backdate + Overlap - time.Second), false, "", nil},
		{"announced, after the overlap", Authority{Signing: signing, Next: announced}, announced.Cert.NotBefore.Add(backdate + Overlap), true, "it signs", func(t *testing.T, in, out Authority) {
			if !bytes.Equal(out.Signing.CertPEM, in.Next.CertPEM) || out.Next.Cert != nil || !bytes.Equal(out.Previous, in.Signing.CertPEM) {
				t.Fatal("want the announced CA signing and the old one previous")
			}
		}},
		{"signing CA for other names", Authority{Signing: otherNames}, t0, true, "constrained to other names", func(t *testing.T, in, out Authority) {
			if !bytes.Equal(out.Previous, in.Signing.CertPEM) {
				t.Fatal("the replaced CA must stay trusted")
			}
		}},
		{"signing CA not valid yet", Authority{Signing: future}, t0, true, "not valid yet", nil},
		{"signing CA expired, none announced", Authority{Signing: signing}, signing.Cert.NotAfter, true, "expired", nil},
		{"signing CA expired, one announced", Authority{Signing: signing, Next: announced}, signing.Cert.NotAfter, true, "the announced one signs", func(t *testing.T, in, out Authority) {
			if !bytes.Equal(out.Signing.CertPEM, in.Next.CertPEM) {
				t.Fatal("the announced CA must take over")
			}
		}},
		{"announced CA for other names", Authority{Signing: signing, Next: otherNames}, aging, true, "announced", func(t *testing.T, in, out Authority) {
			if out.Next.Cert == nil || bytes.Equal(out.Next.CertPEM, in.Next.CertPEM) {
				t.Fatal("an announced CA for other names must be replaced")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, changed, why, err := PlanAuthority(tc.in, names, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.changed || !strings.Contains(why, tc.why) {
				t.Fatalf("changed=%v %q, want %v containing %q", changed, why, tc.changed, tc.why)
			}
			if !changed && !bytes.Equal(out.Signing.CertPEM, tc.in.Signing.CertPEM) {
				t.Fatal("unchanged, but the signing CA differs")
			}
			if tc.check != nil {
				tc.check(t, tc.in, out)
			}
			if state, why := assess(out.Signing, names, tc.now); state == caUnusable {
				t.Fatalf("the planned signing CA cannot sign: %s", why)
			}
		})
	}
}

// TestRotationKeepsClientsOfTheBundle: a client that copied the bundle at
// any time during the overlap verifies the endpoint before and after the
// new CA signs.
func TestRotationKeepsClientsOfTheBundle(t *testing.T) {
	a, _, _, err := PlanAuthority(Authority{}, names, t0)
	if err != nil {
		t.Fatal(err)
	}
	verifies := func(bundle []byte, a Authority, now time.Time) bool {
		certPEM, _ := mustIssue(t, a.Signing, names, now)
		cert, _ := parseCertificate(certPEM)
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(bundle)
		_, err := cert.Verify(x509.VerifyOptions{DNSName: names[0], Roots: roots, CurrentTime: now})
		return err == nil
	}
	aging := a.Signing.Cert.NotBefore.Add(a.Signing.Cert.NotAfter.Sub(a.Signing.Cert.NotBefore) / 3 * 2)
	announced, changed, _, err := PlanAuthority(a, names, aging)
	if err != nil || !changed {
		t.Fatalf("no CA announced: %v", err)
	}
	copied := announced.Bundle(aging) // a client copies the bundle the day the new CA is announced
	if !verifies(copied, announced, aging) {
		t.Fatal("the copied bundle does not verify the current certificate")
	}
	after := aging.Add(Overlap + backdate)
	rotated, changed, _, err := PlanAuthority(announced, names, after)
	if err != nil || !changed || bytes.Equal(rotated.Signing.CertPEM, a.Signing.CertPEM) {
		t.Fatalf("the new CA does not sign after the overlap: %v", err)
	}
	if !verifies(copied, rotated, after) {
		t.Fatal("a client holding the bundle from the overlap fails after the new CA signs")
	}
	if !verifies(rotated.Bundle(after), rotated, after) {
		t.Fatal("the new bundle does not verify the new certificate")
	}
	if !bytes.Contains(rotated.Bundle(after), a.Signing.CertPEM) {
		t.Fatal("the old CA left the bundle before it expired")
	}
	if bytes.Contains(rotated.Bundle(a.Signing.Cert.NotAfter), a.Signing.CertPEM) {
		t.Fatal("an expired CA is still in the bundle")
	}
}

func TestAuthorityDataRoundTrips(t *testing.T) {
	a := Authority{Signing: mustCA(t, t0), Next: mustCA(t, t0), Previous: mustCA(t, t0).CertPEM}
	back := ParseAuthority(a.Data())
	if !bytes.Equal(back.Signing.CertPEM, a.Signing.CertPEM) || !bytes.Equal(back.Signing.KeyPEM, a.Signing.KeyPEM) ||
		!bytes.Equal(back.Next.CertPEM, a.Next.CertPEM) || !bytes.Equal(back.Previous, a.Previous) {
		t.Fatal("the CA Secret's data does not round-trip")
	}
	// Damaged parts are left out, for PlanAuthority to replace.
	data := a.Data()
	data[keyNextKey] = []byte("damaged")
	data[keyPreviousCert] = []byte("damaged")
	damaged := ParseAuthority(data)
	if damaged.Next.Cert != nil || damaged.Previous != nil || damaged.Signing.Cert == nil {
		t.Fatal("damaged parts were kept, or a good one dropped")
	}
	if _, ok := (Authority{Signing: a.Signing}).Data()[keyNextCert]; ok {
		t.Fatal("an empty announced CA was written")
	}
}
