package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(harness.Run(harness.RunInput{M: m, ShortTests: "^(TestRotationRequest|TestDefaults|TestDurationPatternMatchesParseDuration|TestTimePatternOnlyAdmitsWhatMetav1TimeDecodes|TestGeneratedSchemaUsesTheBounds)$", Setup: func(ctx context.Context, env *harness.Env) (func() error, error) {
		k8s = env.Client
		return nil, k8s.Create(ctx, &corev1Namespace)
	}}))
}

const (
	ns     = "validation"
	agentA = "6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"
	agentB = "0b7e2f4a-1c3d-4e5f-a6b7-c8d9e0f1a2b3"
)

func apiKey(name string, mutate func(*authv1alpha1.AgentCredential)) *authv1alpha1.AgentCredential {
	c := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: agentA},
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func TestSchemaDefaults(t *testing.T) {
	ctx := context.Background()
	c := apiKey("defaults", nil)
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatalf("create: %v", err)
	}
	if c.Spec.Type != authv1alpha1.APIKeyType {
		t.Errorf("type defaulted to %q, want APIKey", c.Spec.Type)
	}
	if c.Spec.Rotation.Period.Duration != 90*24*time.Hour {
		t.Errorf("period defaulted to %v, want 2160h", c.Spec.Rotation.Period.Duration)
	}
	if c.Spec.Rotation.GracePeriod.Duration != 10*time.Minute {
		t.Errorf("gracePeriod defaulted to %v, want 10m", c.Spec.Rotation.GracePeriod.Duration)
	}
	if c.Spec.Environment != authv1alpha1.LiveEnvironment {
		t.Errorf("environment defaulted to %q, want live", c.Spec.Environment)
	}
}

