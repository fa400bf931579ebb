package v1alpha1

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRotationRequest(t *testing.T) {
	long := strings.Repeat("x", 10<<10)
	tests := []struct {
		name, value, want string
	}{
		{"none", "", ""},
		{"short", "2026-11-28", "2026-11-28"},
		{"at the limit", strings.Repeat("a", MaxRotationRequestLen), strings.Repeat("a", MaxRotationRequestLen)},
	}
	for _, tt := range tests {
		c := &AgentCredential{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{RotateAnnotation: tt.value}}}
		if got := c.RotationRequest(); got != tt.want {
			t.Errorf("%s: RotationRequest() = %q, want %q", tt.name, got, tt.want)
		}
	}
	c := &AgentCredential{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{RotateAnnotation: long}}}
	got := c.RotationRequest()
	if !strings.HasPrefix(got, "sha256:") || len(got) != 7+64 {
		t.Fatalf("a 10 KiB request is recorded as %d characters", len(got))
	}
	c.Annotations[RotateAnnotation] = long + "y"
	if c.RotationRequest() == got {
		t.Fatal("two different long requests are recorded the same")
	}
}

func TestDefaults(t *testing.T) {
	c := &AgentCredential{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
	if c.CredentialType() != APIKeyType || c.SecretName() != "n" || c.RotationPeriod() != 90*24*time.Hour || c.GracePeriod() != 10*time.Minute {
		t.Fatalf("defaults wrong: %s %s %s %s", c.CredentialType(), c.SecretName(), c.RotationPeriod(), c.GracePeriod())
	}
}
