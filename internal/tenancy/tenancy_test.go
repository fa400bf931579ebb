package tenancy

import (
	"reflect"
	"testing"
	"time"
)

func TestConflicts(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const a, b = "aaaaaaaa-0000-4000-8000-000000000000", "bbbbbbbb-0000-4000-8000-000000000000"
	claim := func(ns, name string, at time.Duration, ids ...string) Claim {
		return Claim{Namespace: ns, Name: name, Created: t0.Add(at), AgentIDs: ids}
	}
	me := claim("team-b", "mine", time.Hour, a, b)
	tests := []struct {
		name   string
		claim  Claim
		others []Claim
		want   []Conflict
	}{
		{"alone", me, []Claim{me}, nil},
		{"older in another namespace", me, []Claim{me, claim("team-a", "x", 0, a)}, []Conflict{{a, "team-a/x"}}},
		{"newer in another namespace", me, []Claim{me, claim("team-a", "x", 2*time.Hour, a)}, nil},
		{"older in the same namespace", me, []Claim{me, claim("team-b", "x", 0, a)}, nil},
		{"older but being deleted", me, []Claim{me, {Namespace: "team-a", Name: "x", AgentIDs: []string{a}, Deleting: true}}, nil},
		{"same second, namespace decides", claim("team-b", "m", 0, a), []Claim{claim("team-a", "x", 0, a)}, []Conflict{{a, "team-a/x"}}},
		{"same second, we win", claim("team-a", "m", 0, a), []Claim{claim("team-b", "x", 0, a)}, nil},
		{"case-insensitive", claim("team-b", "m", time.Hour, "AAAAAAAA-0000-4000-8000-000000000000"), []Claim{claim("team-a", "x", 0, a)}, []Conflict{{a, "team-a/x"}}},
		{"several, sorted", me, []Claim{claim("team-c", "y", 0, b), claim("team-a", "x", 0, a)}, []Conflict{{a, "team-a/x"}, {b, "team-c/y"}}},
		{"same second, the issued one keeps it", claim("team-a", "m", 0, a), []Claim{{Namespace: "team-b", Name: "x", Created: t0, AgentIDs: []string{a}, Issued: true}}, []Conflict{{a, "team-b/x"}}},
		{"unrelated agent", me, []Claim{claim("team-a", "x", 0, "cccccccc-0000-4000-8000-000000000000")}, nil},
	}
	for _, tt := range tests {
		if got := Conflicts(tt.claim, tt.others); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Conflicts = %v, want %v", tt.name, got, tt.want)
		}
	}
}
