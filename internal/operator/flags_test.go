package operator

import (
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	o, err := ParseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.OperatorNamespace != "agentcred-system" || o.AuthAddr != ":8082" || o.ProbeAddr != ":8081" ||
		!o.EnableController || !o.EnableWebhook || !o.EnableAuthEndpoint || o.WebhookPort != 9443 ||
		o.IdentityClaims != "auto" || o.ClaimHold.String() != "720h0m0s" {
		t.Fatalf("defaults wrong: %+v", o)
	}
	if o.MaxCredentialsPerNamespace != 1000 {
		t.Fatalf("--max-credentials-per-namespace defaults to %d, want 1000", o.MaxCredentialsPerNamespace)
	}
	if o, _ := ParseFlags([]string{"--max-credentials-per-namespace=0"}); o.MaxCredentialsPerNamespace != 0 {
		t.Fatal("--max-credentials-per-namespace=0 (no limit) not parsed")
	}
	t.Setenv("POD_NAMESPACE", "from-env")
	if o, _ := ParseFlags(nil); o.OperatorNamespace != "from-env" {
		t.Fatal("POD_NAMESPACE not used")
	}
	if o, _ := ParseFlags([]string{"--operator-namespace=flag"}); o.OperatorNamespace != "flag" {
		t.Fatal("--operator-namespace does not win over POD_NAMESPACE")
	}
	if o, _ := ParseFlags([]string{"--identity-claims=preassigned", "--claim-hold=1h"}); o.IdentityClaims != "preassigned" || o.ClaimHold.String() != "1h0m0s" {
		t.Fatalf("claim flags not parsed: %+v", o)
	}
	bad := map[string][]string{
		"session-ttl":                   {"--session-ttl=25h"},
		"max-concurrent-reconciles":     {"--max-concurrent-reconciles=0"},
		"auth-tls-cert-file":            {"--auth-tls-cert-file=/x"},
		"trusted-proxies":               {"--trusted-proxies=10.0.0.0/40"},
		"nothing to run":                {"--enable-controller=false", "--enable-webhook=false", "--enable-auth-endpoint=false"},
		"webhook-cert-management":       {"--webhook-cert-management=magic"},
		"session-key-rotation":          {"--session-key-rotation=1m"},
		"identity-claims":               {"--identity-claims=first-come"},
		"claim-hold":                    {"--claim-hold=30s"},
		"max-credentials-per-namespace": {"--max-credentials-per-namespace=-1"},
		"flag provided but not defined": {"--no-such-flag"},
		// The auth endpoint reads the operator namespace's Secrets: its CA
		// key must live elsewhere.
		"--webhook-cert-namespace apart": {"--auth-tls-secret-name=agentcred-auth-tls"},
	}
	if _, err := ParseFlags([]string{"--auth-tls-secret-name=agentcred-auth-tls", "--webhook-cert-namespace=agentcred-webhook-certs"}); err != nil {
		t.Fatalf("the install's TLS flags refused: %v", err)
	}
	for want, args := range bad {
		if _, err := ParseFlags(args); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseFlags(%v) error = %v, want it to mention %q", args, err, want)
		}
	}
}