func TestSchemaRejectsInvalidManifests(t *testing.T) {
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
	}
	tests := []struct {
		name   string
		cred   *authv1alpha1.AgentCredential
		errors []string
	}{
		{"unknown environment", apiKey("staging", func(c *authv1alpha1.AgentCredential) { c.Spec.Environment = "staging" }),
			[]string{`spec.environment: Unsupported value: "staging"`}},
		{"too many restart targets", apiKey("targets", func(c *authv1alpha1.AgentCredential) {
			for i := range 21 {
				c.Spec.Rotation.RestartTargets = append(c.Spec.Rotation.RestartTargets, authv1alpha1.RestartTarget{Kind: authv1alpha1.DeploymentKind, Name: fmt.Sprintf("w%d", i)})
			}
		}), []string{"spec.rotation.restartTargets: Too many: 21: must have at most 20 items"}},
		{"duplicate restart targets", apiKey("dup-targets", func(c *authv1alpha1.AgentCredential) {
			t := authv1alpha1.RestartTarget{Kind: authv1alpha1.DeploymentKind, Name: "web"}
			c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{t, t}
		}), []string{"restartTargets must be unique"}},
		{"restart target of an unknown kind", apiKey("cron-target", func(c *authv1alpha1.AgentCredential) {
			c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{{Kind: "CronJob", Name: "nightly"}}
		}), []string{`spec.rotation.restartTargets[0].kind: Unsupported value: "CronJob"`}},
		{"restart target with an invalid name", apiKey("bad-target", func(c *authv1alpha1.AgentCredential) {
			c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{{Kind: authv1alpha1.DeploymentKind, Name: "Web_1"}}
		}), []string{"spec.rotation.restartTargets[0].name"}},
		{"missing agentID", apiKey("no-agent", func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = "" }),
			[]string{"agentID is required when type is APIKey"}},
		{"agentID and agents", apiKey("both", func(c *authv1alpha1.AgentCredential) { c.Spec.Agents = []string{agentB} }),
			[]string{"user and agents are only allowed when type is UserToken"}},
		{"user with a zero-width space", apiKey("zwsp", func(c *authv1alpha1.AgentCredential) {
			c.Spec = authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "ali\u200bce@example.com", Agents: []string{agentB}}
		}), []string{"spec.user"}},
		{"user with a control character", apiKey("ctrl", func(c *authv1alpha1.AgentCredential) {
			c.Spec = authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "alice\x00@example.com", Agents: []string{agentB}}
		}), []string{"spec.user"}},
		{"bad UUID", apiKey("bad-uuid", func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = "not-a-uuid" }),
			[]string{"spec.agentID", "agentID must be a UUID such as 6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"}},
		{"bad UUID among agents", apiKey("bad-agents", func(c *authv1alpha1.AgentCredential) {
			c.Spec = authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "u", Agents: []string{agentA, "nope"}}
		}), []string{"spec.agents", "agents must be UUIDs such as"}},
		{"period 30m", apiKey("short", func(c *authv1alpha1.AgentCredential) { c.Spec.Rotation.Period = dur(30 * time.Minute) }),
			[]string{"spec.rotation.period", "period must be between 1h and 8760h"}},
		{"period over a year", apiKey("long", func(c *authv1alpha1.AgentCredential) { c.Spec.Rotation.Period = dur(9000 * time.Hour) }),
			[]string{"period must be between 1h and 8760h"}},
		{"gracePeriod equal to period", apiKey("grace", func(c *authv1alpha1.AgentCredential) {
			c.Spec.Rotation.Period = dur(time.Hour)
			c.Spec.Rotation.GracePeriod = dur(time.Hour)
		}), []string{"spec.rotation", "gracePeriod must be shorter than period"}},
		{"unknown type", apiKey("type", func(c *authv1alpha1.AgentCredential) { c.Spec.Type = "Password" }),
			[]string{"spec.type", "Unsupported value"}},
		{"user token without agents", apiKey("ut-no-agents", func(c *authv1alpha1.AgentCredential) {
			c.Spec.Type = authv1alpha1.UserTokenType
			c.Spec.AgentID = ""
			c.Spec.User = "alice@example.com"
		}), []string{"user and agents are required when type is UserToken"}},
		{"user token with agentID", apiKey("ut-agent-id", func(c *authv1alpha1.AgentCredential) {
			c.Spec.Type = authv1alpha1.UserTokenType
			c.Spec.User = "alice@example.com"
			c.Spec.Agents = []string{agentB}
		}), []string{"agentID is not allowed when type is UserToken"}},
		{"duplicate agents", apiKey("dup", func(c *authv1alpha1.AgentCredential) {
			c.Spec.Type = authv1alpha1.UserTokenType
			c.Spec.AgentID = ""
			c.Spec.User = "alice@example.com"
			c.Spec.Agents = []string{agentA, strings.ToUpper(agentA)}
		}), []string{"agents must be unique"}},
		{"101 agents", apiKey("many", func(c *authv1alpha1.AgentCredential) {
			c.Spec.Type = authv1alpha1.UserTokenType
			c.Spec.AgentID = ""
			c.Spec.User = "alice@example.com"
			c.Spec.Agents = many
		}), []string{"spec.agents", "must have at most 100 items"}},
		{"bad secretName", apiKey("bad-secret", func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "Not_A_Name" }),
			[]string{"spec.secretName", "should match"}},
		{"sessionTTL too long", apiKey("ttl", func(c *authv1alpha1.AgentCredential) {
			c.Spec.SessionTTL = dur(48 * time.Hour)
		}), []string{"sessionTTL must be between 1m and 24h"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), tt.cred)
			if err == nil {
				t.Fatal("create succeeded, want rejection")
			}
			for _, want := range tt.errors {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err.Error(), want)
				}
			}
		})
	}
}

func TestSchemaAcceptsUserToken(t *testing.T) {
	c := apiKey("user-token", func(c *authv1alpha1.AgentCredential) {
		c.Spec.Type = authv1alpha1.UserTokenType
		c.Spec.AgentID = ""
		c.Spec.User = "alice@example.com"
		c.Spec.Agents = []string{agentA, agentB}
	})
	if err := k8s.Create(context.Background(), c); err != nil {
		t.Fatalf("create: %v", err)
	}
}

