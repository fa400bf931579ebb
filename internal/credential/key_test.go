package credential

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestGenerateProducesParseableKeys(t *testing.T) {
	for _, kind := range []Kind{APIKey, UserToken} {
		seen := map[string]bool{}
		for range 200 {
			key, err := Generate(kind)
			if err != nil {
				t.Fatalf("Generate(%s): %v", kind, err)
			}
			if len(key) != KeyLen {
				t.Fatalf("key length = %d, want %d", len(key), KeyLen)
			}
			if !strings.HasPrefix(key, kind.Prefix()) {
				t.Fatalf("key %q lacks prefix %q", key[:3], kind.Prefix())
			}
			got, err := Parse(key)
			if err != nil || got != kind {
				t.Fatalf("Parse(generated %s) = %v, %v", kind, got, err)
			}
			if seen[key] {
				t.Fatal("Generate repeated a key")
			}
			seen[key] = true
		}
	}
}

func TestGenerateSandboxKeys(t *testing.T) {
	for kind, prefix := range map[Kind]string{APIKey: APIKeySandboxPrefix, UserToken: UserTokenSandboxPrefix} {
		key, err := GenerateIn(kind, Sandbox)
		if err != nil {
			t.Fatal(err)
		}
		if len(key) != SandboxKeyLen || !strings.HasPrefix(key, prefix) {
			t.Fatalf("sandbox %s key %q…: length %d, want %d with prefix %s", kind, key[:8], len(key), SandboxKeyLen, prefix)
		}
		if got, err := Parse(key); err != nil || got != kind {
			t.Fatalf("Parse(sandbox %s) = %v, %v", kind, got, err)
		}
		if EnvironmentOf(key) != Sandbox {
			t.Fatalf("EnvironmentOf(sandbox %s) = %s", kind, EnvironmentOf(key))
		}
		live, _ := GenerateIn(kind, Live)
		if EnvironmentOf(live) != Live || len(live) != KeyLen {
			t.Fatalf("live %s key: environment %s, length %d", kind, EnvironmentOf(live), len(live))
		}
		// The random part of a sandbox key is as long and as random as a live one's.
		if strings.Contains(key[sandboxPrefixLen:], "_") {
			t.Fatal("underscore in the random part")
		}
	}
	if Sandbox.String() != "sandbox" || Live.String() != "live" {
		t.Fatal("environment names")
	}
	// The prefix alone says it, at its exact length and no shorter.
	for s, want := range map[string]Environment{"ak_test_": Sandbox, "ap_test_": Sandbox, "ak_test": Live, "ak_": Live, "": Live, "ak_tesx_": Live} {
		if got := EnvironmentOf(s); got != want {
			t.Errorf("EnvironmentOf(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestGenerateRefusesSessionAndUnknown(t *testing.T) {
	for _, kind := range []Kind{Session, Unknown} {
		if _, err := Generate(kind); err == nil {
			t.Errorf("Generate(%s) succeeded, want error", kind)
		}
	}
}

func TestGenerateUsesEveryDigitAndOnlyBase62(t *testing.T) {
	// 2,000 keys carry 86,000 random digits: every one of the 62 digits must
	// appear, and nothing else.
	counts := map[byte]int{}
	for range 2000 {
		key, err := Generate(APIKey)
		if err != nil {
			t.Fatal(err)
		}
		for i := prefixLen; i < prefixLen+randomLen; i++ {
			counts[key[i]]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("saw %d distinct digits, want 62", len(counts))
	}
	for c, n := range counts {
		if !isBase62(c) {
			t.Fatalf("non-base62 digit %q", c)
		}
		// Expected 86000/62 ≈ 1387 each; a biased sampler would skew the
		// low digits by ~25%.
		if n < 1100 || n > 1700 {
			t.Errorf("digit %q appeared %d times, want about 1387", c, n)
		}
	}
}

// TestGenerateSkipsBiasedBytes: bytes 248..255 would make the low digits
// likelier (248 = 4*62), so the sampler skips them — exactly from 248 on
// (mutation: `b > 248`), and uses 247.
func TestGenerateSkipsBiasedBytes(t *testing.T) {
	random := bytes.Repeat([]byte{248, 255, 247, 1}, 64)
	key, err := generate(APIKey, Live, bytes.NewReader(random))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat(string(base62[247%62])+string(base62[1]), randomLen)[:randomLen]
	if got := key[prefixLen : prefixLen+randomLen]; got != want {
		t.Fatalf("random part %q, want %q (bytes >= 248 skipped)", got, want)
	}
}

func TestGenerateFailsOnBrokenRandomness(t *testing.T) {
	if _, err := generate(APIKey, Live, bytes.NewReader(nil)); err == nil {
		t.Fatal("generate with an empty random source succeeded")
	}
}

func TestParse(t *testing.T) {
	valid, err := Generate(APIKey)
	if err != nil {
		t.Fatal(err)
	}
	token, err := Generate(UserToken)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	sandbox, err := GenerateIn(APIKey, Sandbox)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		want    Kind
		wantErr error
	}{
		{"api key", valid, APIKey, nil},
		{"sandbox api key", sandbox, APIKey, nil},
		{"sandbox key with a broken checksum", flip(sandbox, SandboxKeyLen-1), Unknown, ErrChecksum},
		{"sandbox key, first checksum character", flip(sandbox, SandboxKeyLen-checksumLen), Unknown, ErrChecksum},
		{"sandbox marker removed", "ak_" + sandbox[sandboxPrefixLen:], Unknown, ErrChecksum},
		{"sandbox marker added to a live key", "ak_test_" + valid[prefixLen:], Unknown, ErrChecksum},
		{"live key of sandbox length", valid + "abcde", Unknown, ErrMalformed},
		{"sandbox key truncated to live length", sandbox[:KeyLen], Unknown, ErrMalformed},
		{"sandbox prefix only", "ak_test_", Unknown, ErrMalformed},
		{"marker with a typo", "ak_tset_" + sandbox[sandboxPrefixLen:], Unknown, ErrMalformed},
		{"user token", token, UserToken, nil},
		{"empty", "", Unknown, ErrUnknownPrefix},
		{"prefix only", "ak_", Unknown, ErrMalformed},
		{"session prefix", "as_" + valid[3:], Unknown, ErrUnknownPrefix},
		{"other prefix", "ghp_" + valid, Unknown, ErrUnknownPrefix},
		{"upper-case prefix", "AK_" + valid[3:], Unknown, ErrUnknownPrefix},
		{"truncated", valid[:KeyLen-1], Unknown, ErrMalformed},
		{"extra char", valid + "a", Unknown, ErrMalformed},
		{"typo in random part", flip(valid, 10), Unknown, ErrChecksum},
		{"typo in checksum", flip(valid, KeyLen-1), Unknown, ErrChecksum},
		// Every checksum position counts (mutation: compare only the last five).
		{"typo in the first checksum character", flip(valid, KeyLen-checksumLen), Unknown, ErrChecksum},
		{"typo in the second checksum character", flip(valid, KeyLen-checksumLen+1), Unknown, ErrChecksum},
		{"prefix swapped", "ap_" + valid[3:], Unknown, ErrChecksum},
		{"non-base62", valid[:10] + "-" + valid[11:], Unknown, ErrMalformed},
		{"space", valid[:10] + " " + valid[11:], Unknown, ErrMalformed},
		{"invalid utf-8", valid[:10] + "\xff" + valid[11:], Unknown, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("Parse() = %v, %v; want %v, %v", got, err, tt.want, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), tt.in) && tt.in != "" {
				t.Fatal("error message contains the input")
			}
		})
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	key, _ := Generate(APIKey)
	sandbox, _ := GenerateIn(APIKey, Sandbox)
	allocs := testing.AllocsPerRun(100, func() { _, _ = Parse(key); _, _ = Parse(sandbox); _ = EnvironmentOf(sandbox) })
	if allocs != 0 {
		t.Fatalf("Parse allocated %v times per run, want 0", allocs)
	}
}

func TestDigestOfDoesNotAllocate(t *testing.T) {
	key, _ := Generate(APIKey)
	if allocs := testing.AllocsPerRun(100, func() { _ = DigestOf(key) }); allocs != 0 {
		t.Fatalf("DigestOf allocated %v times per run, want 0", allocs)
	}
	long := strings.Repeat("x", 100)
	if DigestOf(long) != sha256.Sum256([]byte(long)) {
		t.Fatal("DigestOf of a long string is wrong")
	}
}

func TestDigestAndKeyID(t *testing.T) {
	key := "ak_example"
	sum := sha256.Sum256([]byte(key))
	d := DigestOf(key)
	if d.Hex() != hex.EncodeToString(sum[:]) {
		t.Fatalf("Hex() = %s, want SHA-256 hex", d.Hex())
	}
	if KeyID(key) != hex.EncodeToString(sum[:])[:12] || len(d.KeyID()) != KeyIDLen {
		t.Fatalf("KeyID() = %s, want first 12 hex chars of SHA-256", KeyID(key))
	}
	back, err := ParseDigestHex(d.Hex())
	if err != nil || !back.Equal(d) {
		t.Fatalf("ParseDigestHex(Hex()) = %v, %v", back, err)
	}
	if d.Equal(DigestOf("ak_other")) {
		t.Fatal("different keys have equal digests")
	}
	if !(Digest{}).IsZero() || d.IsZero() {
		t.Fatal("IsZero wrong")
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 64), d.Hex()[:63]} {
		if _, err := ParseDigestHex(bad); err == nil {
			t.Errorf("ParseDigestHex(%q) succeeded", bad)
		}
	}
}

func TestKindOf(t *testing.T) {
	tests := map[string]Kind{"ak_x": APIKey, "ap_x": UserToken, "as_x": Session, "a": Unknown, "xx_y": Unknown}
	for in, want := range tests {
		if got := KindOf(in); got != want {
			t.Errorf("KindOf(%q) = %v, want %v", in, got, want)
		}
	}
	if Unknown.Prefix() != "" || Unknown.String() != "unknown" || Session.String() != "session" {
		t.Error("Unknown/Session names wrong")
	}
}

// FuzzParse checks that Parse never panics and accepts only strings that
// round-trip through the key format.
func FuzzParse(f *testing.F) {
	key, _ := Generate(APIKey)
	tok, _ := Generate(UserToken)
	sandbox, _ := GenerateIn(APIKey, Sandbox)
	sandboxTok, _ := GenerateIn(UserToken, Sandbox)
	for _, seed := range []string{"", "ak_", key, tok, key[:20], "as_" + key[3:], "\x00\xff", sandbox, sandboxTok, "ak_test_", sandbox[:KeyLen]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, err := Parse(s)
		if err != nil {
			if kind != Unknown {
				t.Fatalf("error with kind %v", kind)
			}
			return
		}
		start := prefixLen
		if EnvironmentOf(s) == Sandbox {
			start = sandboxPrefixLen
		}
		if len(s) != start+randomLen+checksumLen || KindOf(s) != kind {
			t.Fatalf("accepted %q of kind %v", s, kind)
		}
		body := []byte(s[:start+randomLen])
		if string(appendChecksum(body, crcOf(body))) != s {
			t.Fatalf("accepted %q with a wrong checksum", s)
		}
	})
}

// FuzzParseDigestHex checks that reading a stored digest never panics and
// round-trips.
func FuzzParseDigestHex(f *testing.F) {
	f.Add(DigestOf("ak_x").Hex())
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigestHex(s)
		if err == nil && d.Hex() != strings.ToLower(s) {
			t.Fatalf("round trip of %q gave %q", s, d.Hex())
		}
	})
}
