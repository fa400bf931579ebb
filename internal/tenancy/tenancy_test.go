package tenancy

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

func TestClaimName(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:])[:40] }
	long := strings.Repeat("é", 256)
	tests := []struct {
		name string
		id   Identity
		want string
	}{
		{"agent", Agent("6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"), "agent-6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"},
		{"upper-case agent is the same agent", Agent("6F1C2B1E-9D2A-4C1E-8F3B-1A2B3C4D5E6F"), "agent-6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"},
		{"agent built by hand", Identity{Kind: authv1alpha1.AgentIdentity, Value: "6F1C2B1E-9D2A-4C1E-8F3B-1A2B3C4D5E6F"}, "agent-6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"},
		{"user", User("alice@example.com"), "user-" + sum("alice@example.com")},
		{"user case folds", User("Alice@Example.COM"), "user-" + sum("alice@example.com")},
		{"full-width letters fold", User("ａlice@example.com"), "user-" + sum("alice@example.com")},
		{"256 unicode characters", User(long), "user-" + sum(long)},
		{"full case folding: ß is ss", User("STRASSE@example.com"), "user-" + sum("strasse@example.com")},
		{"full case folding: ß is ss (2)", User("straße@example.com"), "user-" + sum("strasse@example.com")},
		{"final sigma folds like sigma", User("οδυσσευς@x"), "user-" + sum("οδυσσευσ@x")},
		{"capital sigma folds like sigma", User("ΟΔΥΣΣΕΥΣ@x"), "user-" + sum("οδυσσευσ@x")},
		{"different users differ", User("bob@example.com"), "user-" + sum("bob@example.com")},
	}
	for _, tt := range tests {
		got := ClaimName(tt.id)
		if got != tt.want {
			t.Errorf("%s: ClaimName = %q, want %q", tt.name, got, tt.want)
		}
		if len(got) > 63 {
			t.Errorf("%s: %q is longer than a label value", tt.name, got)
		}
	}
}

