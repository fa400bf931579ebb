package hashsecret

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
)

func sampleRecord() *Record {
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	return &Record{
		Credential: "agents/billing", UID: "uid-1", Type: "UserToken",
		AgentIDs: []string{"a", "b"}, User: "alice@example.com", SessionTTL: 30 * time.Minute,
		ExpiresAt:           now.Add(24 * time.Hour),
		Environment:         "sandbox",
		Current:             Entry{Digest: credential.DigestOf("ak_1"), IssuedAt: now},
		Previous:            &Entry{Digest: credential.DigestOf("ak_0"), ExpiresAt: now.Add(10 * time.Minute)},
		Pending:             &Entry{Digest: credential.DigestOf("ak_2"), Reason: "Renew", StartedAt: now, ExpiresAt: now.Add(48 * time.Hour)},
		RotationCount:       3,
		LastRotationRequest: "2026-11-28",
		Retired:             []string{credential.KeyID("ak_-2"), credential.KeyID("ak_-1")},
	}
}

func TestRoundTrip(t *testing.T) {
	for name, r := range map[string]*Record{
		"full":    sampleRecord(),
		"minimal": {Credential: "a/b", UID: "u", Type: "APIKey", AgentIDs: []string{"x"}, Current: Entry{Digest: credential.DigestOf("ak_1"), IssuedAt: time.Unix(0, 0).UTC()}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(r.Data())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
			}
		})
	}
}

func TestDataHoldsNoKeyAndHexDigests(t *testing.T) {
	data := sampleRecord().Data()
	if string(data[KeyCurrentDigest]) != credential.DigestOf("ak_1").Hex() {
		t.Fatal("current digest is not the SHA-256 hex of the key")
	}
	if string(data[KeyCurrentKeyID]) != credential.KeyID("ak_1") {
		t.Fatal("keyID missing")
	}
	for k, v := range data {
		if strings.Contains(string(v), "ak_") {
			t.Fatalf("%s holds something that looks like a key", k)
		}
	}
}

func TestParseRejectsDamage(t *testing.T) {
	tests := map[string]func(map[string][]byte){
		"no current digest":   func(d map[string][]byte) { delete(d, KeyCurrentDigest) },
		"digest not hex":      func(d map[string][]byte) { d[KeyCurrentDigest] = []byte(strings.Repeat("z", 64)) },
		"keyID mismatch":      func(d map[string][]byte) { d[KeyCurrentKeyID] = []byte("000000000000") },
		"bad issued-at":       func(d map[string][]byte) { d[KeyCurrentIssuedAt] = []byte("yesterday") },
		"no uid":              func(d map[string][]byte) { delete(d, KeyUID) },
		"bad credential":      func(d map[string][]byte) { d[KeyCredential] = []byte("no-slash") },
		"bad previous expiry": func(d map[string][]byte) { d[KeyPreviousExpiresAt] = []byte("") },
		"bad pending digest":  func(d map[string][]byte) { d[KeyPendingDigest] = []byte("00") },
		"bad ttl":             func(d map[string][]byte) { d[KeySessionTTL] = []byte("forever") },
		"negative count":      func(d map[string][]byte) { d[KeyRotationCount] = []byte("-1") },
		"bad expiry":          func(d map[string][]byte) { d[KeyExpiresAt] = []byte("soon") },
		"unknown environment": func(d map[string][]byte) { d[KeyEnvironment] = []byte("staging") },
		"retired not a keyID": func(d map[string][]byte) { d[KeyRetiredKeyIDs] = []byte(credential.KeyID("ak_0") + "\nnot-a-key-id") },
		"retired upper case":  func(d map[string][]byte) { d[KeyRetiredKeyIDs] = []byte(strings.ToUpper(credential.KeyID("ak_0"))) },
		"retired a digest":    func(d map[string][]byte) { d[KeyRetiredKeyIDs] = []byte(credential.DigestOf("ak_0").Hex()) },
		"retired empty":       func(d map[string][]byte) { d[KeyRetiredKeyIDs] = nil },
	}
	for name, damage := range tests {
		t.Run(name, func(t *testing.T) {
			d := sampleRecord().Data()
			damage(d)
			if _, err := Parse(d); err == nil {
				t.Fatal("Parse accepted a damaged record")
			}
		})
	}
}

