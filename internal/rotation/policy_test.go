package rotation

import (
	"slices"
	"testing"
	"time"

	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
)

var (
	t0     = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k1, k2 = credential.DigestOf("k1"), credential.DigestOf("k2")
	k3     = credential.DigestOf("k3")
	day    = 24 * time.Hour
)

func record() *hashsecret.Record {
	return &hashsecret.Record{Current: hashsecret.Entry{Digest: k1, IssuedAt: t0}}
}

func TestInspect(t *testing.T) {
	key, _ := credential.Generate(credential.APIKey)
	sandbox, _ := credential.GenerateIn(credential.APIKey, credential.Sandbox)
	live, sb := credential.Live, credential.Sandbox
	tests := []struct {
		name    string
		key     string
		present bool
		want    credential.Kind
		env     credential.Environment
		valid   bool
	}{
		{"missing", "", false, credential.APIKey, live, false},
		{"valid", key, true, credential.APIKey, live, true},
		{"wrong kind", key, true, credential.UserToken, live, false},
		{"corrupted", key[:20], true, credential.APIKey, live, false},
		{"empty", "", true, credential.APIKey, live, false},
		{"valid sandbox", sandbox, true, credential.APIKey, sb, true},
		{"live key for a sandbox credential", key, true, credential.APIKey, sb, false},
		{"sandbox key for a live credential", sandbox, true, credential.APIKey, live, false},
	}
	for _, tt := range tests {
		got := Inspect(tt.key, tt.present, tt.want, tt.env)
		if got.Valid != tt.valid || got.Present != tt.present {
			t.Errorf("%s: Inspect = %+v", tt.name, got)
		}
		if tt.valid && !got.Digest.Equal(credential.DigestOf(tt.key)) {
			t.Errorf("%s: wrong digest", tt.name)
		}
	}
}

func TestAssess(t *testing.T) {
	pending := record()
	pending.Pending = &hashsecret.Entry{Digest: k2}
	valid := func(d credential.Digest) AgentKey { return AgentKey{Present: true, Valid: true, Digest: d} }
	tests := []struct {
		name        string
		agent       AgentKey
		rec         *hashsecret.Record
		retired     []string
		statusKeyID string
		want        Action
		reason      Reason
	}{
		{"new credential", AgentKey{}, nil, nil, "", IssueKey, Issue},
		{"agent holds current", valid(k1), record(), nil, k1.KeyID(), Keep, None},
		{"agent holds current, status stale", valid(k1), record(), nil, k3.KeyID(), Keep, None},
		{"agent holds current, though retired (a keyID collision)", valid(k1), record(), []string{k1.KeyID()}, k1.KeyID(), Keep, None},
		{"crash after agent write", valid(k2), pending, nil, k1.KeyID(), FinishRotation, None},
		{"crash after staging", valid(k1), pending, nil, k1.KeyID(), Keep, None},
		{"hash Secret deleted", valid(k1), nil, nil, k1.KeyID(), RebuildRecord, None},
		{"hash Secret damaged or left from an earlier credential", valid(k1), nil, []string{k3.KeyID()}, k1.KeyID(), RebuildRecord, None},
		// Issue 23 item 8: status (tenant-writable) never replaces an intact record, nor revives a retired key.
		{"intact record edited: reissue, never rebuild over it", valid(k1), &hashsecret.Record{Current: hashsecret.Entry{Digest: k3}}, nil, k1.KeyID(), IssueKey, Reissue},
		{"status and agent Secret set to a rotated-away key", valid(k1), &hashsecret.Record{Current: hashsecret.Entry{Digest: k2}, Retired: []string{k1.KeyID()}}, nil, k1.KeyID(), IssueKey, Reissue},
		{"record gone, agent key retired", valid(k1), nil, []string{k3.KeyID(), k1.KeyID()}, k1.KeyID(), IssueKey, Reissue},
		{"agent Secret deleted", AgentKey{}, record(), nil, k1.KeyID(), IssueKey, Reissue},
		{"agent key corrupted", AgentKey{Present: true}, record(), nil, k1.KeyID(), IssueKey, Reissue},
		{"agent key replaced by a foreign valid key", valid(k3), record(), nil, k1.KeyID(), IssueKey, Reissue},
		{"both Secrets lost", AgentKey{}, nil, nil, k1.KeyID(), IssueKey, Reissue},
		{"an issue that did not finish", AgentKey{}, record(), nil, "", IssueKey, Issue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := Assess(tt.agent, tt.rec, tt.retired, tt.statusKeyID)
			if got != tt.want || reason != tt.reason {
				t.Fatalf("Assess = %v, %q; want %v, %q", got, reason, tt.want, tt.reason)
			}
		})
	}
}