func TestIdentitiesOf(t *testing.T) {
	const a = "aaaaaaaa-0000-4000-8000-000000000000"
	got := IdentitiesOf([]string{a, strings.ToUpper(a), "bbbbbbbb-0000-4000-8000-000000000000"}, "alice")
	want := []Identity{Agent(a), Agent("bbbbbbbb-0000-4000-8000-000000000000"), User("alice")}
	if len(got) != len(want) {
		t.Fatalf("IdentitiesOf = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("IdentitiesOf[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if got := IdentitiesOf(nil, ""); len(got) != 0 {
		t.Errorf("IdentitiesOf(nothing) = %v", got)
	}
}

func TestHoldingOf(t *testing.T) {
	const a = "aaaaaaaa-0000-4000-8000-000000000000"
	spec := func(kind authv1alpha1.IdentityKind, value, ns string) *authv1alpha1.IdentityClaimSpec {
		return &authv1alpha1.IdentityClaimSpec{Kind: kind, Value: value, Namespace: ns}
	}
	tests := []struct {
		name  string
		claim *authv1alpha1.IdentityClaimSpec
		id    Identity
		want  Holding
	}{
		{"no claim", nil, Agent(a), Unclaimed},
		{"ours", spec(authv1alpha1.AgentIdentity, a, "team-a"), Agent(a), Ours},
		{"upper-case credential, lower-case claim", spec(authv1alpha1.AgentIdentity, a, "team-a"), Agent(strings.ToUpper(a)), Ours},
		{"another namespace", spec(authv1alpha1.AgentIdentity, a, "team-b"), Agent(a), Elsewhere},
		{"user ours", spec(authv1alpha1.UserIdentity, "alice@example.com", "team-a"), User("Alice@example.com"), Ours},
		{"user elsewhere", spec(authv1alpha1.UserIdentity, "alice@example.com", "team-b"), User("alice@example.com"), Elsewhere},
		{"claim describes another identity", spec(authv1alpha1.UserIdentity, "bob@example.com", "team-a"), User("alice@example.com"), Elsewhere},
		{"claim of another kind", spec(authv1alpha1.UserIdentity, a, "team-a"), Agent(a), Elsewhere},
		{"user claim in another spelling", spec(authv1alpha1.UserIdentity, "STRAßE", "team-a"), User("strasse"), Ours},
	}
	for _, tt := range tests {
		if got := HoldingOf(tt.claim, tt.id, "team-a"); got != tt.want {
			t.Errorf("%s: HoldingOf = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestMayClaim(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := func(ns, name string, at time.Duration) Claimant {
		return Claimant{Namespace: ns, Name: name, Created: t0.Add(at)}
	}
	me := c("team-b", "mine", time.Hour)
	tests := []struct {
		name   string
		me     Claimant
		others []Claimant
		want   bool
	}{
		{"alone", me, nil, true},
		{"alone, listed among others", me, []Claimant{me}, true},
		{"older in another namespace goes first", me, []Claimant{me, c("team-a", "x", 0)}, false},
		{"newer in another namespace", me, []Claimant{c("team-a", "x", 2*time.Hour)}, true},
		{"older in the same namespace", me, []Claimant{c("team-b", "x", 0)}, true},
		{"older but being deleted", me, []Claimant{{Namespace: "team-a", Name: "x", Created: t0, Deleting: true}}, true},
		{"same second, namespace order decides", c("team-b", "m", 0), []Claimant{c("team-a", "x", 0)}, false},
		{"same second, we are first", c("team-a", "m", 0), []Claimant{c("team-b", "x", 0)}, true},
		{"the one holding a key goes first, same second", c("team-a", "m", 0), []Claimant{{Namespace: "team-b", Name: "x", Created: t0, HoldsKey: true}}, false},
		{"the one holding a key goes first, however young", c("team-a", "old", -time.Hour), []Claimant{{Namespace: "team-b", Name: "x", Created: t0.Add(time.Hour), HoldsKey: true}}, false},
		{"an older sleeper without a key loses to the holder", Claimant{Namespace: "team-a", Name: "holder", Created: t0, HoldsKey: true}, []Claimant{c("team-b", "sleeper", -24*time.Hour)}, true},
		{"a holder being deleted claims nothing", me, []Claimant{{Namespace: "team-a", Name: "x", Created: t0, HoldsKey: true, Deleting: true}}, true},
		{"oldest in our namespace behind a newer elsewhere", me, []Claimant{c("team-b", "old", -time.Hour), c("team-a", "x", 0)}, true},
		// Issue 23 item 9: a claimant that could not create the claim ranks nowhere.
		{"older, but refused (over its namespace's claim limit)", me, []Claimant{me, {Namespace: "team-a", Name: "x", Created: t0, Refused: true}}, true},
		{"holding a key, but refused", me, []Claimant{{Namespace: "team-a", Name: "x", Created: t0, HoldsKey: true, Refused: true}}, true},
		{"a refused claimant does not hide an older one behind it", me, []Claimant{{Namespace: "team-a", Name: "x", Created: t0, Refused: true}, c("team-c", "y", time.Minute)}, false},
		{"refused ourselves, but first: the caller reports the refusal", Claimant{Namespace: "team-b", Name: "mine", Created: t0, Refused: true}, []Claimant{c("team-a", "x", time.Hour)}, true},
	}
	for _, tt := range tests {
		if got := MayClaim(tt.me, tt.others); got != tt.want {
			t.Errorf("%s: MayClaim = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestReleaseAfter(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	hold := 720 * time.Hour
	tests := []struct {
		name        string
		use         Use
		wantRelease bool
		wantWait    time.Duration
	}{
		{"admin-made, unused for ever", Use{Created: now.Add(-10 * hold)}, false, 0},
		{"in use", Use{Managed: true, InUse: true, LastUsed: now.Add(-10 * hold)}, false, 0},
		{"unused, hold not over", Use{Managed: true, LastUsed: now.Add(-hold + time.Hour)}, false, time.Hour},
		{"unused, hold just over", Use{Managed: true, LastUsed: now.Add(-hold)}, true, 0},
		{"never recorded: creation counts", Use{Managed: true, Created: now.Add(-hold - time.Second)}, true, 0},
		{"never recorded, young", Use{Managed: true, Created: now.Add(-time.Minute)}, false, hold - time.Minute},
	}
	for _, tt := range tests {
		release, wait := ReleaseAfter(tt.use, hold, now)
		if release != tt.wantRelease || wait != tt.wantWait {
			t.Errorf("%s: ReleaseAfter = %v, %v; want %v, %v", tt.name, release, wait, tt.wantRelease, tt.wantWait)
		}
	}
}

func TestMessagesNeverNameAHolder(t *testing.T) {
	id := Agent("aaaaaaaa-0000-4000-8000-000000000000")
	msg := Refusal(id)
	if !strings.Contains(msg, id.Value) || !strings.Contains(msg, "another namespace") {
		t.Errorf("Refusal = %q", msg)
	}
	na := NotAssigned(User("alice@example.com"), "team-a")
	for _, want := range []string{"IdentityClaim " + ClaimName(User("alice@example.com")), "kind: User", `value: "alice@example.com"`, "namespace: team-a"} {
		if !strings.Contains(na, want) {
			t.Errorf("NotAssigned = %q, missing %q", na, want)
		}
	}
	if u := Refusal(User("alice@example.com")); !strings.HasPrefix(u, `user "alice@example.com" is claimed`) {
		t.Errorf("Refusal(user) = %q", u)
	}
	if ConflictReason(id) != authv1alpha1.ReasonAgentIDConflict || ConflictReason(User("a")) != authv1alpha1.ReasonUserConflict {
		t.Error("ConflictReason")
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"auto": FirstUse, "preassigned": Preassigned} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "Auto", "none"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) accepted", bad)
		}
	}
}

func TestSortedNames(t *testing.T) {
	got := SortedNames([]string{"b", "a", "b", "c", "a"})
	if strings.Join(got, ",") != "a,b,c" {
		t.Errorf("SortedNames = %v", got)
	}
	if got := SortedNames(nil); len(got) != 0 {
		t.Errorf("SortedNames(nil) = %v", got)
	}
}

func TestEnvironmentAllowed(t *testing.T) {
	tests := []struct {
		namespace, env string
		want           bool
	}{
		{"", "live", true},
		{"", "sandbox", true},
		{"sandbox", "sandbox", true},
		{"sandbox", "live", false},
		{"live", "live", true},
		{"live", "sandbox", true}, // only the sandbox label sets a rule
		{"Sandbox", "live", true},
	}
	for _, tt := range tests {
		if got := EnvironmentAllowed(tt.namespace, tt.env); got != tt.want {
			t.Errorf("EnvironmentAllowed(%q, %q) = %v, want %v", tt.namespace, tt.env, got, tt.want)
		}
	}
	if msg := EnvironmentRefusal("qa"); !strings.Contains(msg, "spec.environment") || !strings.Contains(msg, "qa") {
		t.Errorf("EnvironmentRefusal = %q", msg)
	}
}