func TestAccepts(t *testing.T) {
	r := sampleRecord()
	now := r.Current.IssuedAt
	tests := []struct {
		key  string
		at   time.Time
		want bool
	}{
		{"ak_1", now, true},
		{"ak_2", now, true}, // pending
		{"ak_0", now, true}, // previous in grace
		{"ak_0", now.Add(10 * time.Minute), false},
		{"ak_9", now, false},
	}
	for _, tt := range tests {
		if got := r.Accepts(credential.DigestOf(tt.key), tt.at); got != tt.want {
			t.Errorf("Accepts(%s, %v) = %v, want %v", tt.key, tt.at, got, tt.want)
		}
	}
}

func TestNameIsDeterministicAndValid(t *testing.T) {
	long := strings.Repeat("a", 253)
	n := Name("agents", long)
	if n != Name("agents", long) || len(n) > 63 || n == Name("agents2", long) {
		t.Fatalf("Name() = %q", n)
	}
	if Name("a-b", "c") == Name("a", "b-c") {
		t.Fatal("names collide across namespace/name boundaries")
	}
}

// FuzzParse: hash Secrets can be edited by anyone with access to the operator
// namespace; decoding them must never panic.
func FuzzParse(f *testing.F) {
	d := sampleRecord().Data()
	f.Add(string(d[KeyCurrentDigest]), string(d[KeyCurrentKeyID]), string(d[KeyCurrentIssuedAt]), "3", "30m")
	f.Fuzz(func(t *testing.T, digest, keyID, issued, count, ttl string) {
		d := sampleRecord().Data()
		d[KeyCurrentDigest], d[KeyCurrentKeyID], d[KeyCurrentIssuedAt] = []byte(digest), []byte(keyID), []byte(issued)
		d[KeyRotationCount], d[KeySessionTTL] = []byte(count), []byte(ttl)
		r, err := Parse(d)
		if err == nil {
			// A parsed record survives a round trip unchanged.
			back, err := Parse(r.Data())
			if err != nil {
				t.Fatalf("re-encoding a parsed record broke it: %v", err)
			}
			if !reflect.DeepEqual(back, r) {
				t.Fatalf("round trip changed the record:\n%+v\n%+v", r, back)
			}
		}
	})
}

