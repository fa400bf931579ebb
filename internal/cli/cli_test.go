package cli

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/tenancy"
)

func TestInterleave(t *testing.T) {
	tests := []struct{ in, want []string }{
		{[]string{"name", "-n", "ns"}, []string{"-n", "ns", "name"}},
		{[]string{"-n", "ns", "name"}, []string{"-n", "ns", "name"}},
		{[]string{"name", "--url=http://x", "--agent-id", "a"}, []string{"--url=http://x", "--agent-id", "a", "name"}},
		{nil, nil},
	}
	for _, tt := range tests {
		if got := interleave(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("interleave(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestUsageAndBadCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "kubectl agentcred rotate NAME") {
		t.Fatalf("no args: code %d, %q", code, out.String())
	}
	if code := Main(context.Background(), []string{"status"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "NAME is required") {
		t.Fatalf("status without NAME: code %d, %q", code, errOut.String())
	}
	errOut.Reset()
	if code := Main(context.Background(), []string{"check", "--key", "ak_x", "--url", "http://127.0.0.1:1"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "error:") {
		t.Fatalf("check against nothing: code %d, %q", code, errOut.String())
	}
}

func claim(name string, kind authv1alpha1.IdentityKind, value, namespace string, users []string, lastUsed *metav1.Time) authv1alpha1.IdentityClaim {
	return authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       authv1alpha1.IdentityClaimSpec{Kind: kind, Value: value, Namespace: namespace},
		Status:     authv1alpha1.IdentityClaimStatus{Credentials: users, LastUsedTime: lastUsed},
	}
}

func TestPrintClaimTable(t *testing.T) {
	const agent = "6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"
	alice := tenancy.User("alice@example.com")
	used := metav1.NewTime(time.Date(2026, 11, 28, 9, 30, 0, 0, time.FixedZone("CET", 3600)))
	tests := []struct {
		name   string
		claims []authv1alpha1.IdentityClaim
		want   []string // lines, with runs of spaces collapsed to one
	}{
		{"none", nil, []string{"No IdentityClaims found."}},
		{
			"sorted by name, users joined, times in UTC, dashes for nothing",
			[]authv1alpha1.IdentityClaim{
				claim(tenancy.ClaimName(alice), authv1alpha1.UserIdentity, alice.Value, "team-b", nil, nil),
				claim("agent-"+agent, authv1alpha1.AgentIdentity, agent, "team-a", []string{"billing", "billing-token"}, &used),
			},
			[]string{
				"NAME KIND VALUE NAMESPACE IN USE BY LAST USED",
				"agent-" + agent + " Agent " + agent + " team-a billing,billing-token 2026-11-28T08:30:00Z",
				tenancy.ClaimName(alice) + " User alice@example.com team-b - -",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printClaimTable(&out, tt.claims); err != nil {
				t.Fatal(err)
			}
			if got := collapse(out.String()); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestPrintIdentityClaims(t *testing.T) {
	const agent = "6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"
	a := tenancy.Agent(strings.ToUpper(agent)) // an upper-case agent ID is the same agent
	u := tenancy.User("Alice@Example.com")
	an, un := tenancy.ClaimName(a), tenancy.ClaimName(u)
	ids := []tenancy.Identity{a, u}
	at := func(ns string) map[string]*authv1alpha1.IdentityClaim {
		ca := claim(an, authv1alpha1.AgentIdentity, agent, ns, nil, nil)
		cu := claim(un, authv1alpha1.UserIdentity, "alice@example.com", ns, nil, nil)
		return map[string]*authv1alpha1.IdentityClaim{an: &ca, un: &cu}
	}
	wrong := claim(an, authv1alpha1.AgentIdentity, "00000000-0000-4000-8000-000000000000", "team-a", nil, nil)
	tests := []struct {
		name   string
		claims map[string]*authv1alpha1.IdentityClaim
		want   []string
	}{
		{"ours", at("team-a"), []string{
			"Claim " + an + ": Agent " + agent + " -> this namespace",
			"Claim " + un + ": User Alice@Example.com -> this namespace",
		}},
		{"elsewhere, never named", at("team-b"), []string{
			"Claim " + an + ": Agent " + agent + " -> another namespace",
			"Claim " + un + ": User Alice@Example.com -> another namespace",
		}},
		{"unclaimed", nil, []string{
			"Claim " + an + ": Agent " + agent + " -> not claimed",
			"Claim " + un + ": User Alice@Example.com -> not claimed",
		}},
		{"a hand-made claim for another identity grants nothing", map[string]*authv1alpha1.IdentityClaim{an: &wrong}, []string{
			"Claim " + an + ": Agent " + agent + " -> a claim that does not match this identity (grants nothing)",
			"Claim " + un + ": User Alice@Example.com -> not claimed",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printIdentityClaims(&out, "team-a", ids, tt.claims); err != nil {
				t.Fatal(err)
			}
			got := collapse(out.String())
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
			if strings.Contains(out.String(), "team-b") {
				t.Errorf("the output names the other namespace: %q", out.String())
			}
		})
	}
}

func TestClaimsTakesNoName(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"claims", "alice"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "takes no NAME") {
		t.Fatalf("claims with NAME: code %d, %q", code, errOut.String())
	}
}

// collapse splits s into lines and collapses runs of spaces and tabs, so
// tables compare without their padding.
func collapse(s string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return lines
}

func fakeSession(t *testing.T, funcs interceptor.Funcs, objs ...client.Object) *session {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := authv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithInterceptorFuncs(funcs).Build()
	return &session{client: c, namespace: "team-a"}
}

func TestStatusShowsClaimsOrSaysTheyAreNotReadable(t *testing.T) {
	const agent = "6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing"},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.APIKeyType, AgentID: agent},
	}
	held := claim("agent-"+agent, authv1alpha1.AgentIdentity, agent, "team-b", nil, nil)
	forbidden := interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if _, ok := obj.(*authv1alpha1.IdentityClaim); ok {
			return apierrors.NewForbidden(schema.GroupResource{Group: authv1alpha1.GroupVersion.Group, Resource: "identityclaims"}, key.Name, errors.New("no"))
		}
		return c.Get(ctx, key, obj, opts...)
	}}
	tests := []struct {
		name  string
		funcs interceptor.Funcs
		want  string
	}{
		{"readable", interceptor.Funcs{}, "Claim agent-" + agent + ": Agent " + agent + " -> another namespace"},
		{"forbidden", forbidden, "Claims: not readable with your permissions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fakeSession(t, tt.funcs, cred, &held)
			var out bytes.Buffer
			if err := s.status(context.Background(), "billing", &out); err != nil {
				t.Fatal(err)
			}
			if got := collapse(out.String()); !slices.Contains(got, tt.want) {
				t.Errorf("status lacks %q:\n%s", tt.want, out.String())
			}
			if strings.Contains(out.String(), "team-b") {
				t.Errorf("status names the other namespace:\n%s", out.String())
			}
		})
	}
}