func TestSchemaKeepsImmutableFields(t *testing.T) {
	ctx := context.Background()
	base := apiKey("immutable", func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "immutable-key" })
	if err := k8s.Create(ctx, base); err != nil {
		t.Fatalf("create: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*authv1alpha1.AgentCredential)
		want   string
	}{
		{"agentID", func(c *authv1alpha1.AgentCredential) { c.Spec.AgentID = agentB }, "agentID is immutable"},
		{"secretName", func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "other" }, "secretName is immutable"},
		{"secretName removed", func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "" }, "secretName is immutable"},
		{"type", func(c *authv1alpha1.AgentCredential) {
			c.Spec.Type = authv1alpha1.UserTokenType
			c.Spec.AgentID = ""
			c.Spec.User = "bob@example.com"
			c.Spec.Agents = []string{agentA}
		}, "type is immutable"},
		{"environment", func(c *authv1alpha1.AgentCredential) { c.Spec.Environment = authv1alpha1.SandboxEnvironment }, "environment is immutable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &authv1alpha1.AgentCredential{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(base), c); err != nil {
				t.Fatal(err)
			}
			tt.mutate(c)
			err := k8s.Update(ctx, c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("update error = %v, want %q", err, tt.want)
			}
		})
	}
	// Mutable fields still change.
	c := &authv1alpha1.AgentCredential{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(base), c); err != nil {
		t.Fatal(err)
	}
	c.Spec.Rotation.Period = dur(48 * time.Hour)
	if err := k8s.Update(ctx, c); err != nil {
		t.Fatalf("changing the period was refused: %v", err)
	}
}

func TestUserTokenUserIsImmutable(t *testing.T) {
	ctx := context.Background()
	c := apiKey("ut-immutable", func(c *authv1alpha1.AgentCredential) {
		c.Spec.Type = authv1alpha1.UserTokenType
		c.Spec.AgentID = ""
		c.Spec.User = "alice@example.com"
		c.Spec.Agents = []string{agentA}
	})
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Spec.User = "mallory@example.com"
	if err := k8s.Update(ctx, c); err == nil || !strings.Contains(err.Error(), "user is immutable") {
		t.Fatalf("update error = %v, want user is immutable", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
		t.Fatal(err)
	}
	c.Spec.Agents = []string{agentA, agentB}
	if err := k8s.Update(ctx, c); err != nil {
		t.Fatalf("adding an agent was refused: %v", err)
	}
}

// TestSamplesAreAccepted applies every sample in config/samples.
func TestSamplesAreAccepted(t *testing.T) {
	dir := filepath.Join(controlplane.RepoRoot(), "config", "samples")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "auth_") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		c := &authv1alpha1.AgentCredential{}
		if err := yaml.UnmarshalStrict(raw, c); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		c.Namespace = ns
		if err := k8s.Create(context.Background(), c); err != nil {
			t.Errorf("%s was rejected: %v", e.Name(), err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("found %d samples, want 3", n)
	}
}

// TestSecretNameMayBeSetToItsDefault: GitOps tools often write out defaults;
// setting spec.secretName to the name it defaults to (or removing it when it
// is that) is not a change and is allowed; any other change is refused.
func TestSecretNameMayBeSetToItsDefault(t *testing.T) {
	ctx := context.Background()
	c := apiKey("default-secret", nil)
	c.Spec.AgentID = agentB
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Spec.SecretName = "default-secret"
	if err := k8s.Update(ctx, c); err != nil {
		t.Fatalf("setting secretName to its default: %v", err)
	}
	c.Spec.SecretName = ""
	if err := k8s.Update(ctx, c); err != nil {
		t.Fatalf("removing secretName equal to its default: %v", err)
	}
	c.Spec.SecretName = "something-else"
	if err := k8s.Update(ctx, c); err == nil || !strings.Contains(err.Error(), "secretName is immutable") {
		t.Fatalf("changing secretName: %v", err)
	}
}