// TestSessionTTLEdges: no TTL is no key in the Secret; a zero TTL written by
// hand is accepted as "no cap"; a negative one is damage.
func TestSessionTTLEdges(t *testing.T) {
	rec := &Record{Credential: "a/b", UID: "u", Type: "APIKey", AgentIDs: []string{"x"},
		Current: Entry{Digest: credential.DigestOf("ak_x"), IssuedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	data := rec.Data()
	if _, ok := data[KeySessionTTL]; ok {
		t.Fatal("a record without a session TTL wrote one")
	}
	data[KeySessionTTL] = []byte("0s")
	if got, err := Parse(data); err != nil || got.SessionTTL != 0 {
		t.Fatalf("a zero TTL: %v, %v", got, err)
	}
	data[KeySessionTTL] = []byte("-1s")
	if _, err := Parse(data); err == nil {
		t.Fatal("a negative TTL was accepted")
	}
}

func TestExpired(t *testing.T) {
	at := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		expiresAt time.Time
		now       time.Time
		want      bool
	}{
		{"no expiry", time.Time{}, at.Add(100 * 365 * 24 * time.Hour), false},
		{"before", at, at.Add(-time.Second), false},
		{"at the instant", at, at, true},
		{"after", at, at.Add(time.Second), true},
	}
	for _, tt := range tests {
		r := &Record{ExpiresAt: tt.expiresAt}
		if got := r.Expired(tt.now); got != tt.want {
			t.Errorf("%s: Expired = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRecordsWithoutRetiredStillParse: a record written before the retired
// list existed parses, with no retired keys, and is written back without
// the field (issue 23 item 8 keeps the format backward compatible).
func TestRecordsWithoutRetiredStillParse(t *testing.T) {
	r := sampleRecord()
	r.Retired = nil
	d := r.Data()
	if _, ok := d[KeyRetiredKeyIDs]; ok {
		t.Fatal("a record with no retired keys writes the field")
	}
	got, err := Parse(d)
	if err != nil {
		t.Fatal(err)
	}
	if got.Retired != nil || got.IsRetired("") {
		t.Fatalf("Retired = %v, want none", got.Retired)
	}
	if got := string(sampleRecord().Data()[KeyRetiredKeyIDs]); got != credential.KeyID("ak_-2")+"\n"+credential.KeyID("ak_-1") {
		t.Fatalf("retired written as %q", got)
	}
}

func TestRetire(t *testing.T) {
	id := func(i int) string { return credential.KeyID(fmt.Sprintf("ak_%d", i)) }
	r := &Record{}
	r.Retire("", id(0), id(0))
	if !slices.Equal(r.Retired, []string{id(0)}) || !r.IsRetired(id(0)) || r.IsRetired(id(1)) {
		t.Fatalf("Retired = %v, want [%s] once", r.Retired, id(0))
	}
	shared := *r
	r.Retire(id(1))
	if len(shared.Retired) != 1 {
		t.Fatal("Retire changed a slice shared with another record")
	}
	for i := 2; i <= MaxRetired; i++ {
		r.Retire(id(i))
	}
	if len(r.Retired) != MaxRetired || r.Retired[0] != id(1) || r.Retired[MaxRetired-1] != id(MaxRetired) {
		t.Fatalf("Retired = %v, want the newest %d, oldest first", r.Retired, MaxRetired)
	}
	if r.IsRetired(id(0)) {
		t.Fatal("the oldest retired keyID was kept beyond MaxRetired")
	}
	r.Retire()
	if len(r.Retired) != MaxRetired {
		t.Fatal("Retire without keyIDs changed the list")
	}
}

// TestSalvage: what can be read of a damaged record, field by field; a
// broken field is zero, never a partial or negative value.
func TestSalvage(t *testing.T) {
	want := sampleRecord()
	if got := Salvage(want.Data()); !reflect.DeepEqual(got, want) {
		t.Fatalf("Salvage of an intact record:\n got %+v\nwant %+v", got, want)
	}
	d := want.Data()
	d[KeyCurrentIssuedAt] = []byte("yesterday")
	d[KeyUID] = nil
	d[KeySessionTTL] = []byte("-1s")
	d[KeyRotationCount] = []byte("-3")
	d[KeyRetiredKeyIDs] = []byte("junk\n" + credential.KeyID("ak_-1"))
	d[KeyPreviousDigest] = []byte("00")
	got := Salvage(d)
	if _, err := Parse(d); err == nil {
		t.Fatal("Parse accepted the damage")
	}
	if !got.Current.Digest.Equal(want.Current.Digest) || !got.Current.IssuedAt.IsZero() {
		t.Fatalf("current = %+v, want its digest without the broken time", got.Current)
	}
	if got.SessionTTL != 0 || got.RotationCount != 0 {
		t.Fatalf("ttl, count = %v, %d; broken fields must be zero", got.SessionTTL, got.RotationCount)
	}
	if got.Credential != want.Credential || got.UID != "" || got.LastRotationRequest != want.LastRotationRequest || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("readable fields lost: %+v", got)
	}
	if !slices.Equal(got.Retired, []string{credential.KeyID("ak_-1")}) {
		t.Fatalf("retired = %v, want the readable keyID", got.Retired)
	}
	if got.Previous == nil || !got.Previous.Digest.IsZero() || !got.Previous.ExpiresAt.Equal(want.Previous.ExpiresAt) {
		t.Fatalf("previous = %+v, want its readable expiry and no digest", got.Previous)
	}
	if got.Pending == nil || !got.Pending.Digest.Equal(want.Pending.Digest) {
		t.Fatalf("pending = %+v", got.Pending)
	}
	if got := Salvage(map[string][]byte{KeySessionTTL: []byte("5m"), KeyRotationCount: []byte("7")}); got.SessionTTL != 5*time.Minute || got.RotationCount != 7 {
		t.Fatalf("Salvage of a fragment = %+v", got)
	}
}