func TestClaimsFiltersByExplicitNamespace(t *testing.T) {
	a := claim("agent-6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f", authv1alpha1.AgentIdentity, "6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f", "team-a", nil, nil)
	b := claim("agent-3d9a8c7b-6e5f-4a3b-9c2d-1e0f9a8b7c6d", authv1alpha1.AgentIdentity, "3d9a8c7b-6e5f-4a3b-9c2d-1e0f9a8b7c6d", "team-b", nil, nil)
	for _, tt := range []struct {
		namespace string
		want      int // rows after the header
	}{{"", 2}, {"team-b", 1}, {"team-c", 0}} {
		s := fakeSession(t, interceptor.Funcs{}, &a, &b)
		var out bytes.Buffer
		if err := s.claims(context.Background(), tt.namespace, &out); err != nil {
			t.Fatal(err)
		}
		// A table has a header; no claims is one sentence.
		if got := len(collapse(out.String())) - 1; got != tt.want {
			t.Errorf("-n %q: %d rows, want %d:\n%s", tt.namespace, got, tt.want, out.String())
		}
		if tt.namespace == "team-b" && !strings.Contains(out.String(), b.Name) {
			t.Errorf("-n team-b lacks %s:\n%s", b.Name, out.String())
		}
	}
}

func TestClaimName(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"claim-name", "user", "Alice@Example.com"}, &out, &errOut); code != 0 {
		t.Fatalf("code %d: %s", code, errOut.String())
	}
	// printf %s alice@example.com | sha256sum | cut -c1-40
	if got := strings.TrimSpace(out.String()); got != "user-ff8d9819fc0e12bf0d24892e45987e249a28dce8" {
		t.Fatalf("claim-name user = %q", got)
	}
	out.Reset()
	if code := Main(context.Background(), []string{"claim-name", "agent", "6F1C2B1E-9D2A-4C1E-8F3B-1A2B3C4D5E6F"}, &out, &errOut); code != 0 ||
		strings.TrimSpace(out.String()) != "agent-6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f" {
		t.Fatalf("claim-name agent = %q", out.String())
	}
	for _, bad := range [][]string{{"claim-name"}, {"claim-name", "group", "x"}, {"claim-name", "user", ""}} {
		if code := Main(context.Background(), bad, &out, &errOut); code != 2 {
			t.Errorf("%v: code %d, want 2", bad, code)
		}
	}
}

