package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/authcert"
	"github.com/agrenting/agentcred/internal/authserver"
	"github.com/agrenting/agentcred/test/harness"
)

// nginxConfigFile puts agentcred in front of an upstream with
// auth_request. Its location blocks are the snippet in README.md and
// docs/auth-endpoint.md (test/docs checks they match), with {{auth}} for
// agentcred's address and {{upstream}} for the backend.
const nginxConfigFile = "testdata/nginx.conf.tmpl"

// startNginx runs the real nginx on loopback and stops it by its PID when
// the test ends; its files live in the test's temp dir.
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	return startNginxFor(t, authAddr, upstream)
}

// startNginxFor is startNginx in front of the auth endpoint at auth.
func startNginxFor(t *testing.T, auth, upstream string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, statErr := os.Stat(p); statErr == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx is not installed; .ci/run installs it with apt-get")
		}
		t.Skip("nginx is not installed (apt-get install nginx); CI installs it")
	}
	dir := t.TempDir()
	listen := harness.FreeLoopbackAddr(t)
	tmpl, err := os.ReadFile(nginxConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{listen}}", listen, "{{auth}}", auth, "{{upstream}}", upstream, "{{ca}}", authCAFile).Replace(string(tmpl))
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	NewWithT(t).Eventually(func() error {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			_ = c.Close()
		}
		return err
	}).WithTimeout(10 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
	return "http://" + listen
}

// TestNginxAuthRequest: through the real nginx with the documented
// snippet, a valid key reaches the upstream as agentcred's identity only —
// every X-Auth-* header is agentcred's (a client-sent one never passes) and
// no credential header (X-API-Key, Api-Key, Authorization) reaches it — and
// an invalid or missing key never reaches it at all.
func TestNginxAuthRequest(t *testing.T) {
	g := NewWithT(t)
	proxy := startNginx(t, identityEcho(t))
	cred, key := issuedKey(t, "behind-nginx")
	ns, agent := cred.Namespace, cred.Spec.AgentID

	get := func(headers ...string) (int, string) {
		r := throughProxy(t, proxy, headers...)
		return r.status, r.body
	}
	spoofed := spoofedIdentity
	want := strings.Join([]string{
		fmt.Sprintf("X-Auth-Agent-Id=[%q]", agent), `X-Auth-Method=["api_key"]`, fmt.Sprintf("X-Auth-Key-Id=[%q]", cred.Status.KeyID),
		fmt.Sprintf("X-Auth-Credential=[%q]", ns+"/behind-nginx"), `X-Auth-User=[]`, `X-Auth-Environment=["live"]`, `X-Api-Key=[]`, `Api-Key=[]`, `Authorization=[]`, "",
	}, "\n")
	for _, carrier := range [][]string{{"X-API-Key", key}, {"Api-Key", key}, {"Authorization", "Bearer " + key}} {
		status, body := get(append(carrier, spoofed...)...)
		g.Expect(status).To(Equal(200), carrier[0])
		g.Expect(body).To(Equal(want), "the upstream must see agentcred's identity and no credential (key sent as %s)", carrier[0])
	}
	// The live-only route: the live key passes with the same identity...
	r := throughProxy(t, proxy+"/payments", append([]string{"X-API-Key", key}, spoofed...)...)
	g.Expect(r.status).To(Equal(200))
	g.Expect(r.body).To(Equal(want))
	// ... and a sandbox key, valid on the open route, gets 403 environment_not_permitted.
	sb := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sandbox-behind-nginx"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: newAgentID(), Environment: authv1alpha1.SandboxEnvironment},
	}
	g.Expect(k8s.Create(ctx, sb)).To(Succeed())
	waitReady(t, sb)
	sandboxKey := secretValue(t, ns, "sandbox-behind-nginx", "api-key")
	eventuallyStatus(t, 200, "GET", "/auth/verify", "X-API-Key", sandboxKey)
	r = throughProxy(t, proxy, "X-API-Key", sandboxKey)
	g.Expect(r.status).To(Equal(200))
	g.Expect(r.body).To(ContainSubstring(`X-Auth-Environment=["sandbox"]`))
	r = throughProxy(t, proxy+"/payments", "X-API-Key", sandboxKey)
	g.Expect(r.status).To(Equal(403), r.body)
	g.Expect(r.body).To(ContainSubstring("environment_not_permitted"))
	g.Expect(r.body).NotTo(ContainSubstring("X-Auth"), "the upstream must not be reached")

	wrong := []byte(key)
	wrong[20] ^= 0x01
	status, body := get("X-API-Key", string(wrong))
	g.Expect(status).To(Equal(401))
	g.Expect(body).NotTo(ContainSubstring("X-Auth"), "the upstream must not be reached")
	status, _ = get()
	g.Expect(status).To(Equal(401))
}