// expiring is record() with a hard expiry after d.
func expiring(d time.Duration) *hashsecret.Record {
	r := record()
	r.ExpiresAt = t0.Add(d)
	return r
}

func TestDue(t *testing.T) {
	withRequest := record()
	withRequest.LastRotationRequest = "r1"
	tests := []struct {
		name    string
		rec     *hashsecret.Record
		period  time.Duration
		request string
		now     time.Time
		want    Reason
	}{
		{"fresh key", record(), 90 * day, "", t0.Add(time.Hour), None},
		{"a second before 90 days", record(), 90 * day, "", t0.Add(90*day - time.Second), None},
		{"at 90 days", record(), 90 * day, "", t0.Add(90 * day), Scheduled},
		{"long overdue", record(), 90 * day, "", t0.Add(400 * day), Scheduled},
		{"custom period", record(), time.Hour, "", t0.Add(time.Hour), Scheduled},
		{"new request", record(), 90 * day, "r1", t0.Add(time.Hour), Requested},
		{"request already served", withRequest, 90 * day, "r1", t0.Add(time.Hour), None},
		{"changed request", withRequest, 90 * day, "r2", t0.Add(time.Hour), Requested},
		{"request wins over schedule", withRequest, time.Hour, "r2", t0.Add(2 * time.Hour), Requested},
		{"annotation removed", withRequest, 90 * day, "", t0.Add(time.Hour), None},
		{"expiry before the schedule", expiring(60 * day), 90 * day, "", t0.Add(90 * day), None},
		{"expiry at the scheduled instant", expiring(90 * day), 90 * day, "", t0.Add(90 * day), None},
		{"expiry after the schedule", expiring(91 * day), 90 * day, "", t0.Add(90 * day), Scheduled},
		{"request on an expired credential", expiring(day), 90 * day, "r1", t0.Add(2 * day), None},
		{"request a second before expiry", expiring(day), 90 * day, "r1", t0.Add(day - time.Second), Requested},
	}
	for _, tt := range tests {
		if got := Due(tt.rec, tt.period, tt.request, tt.now); got != tt.want {
			t.Errorf("%s: Due = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestStageAndPromote(t *testing.T) {
	now := t0.Add(90 * day)
	tests := []struct {
		name         string
		reason       Reason
		grace        time.Duration
		wantPrevious bool
		wantCount    int64
		wantRequest  string
	}{
		{"scheduled keeps old key for grace", Scheduled, 10 * time.Minute, true, 1, "old"},
		{"scheduled without grace revokes", Scheduled, 0, false, 1, "old"},
		{"requested revokes at once", Requested, 10 * time.Minute, false, 1, "r2"},
		{"reissue revokes at once", Reissue, 10 * time.Minute, false, 1, "r2"},
		{"first issue is not a rotation", Issue, 10 * time.Minute, false, 0, "r2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := *record()
			rec.LastRotationRequest = "old"
			rec.Previous = &hashsecret.Entry{Digest: k3, ExpiresAt: now.Add(time.Hour)}
			staged := Stage(rec, k2, tt.reason, now, time.Time{})
			if staged.Pending == nil || !staged.Pending.Digest.Equal(k2) || !staged.Current.Digest.Equal(k1) {
				t.Fatal("Stage must add k2 as pending and keep k1 current")
			}
			if !staged.Accepts(k1, now) || !staged.Accepts(k2, now) {
				t.Fatal("while staged, both the old and the staged key must verify")
			}
			got := Promote(staged, tt.grace, "r2")
			if got.Pending != nil || !got.Current.Digest.Equal(k2) || !got.Current.IssuedAt.Equal(now) {
				t.Fatalf("Promote: current = %+v, pending = %+v", got.Current, got.Pending)
			}
			if (got.Previous != nil) != tt.wantPrevious {
				t.Fatalf("previous = %+v, want present=%v", got.Previous, tt.wantPrevious)
			}
			if tt.wantPrevious {
				if !got.Previous.Digest.Equal(k1) || !got.Previous.ExpiresAt.Equal(now.Add(tt.grace)) {
					t.Fatalf("previous = %+v, want k1 until now+grace", got.Previous)
				}
				if !got.Accepts(k1, now.Add(tt.grace-time.Second)) || got.Accepts(k1, now.Add(tt.grace)) {
					t.Fatal("old key must verify during grace and not after")
				}
			} else if got.Accepts(k1, now) {
				t.Fatal("old key still verifies after a revoking rotation")
			}
			if got.Accepts(k3, now) {
				t.Fatal("a key from an earlier grace period survived a rotation")
			}
			if got.RotationCount != tt.wantCount || got.LastRotationRequest != tt.wantRequest {
				t.Fatalf("count = %d request = %q; want %d %q", got.RotationCount, got.LastRotationRequest, tt.wantCount, tt.wantRequest)
			}
		})
	}
	if r := Promote(*record(), time.Minute, ""); !r.Current.Digest.Equal(k1) {
		t.Fatal("Promote without a pending key changed the record")
	}
}

func TestPruneAndRequeue(t *testing.T) {
	rec := *record()
	rec.Previous = &hashsecret.Entry{Digest: k3, ExpiresAt: t0.Add(10 * time.Minute)}
	if got := RequeueAfter(&rec, 90*day, t0); got != 10*time.Minute {
		t.Fatalf("RequeueAfter with grace = %v, want 10m", got)
	}
	if _, changed := Prune(rec, t0.Add(9*time.Minute)); changed {
		t.Fatal("pruned a previous key still in grace")
	}
	pruned, changed := Prune(rec, t0.Add(10*time.Minute))
	if !changed || pruned.Previous != nil {
		t.Fatal("expired previous key not pruned")
	}
	if got := RequeueAfter(&pruned, 90*day, t0.Add(day)); got != 89*day {
		t.Fatalf("RequeueAfter = %v, want 89 days", got)
	}
	if got := RequeueAfter(&pruned, 90*day, t0.Add(90*day)); got != time.Second {
		t.Fatalf("RequeueAfter exactly when due = %v, want 1s", got)
	}
	if got := RequeueAfter(&pruned, 90*day, t0.Add(100*day)); got != time.Second {
		t.Fatalf("RequeueAfter overdue = %v, want 1s", got)
	}
}

func TestNeedsStaging(t *testing.T) {
	tests := []struct {
		name   string
		agent  AgentKey
		reason Reason
		want   bool
	}{
		{"first issue", AgentKey{}, Issue, false},
		{"reissue of a lost key: staged so a crash does not count twice", AgentKey{Present: true}, Reissue, true},
		{"scheduled", AgentKey{Present: true, Valid: true, Digest: k1}, Scheduled, true},
		{"requested", AgentKey{Present: true, Valid: true, Digest: k1}, Requested, true},
		// An issue that did not finish, whose key reached the agent Secret:
		// staged, so the key there keeps verifying (mutation: drop agent.Valid).
		{"issue with a valid key already in the agent Secret", AgentKey{Present: true, Valid: true, Digest: k1}, Issue, true},
		{"issue over a damaged key", AgentKey{Present: true}, Issue, false},
	}
	for _, tt := range tests {
		if got := NeedsStaging(tt.agent, tt.reason); got != tt.want {
			t.Errorf("%s: NeedsStaging = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestStageKeepsWholeSeconds: the hash Secret and the status store times to
// the second; a staged key's time must already be whole seconds, or the
// record read back differs from the one written and the rotation is seen
// as changed (mutation: drop the Truncate).
func TestStageKeepsWholeSeconds(t *testing.T) {
	now := t0.Add(1500 * time.Millisecond)
	base := *record()
	base.Credential, base.UID, base.Type = "team-a/agent", "uid-1", "APIKey"
	staged := Stage(base, k2, Scheduled, now, time.Time{})
	if got := staged.Pending.StartedAt; !got.Equal(t0.Add(time.Second)) || got.Location() != time.UTC {
		t.Fatalf("staged at %v, want %v in UTC", got, t0.Add(time.Second))
	}
	back, err := hashsecret.Parse(staged.Data())
	if err != nil {
		t.Fatal(err)
	}
	if !back.Pending.StartedAt.Equal(staged.Pending.StartedAt) {
		t.Fatalf("round trip changed the staged time: %v -> %v", staged.Pending.StartedAt, back.Pending.StartedAt)
	}
}

func TestRenewalAndExpiry(t *testing.T) {
	at := t0.Add(30 * day)
	tests := []struct {
		name        string
		rec         *hashsecret.Record
		want        time.Time
		now         time.Time
		renew       bool
		wantExpiry  time.Time
		wantChanged bool
	}{
		{"live, no expiry asked", record(), time.Time{}, at, false, time.Time{}, false},
		{"live, expiry set", record(), at, t0, false, at, true},
		{"live, expiry moved later", expiring(day), at, t0, false, at, true},
		{"live, expiry moved into the past: applies at once", expiring(60 * day), t0.Add(day), at, false, t0.Add(day), true},
		{"live, expiry removed", expiring(60 * day), time.Time{}, at, false, time.Time{}, true},
		{"expired, unchanged", expiring(day), t0.Add(day), at, false, t0.Add(day), false},
		{"expired, moved later: renew, record keeps its expiry", expiring(day), at.Add(day), at, true, t0.Add(day), false},
		{"expired, removed: renew", expiring(day), time.Time{}, at, true, t0.Add(day), false},
		{"expired, moved to another past instant", expiring(day), t0.Add(2 * day), at, false, t0.Add(day), false},
		{"expired, moved to now exactly", expiring(day), at, at, false, t0.Add(day), false},
	}
	for _, tt := range tests {
		if got := Renewal(tt.rec, tt.want, tt.now); got != tt.renew {
			t.Errorf("%s: Renewal = %v, want %v", tt.name, got, tt.renew)
		}
		got, changed := WithExpiry(*tt.rec, tt.want, tt.now)
		if changed != tt.wantChanged || !got.ExpiresAt.Equal(tt.wantExpiry) {
			t.Errorf("%s: WithExpiry = %v (changed %v), want %v (changed %v)", tt.name, got.ExpiresAt, changed, tt.wantExpiry, tt.wantChanged)
		}
	}
}

func TestRenewPromotesWithTheNewExpiry(t *testing.T) {
	rec := *expiring(day)
	now, newExpiry := t0.Add(2*day), t0.Add(60*day)
	staged := Stage(rec, k2, Renew, now, newExpiry)
	if !staged.Expired(now) {
		t.Fatal("staging a renewal must not revive the expired record before the key reaches the agent Secret")
	}
	got := Promote(staged, 10*time.Minute, "")
	if !got.ExpiresAt.Equal(newExpiry) || got.Expired(now) || !got.Current.Digest.Equal(k2) {
		t.Fatalf("promoted renewal = %+v, want k2 current until %v", got, newExpiry)
	}
	if got.Previous != nil {
		t.Fatal("a renewal kept the expired key in grace")
	}
	if s := Stage(rec, k2, Scheduled, now, newExpiry); !s.Pending.ExpiresAt.IsZero() {
		t.Fatal("only a renewal carries an expiry in its pending entry")
	}
}

func TestGraceDeadline(t *testing.T) {
	grace, maxGrace := 10*time.Minute, 24*time.Hour
	tests := []struct {
		name     string
		grace    time.Duration
		maxGrace time.Duration
		rolling  bool
		want     time.Time
	}{
		{"rolled out: grace", grace, maxGrace, false, t0.Add(grace)},
		{"rolling: the cap", grace, maxGrace, true, t0.Add(maxGrace)},
		{"rolling, cap shorter than grace: grace", 48 * time.Hour, maxGrace, true, t0.Add(48 * time.Hour)},
		{"rolling, no grace", 0, maxGrace, true, t0.Add(maxGrace)},
		{"rolled out, no grace", 0, maxGrace, false, t0},
	}
	for _, tt := range tests {
		if got := GraceDeadline(t0, tt.grace, tt.maxGrace, tt.rolling); !got.Equal(tt.want) {
			t.Errorf("%s: GraceDeadline = %v, want %v", tt.name, got, tt.want)
		}
	}
	rec := *record()
	if _, changed := WithGraceDeadline(rec, t0.Add(time.Hour)); changed {
		t.Fatal("WithGraceDeadline changed a record without a previous key")
	}
	rec.Previous = &hashsecret.Entry{Digest: k3, ExpiresAt: t0.Add(grace)}
	got, changed := WithGraceDeadline(rec, t0.Add(maxGrace))
	if !changed || !got.Previous.ExpiresAt.Equal(t0.Add(maxGrace)) || !rec.Previous.ExpiresAt.Equal(t0.Add(grace)) {
		t.Fatal("WithGraceDeadline must extend a copy of the previous key's expiry")
	}
	if _, changed := WithGraceDeadline(got, t0.Add(maxGrace)); changed {
		t.Fatal("WithGraceDeadline reported a change for the same deadline")
	}
}

func TestRequeueWithExpiry(t *testing.T) {
	tests := []struct {
		name string
		rec  *hashsecret.Record
		now  time.Time
		want time.Duration
	}{
		{"expiry before the next rotation", expiring(10 * day), t0, 10 * day},
		{"expiry after the next rotation", expiring(100 * day), t0, 90 * day},
		{"expired: nothing ahead", expiring(day), t0.Add(day), 0},
	}
	for _, tt := range tests {
		if got := RequeueAfter(tt.rec, 90*day, tt.now); got != tt.want {
			t.Errorf("%s: RequeueAfter = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestPromoteRetires: every key a promotion replaces, and one still in
// grace, is recorded as retired (issue 23 item 8); a first issue retires
// nothing.
func TestPromoteRetires(t *testing.T) {
	now := t0.Add(90 * day)
	rec := *record()
	rec.Previous = &hashsecret.Entry{Digest: k3, ExpiresAt: now.Add(time.Hour)}
	got := Promote(Stage(rec, k2, Scheduled, now, time.Time{}), 10*time.Minute, "")
	if want := []string{k3.KeyID(), k1.KeyID()}; !slices.Equal(got.Retired, want) {
		t.Fatalf("Retired = %v, want %v (grace key, then replaced key)", got.Retired, want)
	}
	if !got.Accepts(k1, now) {
		t.Fatal("a retired key in grace must still verify until its grace ends")
	}
	first := Promote(Stage(hashsecret.Record{}, k1, Issue, t0, time.Time{}), 0, "")
	if first.Retired != nil {
		t.Fatalf("a first issue retired %v", first.Retired)
	}
	if rec.Retired != nil {
		t.Fatal("Promote changed the record it was given")
	}
}

func TestRetired(t *testing.T) {
	left := &hashsecret.Record{
		Current:  hashsecret.Entry{Digest: k1},
		Previous: &hashsecret.Entry{Digest: k2},
		Pending:  &hashsecret.Entry{Digest: k3},
		Retired:  []string{"aaaaaaaaaaaa"},
	}
	tests := []struct {
		name string
		left *hashsecret.Record
		own  bool
		want []string
	}{
		{"nothing left", nil, false, nil},
		{"damaged record of this credential: its retired keys", left, true, []string{"aaaaaaaaaaaa"}},
		{"record of an earlier credential: every key in it", left, false, []string{"aaaaaaaaaaaa", k1.KeyID(), k2.KeyID(), k3.KeyID()}},
		{"earlier credential's record with only a current key", record(), false, []string{k1.KeyID()}},
		{"earlier credential's record with its digest damaged", &hashsecret.Record{}, false, []string{""}},
	}
	for _, tt := range tests {
		if got := Retired(tt.left, tt.own); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Retired = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRebuild: a rebuilt record takes its times from what is left of the
// record, never from status; with nothing left the key is new as of now and
// the standing rotate request counts as answered; an expired leftover stays
// expired; retired keys stay retired (issue 23 item 8).
func TestRebuild(t *testing.T) {
	now := t0.Add(10*day + 500*time.Millisecond)
	fresh := hashsecret.Record{Credential: "ns/c", UID: "u", ExpiresAt: t0.Add(60 * day)}
	damaged := &hashsecret.Record{Current: hashsecret.Entry{Digest: k1, IssuedAt: t0}, RotationCount: 4, LastRotationRequest: "leak", Retired: []string{k2.KeyID()}}
	tests := []struct {
		name        string
		left        *hashsecret.Record
		issued      time.Time
		count       int64
		request     string
		expiresAt   time.Time
		wantRetired []string
	}{
		{"nothing left", nil, t0.Add(10 * day), 0, "annotation", t0.Add(60 * day), []string{k3.KeyID()}},
		{"damaged record of this key", damaged, t0, 4, "leak", t0.Add(60 * day), []string{k3.KeyID()}},
		{"damaged record of another key: no issue time for this one", &hashsecret.Record{Current: hashsecret.Entry{Digest: k2, IssuedAt: t0}, RotationCount: 2}, t0.Add(10 * day), 2, "", t0.Add(60 * day), []string{k3.KeyID()}},
		{"damaged issue time", &hashsecret.Record{Current: hashsecret.Entry{Digest: k1}, RotationCount: 1}, t0.Add(10 * day), 1, "", t0.Add(60 * day), []string{k3.KeyID()}},
		{"expired leftover stays expired", &hashsecret.Record{Current: hashsecret.Entry{Digest: k1, IssuedAt: t0}, ExpiresAt: t0.Add(day)}, t0, 0, "", t0.Add(day), []string{k3.KeyID()}},
		{"leftover expiring exactly now is expired", &hashsecret.Record{Current: hashsecret.Entry{Digest: k1, IssuedAt: t0}, ExpiresAt: now}, t0, 0, "", now, []string{k3.KeyID()}},
		{"live leftover: the spec's expiry", &hashsecret.Record{Current: hashsecret.Entry{Digest: k1, IssuedAt: t0}, ExpiresAt: t0.Add(90 * day)}, t0, 0, "", t0.Add(60 * day), []string{k3.KeyID()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stale := fresh
			stale.Previous = &hashsecret.Entry{Digest: k2}
			stale.Pending = &hashsecret.Entry{Digest: k2}
			stale.RotationCount, stale.LastRotationRequest = 9, "stale"
			got := Rebuild(stale, tt.left, []string{k3.KeyID()}, k1, "annotation", now)
			if !got.Current.Digest.Equal(k1) || !got.Current.IssuedAt.Equal(tt.issued) {
				t.Fatalf("current = %+v, want k1 issued at %v", got.Current, tt.issued)
			}
			if got.Previous != nil || got.Pending != nil {
				t.Fatal("a rebuilt record accepts only the key in the agent Secret")
			}
			if got.RotationCount != tt.count || got.LastRotationRequest != tt.request {
				t.Fatalf("count, request = %d, %q; want %d, %q", got.RotationCount, got.LastRotationRequest, tt.count, tt.request)
			}
			if !got.ExpiresAt.Equal(tt.expiresAt) {
				t.Fatalf("expiresAt = %v, want %v", got.ExpiresAt, tt.expiresAt)
			}
			if !slices.Equal(got.Retired, tt.wantRetired) || got.Credential != "ns/c" {
				t.Fatalf("retired = %v, credential %q", got.Retired, got.Credential)
			}
		})
	}
}
