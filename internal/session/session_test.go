package session

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	t0    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	agent = "6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"
)

func mustKey(t testing.TB, created time.Time) Key {
	k, err := NewKey(created, created.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func claims() Claims {
	return Claims{AgentID: agent, KeyID: "0123456789ab", Credential: "agents/billing", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
}

func TestMintAndParse(t *testing.T) {
	k := mustKey(t, t0.Add(-time.Hour))
	ring := &Keyring{Keys: []Key{k}}
	tok, err := Mint(claims(), k)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "as_") || len(tok) > MaxTokenLen {
		t.Fatalf("token %q has the wrong shape", tok[:10])
	}
	got, err := Parse(tok, ring, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if got != claims() {
		t.Fatalf("Parse = %+v, want %+v", got, claims())
	}

	other := mustKey(t, t0.Add(-time.Hour))
	flipped := []byte(tok)
	if flipped[len(flipped)-5] == 'A' {
		flipped[len(flipped)-5] = 'B'
	} else {
		flipped[len(flipped)-5] = 'A'
	}
	raw, _ := base64.RawURLEncoding.DecodeString(tok[3:])
	raw[25] ^= 0xff // tamper with the agent
	tampered := "as_" + base64.RawURLEncoding.EncodeToString(raw)
	tests := []struct {
		name    string
		token   string
		ring    *Keyring
		now     time.Time
		wantErr error
	}{
		{"expired", tok, ring, t0.Add(time.Hour), ErrExpired},
		{"signed with an unknown key", tok, &Keyring{Keys: []Key{other}}, t0, ErrUnknownKey},
		{"signed with a retired key", tok, &Keyring{Keys: []Key{{ID: k.ID, Secret: k.Secret, ExpiresAt: t0}}}, t0.Add(time.Minute), ErrUnknownKey},
		{"forged signature", tok[:len(tok)-4] + "AAAA", ring, t0, ErrBadSignature},
		{"tampered claims", tampered, ring, t0, ErrBadSignature},
		{"bit flip", string(flipped), ring, t0, ErrBadSignature},
		{"truncated", tok[:len(tok)/2], ring, t0, ErrMalformed},
		{"empty", "", ring, t0, ErrMalformed},
		{"prefix only", "as_", ring, t0, ErrMalformed},
		{"wrong prefix", "ak_" + tok[3:], ring, t0, ErrMalformed},
		{"not base64", "as_!!!!", ring, t0, ErrMalformed},
		{"oversized", "as_" + strings.Repeat("A", MaxTokenLen), ring, t0, ErrMalformed},
		{"no keyring", tok, nil, t0, ErrUnknownKey},
		// The base64 decoder would skip CR and LF: a valid token with one
		// inside must still be refused (mutation: drop the isBase64URL loop).
		{"CR inside an otherwise valid token", tok[:20] + "\r" + tok[20:], ring, t0, ErrMalformed},
		{"LF inside an otherwise valid token", tok[:20] + "\n" + tok[20:], ring, t0, ErrMalformed},
		{"padding", tok + "=", ring, t0, ErrMalformed},
		{"one byte short of the MAC", "as_" + base64.RawURLEncoding.EncodeToString(mustDecode(t, tok)[:len(mustDecode(t, tok))-1]), ring, t0, ErrMalformed},
		{"expires this very second", tok, ring, claims().ExpiresAt, ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.token, tt.ring, tt.now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func mustDecode(t *testing.T, tok string) []byte {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(tok[3:])
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestParseKeyringRefusesEachDefectAlone: one defect per case, so that
// dropping any one check is caught (mutation: drop `len(k.Secret) < 32`).
func TestParseKeyringRefusesEachDefectAlone(t *testing.T) {
	good := mustKey(t, t0)
	encode := func(keys ...Key) map[string][]byte { return (&Keyring{Keys: keys}).Data() }
	if _, err := ParseKeyring(encode(good)); err != nil {
		t.Fatalf("a good keyring: %v", err)
	}
	short := good
	short.Secret = good.Secret[:31]
	badID := good
	badID.ID = "0102030"
	for name, data := range map[string]map[string][]byte{
		"secret of 31 bytes":  encode(short),
		"ID of 7 hex digits":  encode(badID),
		"one bad key of two":  encode(good, short),
		"no keyring data key": {},
		"not JSON":            {SecretDataKey: []byte("{")},
	} {
		if _, err := ParseKeyring(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMintRejectsBadClaims(t *testing.T) {
	k := mustKey(t, t0)
	for name, mutate := range map[string]func(*Claims){
		"agent not a UUID": func(c *Claims) { c.AgentID = "agent-1" },
		"bad keyID":        func(c *Claims) { c.KeyID = "xyz" },
		"no credential":    func(c *Claims) { c.Credential = "" },
		"huge credential":  func(c *Claims) { c.Credential = strings.Repeat("a", 400) },
	} {
		c := claims()
		mutate(&c)
		if _, err := Mint(c, k); err == nil {
			t.Errorf("%s: Mint succeeded", name)
		}
	}
	if _, err := Mint(claims(), Key{ID: "zz", Secret: make([]byte, 32)}); err == nil {
		t.Error("Mint with a malformed key ID succeeded")
	}
}

func TestRotateAndSigningKey(t *testing.T) {
	every, maxTTL := 24*time.Hour, 24*time.Hour
	ring, changed, err := Rotate(nil, t0, every, maxTTL)
	if err != nil || !changed || len(ring.Keys) != 1 {
		t.Fatalf("first Rotate = %v %v %v", ring, changed, err)
	}
	first := ring.Keys[0]
	if k, ok := ring.SigningKey(t0); !ok || k.ID != first.ID {
		t.Fatal("the only key must sign even during its propagation delay")
	}
	if _, changed, _ := Rotate(ring, t0.Add(23*time.Hour), every, maxTTL); changed {
		t.Fatal("rotated before the key was a day old")
	}
	ring, changed, _ = Rotate(ring, t0.Add(every), every, maxTTL)
	if !changed || len(ring.Keys) != 2 {
		t.Fatalf("second Rotate: changed=%v keys=%d", changed, len(ring.Keys))
	}
	second := ring.Keys[1]
	if k, _ := ring.SigningKey(t0.Add(every)); k.ID != first.ID {
		t.Fatal("a new key signed before its propagation delay passed")
	}
	if k, _ := ring.SigningKey(t0.Add(every + PropagationDelay)); k.ID != second.ID {
		t.Fatal("the new key did not take over after its propagation delay")
	}
	// A token signed by the first key at the last moment it signs stays
	// verifiable for its whole TTL.
	lastSigned := t0.Add(every + PropagationDelay - time.Second)
	tok, _ := Mint(Claims{AgentID: agent, KeyID: "0123456789ab", Credential: "a/b", IssuedAt: lastSigned, ExpiresAt: lastSigned.Add(maxTTL)}, first)
	if _, err := Parse(tok, ring, lastSigned.Add(maxTTL-time.Second)); err != nil {
		t.Fatalf("a token outlived its signing key: %v", err)
	}
	// Much later the first key is dropped.
	ring, _, _ = Rotate(ring, first.ExpiresAt, every, maxTTL)
	for _, k := range ring.Keys {
		if k.ID == first.ID {
			t.Fatal("expired key not dropped")
		}
	}
	back, err := ParseKeyring(ring.Data())
	if err != nil || len(back.Keys) != len(ring.Keys) {
		t.Fatalf("keyring round trip: %v", err)
	}
	for _, bad := range []map[string][]byte{{}, {SecretDataKey: []byte("{")}, {SecretDataKey: []byte(`[{"id":"zz","secret":""}]`)}} {
		if _, err := ParseKeyring(bad); err == nil {
			t.Errorf("ParseKeyring(%q) succeeded", bad)
		}
	}
	if _, ok := (&Keyring{}).SigningKey(t0); ok {
		t.Fatal("empty keyring produced a signing key")
	}
}

// FuzzParse: session tokens arrive from anyone; parsing must never panic,
// and nothing but a token signed with the keyring's key may verify.
func FuzzParse(f *testing.F) {
	k := Key{ID: "01020304", Secret: []byte("0123456789abcdef0123456789abcdef"), ExpiresAt: t0.Add(100 * time.Hour)}
	ring := &Keyring{Keys: []Key{k}}
	tok, _ := Mint(claims(), k)
	// tok with a CR/LF in the middle: everything else about it is valid, so
	// only the canonical-form check refuses it.
	for _, s := range []string{tok, "", "as_", tok[:40], tok + "A", "as_AQID", tok[:30] + "\r\n" + tok[30:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s, ring, t0)
		if err == nil && s != tok {
			if again, _ := Mint(c, k); again != s {
				t.Fatalf("accepted a token the key did not sign: %q", s)
			}
		}
	})
}

// TestTokenLimits: the longest credential name mints a token of at most
// MaxTokenLen that parses (mutations: `>=` for `>` in Mint and Parse), one
// character more is refused; only the base64url alphabet is accepted.
func TestTokenLimits(t *testing.T) {
	k := mustKey(t, t0.Add(-time.Hour))
	ring := &Keyring{Keys: []Key{k}}
	c := claims()
	c.Credential = strings.Repeat("n", 63) + "/" + strings.Repeat("c", 253)
	tok, err := Mint(c, k)
	if err != nil {
		t.Fatalf("the longest credential: %v", err)
	}
	if len(tok) != MaxTokenLen {
		t.Fatalf("the longest token is %d characters, MaxTokenLen %d", len(tok), MaxTokenLen)
	}
	if got, err := Parse(tok, ring, t0); err != nil || got.Credential != c.Credential {
		t.Fatalf("Parse of the longest token: %v", err)
	}
	c.Credential += "c"
	if _, err := Mint(c, k); err == nil {
		t.Fatal("a credential one character too long was minted")
	}
	for ch, want := range map[byte]bool{'A': true, 'Z': true, 'a': true, 'z': true, '0': true, '9': true, '-': true, '_': true,
		'@': false, '[': false, '`': false, '{': false, '/': false, ':': false, '+': false, '=': false, '\r': false} {
		if got := isBase64URL(ch); got != want {
			t.Errorf("isBase64URL(%q) = %v, want %v", ch, got, want)
		}
	}
}
