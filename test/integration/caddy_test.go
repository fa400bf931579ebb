package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

// caddyConfigFile is the Caddyfile the README's Caddy snippet is taken from.
var caddyConfigFile = filepath.Join(controlplane.RepoRoot(), "test", "integration", "testdata", "Caddyfile.tmpl")

// startCaddy runs the real caddy (Debian's, with forward_auth) from the
// tested Caddyfile in front of upstream, and returns its base URL.
func startCaddy(t *testing.T, upstream string) string {
	t.Helper()
	return startCaddyFor(t, authAddr, upstream)
}

// startCaddyFor is startCaddy in front of the auth endpoint at auth.
func startCaddyFor(t *testing.T, auth, upstream string) string {
	t.Helper()
	bin, err := exec.LookPath("caddy")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("caddy is not installed; .ci/run installs it with apt-get")
		}
		t.Skip("caddy is not installed (apt-get install caddy); CI installs it")
	}
	dir := t.TempDir()
	listen := harness.FreeLoopbackAddr(t)
	tmpl, err := os.ReadFile(caddyConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer("{{listen}}", listen, "{{auth}}", auth, "{{upstream}}", upstream, "{{ca}}", authCAFile).Replace(string(tmpl))
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// Caddy keeps its state under XDG directories: keep them in the test's.
	t.Setenv("XDG_DATA_HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	p, err := harness.StartProcess("caddy", bin, []string{"run", "--config", path, "--adapter", "caddyfile"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			conn.Close()
			return "http://" + listen
		}
		if exited, exitErr := p.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("caddy did not come up on %s: %v", listen, exitErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCaddyForwardAuth: Caddy's forward_auth with the documented Caddyfile
// passes agentcred's identity to the upstream and nothing the client made
// up, keeps agentcred's refusals (status, JSON code, Retry-After) as they
// are, and never forwards the key.
func TestCaddyForwardAuth(t *testing.T) {
	g := NewWithT(t)
	proxy := startCaddy(t, identityEcho(t))
	cred, key := issuedKey(t, "behind-caddy")
	ns, agent := cred.Namespace, cred.Spec.AgentID
	spoofed := spoofedIdentity
	for _, carrier := range [][]string{{"X-API-Key", key}, {"Api-Key", key}, {"Authorization", "Bearer " + key}} {
		r := throughProxy(t, proxy, append(carrier, spoofed...)...)
		g.Expect(r.status).To(Equal(200), carrier[0])
		g.Expect(r.body).To(ContainSubstring(fmt.Sprintf("X-Auth-Agent-Id=[%q]", agent)))
		g.Expect(r.body).To(ContainSubstring(`X-Auth-Method=["api_key"]`))
		g.Expect(r.body).To(ContainSubstring(fmt.Sprintf("X-Auth-Credential=[%q]", ns+"/behind-caddy")))
		g.Expect(r.body).To(ContainSubstring(`X-Auth-Environment=["live"]`))
		g.Expect(r.body).NotTo(ContainSubstring("admin@example.com"), "a client-sent X-Auth-User reached the upstream (key sent as %s)", carrier[0])
		g.Expect(r.body).NotTo(ContainSubstring("kube-system/root"))
		g.Expect(r.body).NotTo(ContainSubstring(key), "the key reached the upstream (sent as %s)", carrier[0])
	}

	code := func(r proxied) string {
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal([]byte(r.body), &e)
		return e.Error.Code
	}
	wrong := []byte(key)
	wrong[20] ^= 0x01
	r := throughProxy(t, proxy, "X-API-Key", string(wrong))
	g.Expect(r.status).To(Equal(401))
	g.Expect(code(r)).To(Equal("invalid_credentials"))
	g.Expect(r.header.Get("WWW-Authenticate")).To(HavePrefix("Bearer"))
	g.Expect(r.body).NotTo(ContainSubstring("X-Auth"), "the upstream must not be reached")
	r = throughProxy(t, proxy)
	g.Expect(r.status).To(Equal(401))
	g.Expect(code(r)).To(Equal("missing_credentials"))
	r = throughProxy(t, proxy, "X-API-Key", key, "Authorization", "Bearer "+key+"x")
	g.Expect(r.status).To(Equal(400), "forward_auth keeps agentcred's 400 (no mode=auth_request needed)")
	g.Expect(code(r)).To(Equal("conflicting_credentials"))
}