func TestStatusShowsExpiryAndRestartTargets(t *testing.T) {
	exp := metav1.NewTime(time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC))
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing"},
		Spec: authv1alpha1.AgentCredentialSpec{AgentID: "6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f", ExpiresAt: &exp,
			Rotation: authv1alpha1.RotationSpec{RestartTargets: []authv1alpha1.RestartTarget{
				{Kind: authv1alpha1.DeploymentKind, Name: "web"}, {Kind: authv1alpha1.StatefulSetKind, Name: "db"}, {Kind: authv1alpha1.DaemonSetKind, Name: "new"},
			}}},
		Status: authv1alpha1.AgentCredentialStatus{RestartTargets: []authv1alpha1.RestartTargetStatus{
			{Kind: authv1alpha1.DeploymentKind, Name: "web", State: authv1alpha1.Rolling, Message: "1 of 2 replicas updated"},
			{Kind: authv1alpha1.StatefulSetKind, Name: "db", State: authv1alpha1.RolledOut},
		}},
	}
	var out bytes.Buffer
	if err := fakeSession(t, interceptor.Funcs{}, cred).status(context.Background(), "billing", &out); err != nil {
		t.Fatal(err)
	}
	got := collapse(out.String())
	for _, want := range []string{
		"Expires: 2027-03-01T00:00:00Z",
		"Environment: live",
		"Restart target: Deployment/web: Rolling (1 of 2 replicas updated)",
		"Restart target: StatefulSet/db: RolledOut",
		"Restart target: DaemonSet/new: Pending",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCheckShowsTheIdentityHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") == "" {
			t.Errorf("an ak_ key must go in X-API-Key: %v", r.Header)
		}
		for k, v := range map[string]string{"X-Auth-Agent-ID": "a1", "X-Auth-Method": "api_key", "X-Auth-Environment": "sandbox"} {
			w.Header().Set(k, v)
		}
	}))
	defer srv.Close()
	var out bytes.Buffer
	if err := check(context.Background(), srv.Client(), srv.URL, "ak_test_x", "", &out); err != nil {
		t.Fatal(err)
	}
	got := collapse(out.String())
	for _, want := range []string{"Valid: yes", "Agent-ID: a1", "Environment: sandbox"} {
		if !slices.Contains(got, want) {
			t.Errorf("check lacks %q:\n%s", want, out.String())
		}
	}
}

// TestCheckTrustsTheCAFile: an https endpoint signed by a private CA is
// refused without --ca-file and trusted with it.
func TestCheckTrustsTheCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Auth-Agent-ID", "a1")
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	plain, _ := httpClient("")
	if err := check(context.Background(), plain, srv.URL, "ak_x", "", &out); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an unknown CA was trusted: %v", err)
	}
	withCA, err := httpClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(context.Background(), withCA, srv.URL, "ak_x", "", &out); err != nil {
		t.Fatalf("with --ca-file: %v", err)
	}
	if _, err := httpClient(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing --ca-file was accepted")
	}
	junk := filepath.Join(t.TempDir(), "junk")
	_ = os.WriteFile(junk, []byte("not pem"), 0o600)
	if _, err := httpClient(junk); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a file without PEM: %v", err)
	}
	if code := Main(context.Background(), []string{"check", "--key", "ak_x", "--url", srv.URL, "--ca-file", caFile}, &out, &out); code != 0 {
		t.Fatalf("kubectl agentcred check --ca-file: exit %d: %s", code, out.String())
	}
}