// TestNginxKeepsEveryStatus: nginx passes only 401 and 403 from an auth
// subrequest (anything else becomes its own 500); with mode=auth_request and
// the documented error_page, the client gets agentcred's real status, error
// code, WWW-Authenticate and Retry-After: 400, 401, 403 and 429.
func TestNginxKeepsEveryStatus(t *testing.T) {
	g := NewWithT(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "upstream") }))
	defer upstream.Close()
	proxy := startNginx(t, strings.TrimPrefix(upstream.URL, "http://"))

	ns := newNamespace(t)
	agent := newAgentID()
	tok := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "statuses"},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "status@example.com", Agents: []string{agent, newAgentID()}},
	}
	g.Expect(k8s.Create(ctx, tok)).To(Succeed())
	waitReady(t, tok)
	token := secretValue(t, ns, "statuses", "token")
	eventuallyStatus(t, 200, "GET", "/auth/verify", "Authorization", "Bearer "+token, "X-Agent-ID", agent)

	get := func(base string, headers ...string) proxied { return throughProxy(t, base, headers...) }
	code := func(r proxied) string {
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal([]byte(r.body), &e)
		return e.Error.Code
	}
	r := get(proxy, "Authorization", "Bearer "+token)
	g.Expect(r.status).To(Equal(400), r.body)
	g.Expect(code(r)).To(Equal("agent_id_required"))
	r = get(proxy, "Authorization", "Bearer "+token, "X-API-Key", "ak_x")
	g.Expect(r.status).To(Equal(400), r.body)
	g.Expect(code(r)).To(Equal("conflicting_credentials"))
	r = get(proxy, "Authorization", "Bearer "+token, "X-Agent-ID", newAgentID())
	g.Expect(r.status).To(Equal(403), r.body)
	g.Expect(code(r)).To(Equal("agent_not_permitted"))
	r = get(proxy, "X-API-Key", "ak_wrong")
	g.Expect(r.status).To(Equal(401), r.body)
	g.Expect(code(r)).To(Equal("invalid_credentials"))
	g.Expect(r.header.Get("WWW-Authenticate")).To(HavePrefix("Bearer"))
	g.Expect(get(proxy, "Authorization", "Bearer "+token, "X-Agent-ID", agent).body).To(Equal("upstream"))

	// 429: an endpoint that throttles (the suite's does not), behind its own nginx.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	throttling, err := authserver.New(authserver.NewIndex(), authserver.Options{
		Listener: ln, FailureRate: 0.01, FailureBurst: 1, Log: logr.Discard(), TLSCertFile: authCertFile, TLSKeyFile: authKeyFile,
	})
	g.Expect(err).NotTo(HaveOccurred())
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- throttling.Start(runCtx) }()
	defer func() { cancel(); g.Expect(<-done).To(Succeed()) }()
	throttled := startNginxFor(t, ln.Addr().String(), strings.TrimPrefix(upstream.URL, "http://"))
	g.Eventually(func() int { return get(throttled, "X-API-Key", "ak_wrong").status }).WithTimeout(timeout).Should(Equal(429))
	r = get(throttled, "X-API-Key", "ak_wrong")
	g.Expect(r.status).To(Equal(429), r.body)
	g.Expect(code(r)).To(Equal("rate_limited"))
	g.Expect(r.header.Get("Retry-After")).NotTo(BeEmpty())
}

// proxied is what a client got through nginx.
type proxied struct {
	status int
	body   string
	header http.Header
}

// throughProxy sends GET /orders/42 with headers (name, value, …) to the
// nginx at base.
func throughProxy(t *testing.T, base string, headers ...string) proxied {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/orders/42", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return proxied{resp.StatusCode, string(b), resp.Header}
}

// TestProxiesRefuseAnImpostorEndpoint: whoever answers at the auth
// endpoint's address with a certificate from another CA — for the right
// name, saying yes to every request — is not believed. Through the
// documented nginx and Caddy configs no request reaches the upstream, since
// they trust only the CA agentcred publishes.
func TestProxiesRefuseAnImpostorEndpoint(t *testing.T) {
	g := NewWithT(t)
	other, err := authcert.NewCA(time.Now(), []string{authServerName})
	g.Expect(err).NotTo(HaveOccurred())
	certPEM, keyPEM, err := other.Issue([]string{authServerName}, time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	g.Expect(err).NotTo(HaveOccurred())
	impostor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(authserver.HeaderAgentID, "00000000-0000-4000-8000-000000000000")
		w.Header().Set(authserver.HeaderCredential, "kube-system/root")
	}))
	impostor.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	impostor.StartTLS()
	defer impostor.Close()
	reached := make(chan struct{}, 16)
	upstream := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached <- struct{}{} }))
	defer upstream.Close()
	addr, up := strings.TrimPrefix(impostor.URL, "https://"), strings.TrimPrefix(upstream.URL, "http://")
	for name, proxy := range map[string]string{"nginx": startNginxFor(t, addr, up), "caddy": startCaddyFor(t, addr, up)} {
		r := throughProxy(t, proxy, "X-API-Key", "ak_anything")
		g.Expect(r.status).To(BeNumerically(">=", 500), "%s believed an endpoint with another CA's certificate: %s", name, r.body)
	}
	g.Expect(reached).To(BeEmpty(), "a request reached the upstream")
}
