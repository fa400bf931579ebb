// Package e2e drives the user journey of the README against `make run`, with
// the installed kubectl and the kubectl-agentcred plugin, as a newcomer would.
package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/agrenting/agentcred/test/controlplane"
	"github.com/agrenting/agentcred/test/harness"
)

const (
	sampleAgent = "6f1c2b1e-9d2a-4c1e-8f3b-1a2b3c4d5e6f"
	aliceAgent  = "3d9a8c7b-6e5f-4a3b-9c2d-1e0f9a8b7c6d"
	timeout     = 60 * time.Second
)

// localRun is `make run` running in its own process group.
type localRun struct {
	cmd        *exec.Cmd
	kubeconfig string
	authURL    string
	output     *harness.SyncBuffer
	exited     chan error
	// outputClosed closes when every process holding make's stdout — make,
	// go run, agentcred-local and anything they started — is gone.
	outputClosed chan struct{}
}

func startMakeRun(t *testing.T) *localRun {
	t.Helper()
	// No reachable cluster: KUBECONFIG names a file that does not exist.
	return startMakeRunWith(t, filepath.Join(t.TempDir(), "none"))
}

// startMakeRunWith starts make run with KUBECONFIG=kubeconfig.
func startMakeRunWith(t *testing.T, kubeconfig string) *localRun {
	t.Helper()
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	authAddr, probeAddr := harness.FreeLoopbackAddr(t), harness.FreeLoopbackAddr(t)
	cmd := exec.Command("make", "-s", "run",
		"ARGS=--auth-bind-address="+authAddr+" --health-probe-bind-address="+probeAddr+" --metrics-bind-address=0")
	cmd.Dir = controlplane.RepoRoot()
	cmd.Env = append(os.Environ(), "KUBEBUILDER_ASSETS="+assets, "KUBECONFIG="+kubeconfig)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = w.Close() // only make and its children hold the writing end now
	r := &localRun{cmd: cmd, authURL: "http://" + authAddr, output: &harness.SyncBuffer{}, exited: make(chan error, 1), outputClosed: make(chan struct{})}
	ready := make(chan struct{})
	go func() { r.exited <- cmd.Wait() }()
	go func() {
		defer close(r.outputClosed)
		defer stdout.Close()
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			line := scanner.Text()
			r.output.WriteString(line + "\n")
			if p, ok := strings.CutPrefix(strings.TrimSpace(line), "export KUBECONFIG="); ok {
				r.kubeconfig = p
			}
			if strings.HasPrefix(line, "Press Ctrl-C to stop") {
				close(ready)
			}
		}
	}()
	t.Cleanup(func() { r.stop(t) })
	select {
	case <-ready:
	case err := <-r.exited:
		r.exited <- err
		t.Fatalf("make run exited before it was ready: %v\n%s", err, r.output)
	case <-time.After(4 * time.Minute):
		t.Fatalf("make run was not ready after 4 minutes\n%s", r.output)
	}
	return r
}

// stop sends SIGINT, as Ctrl-C does, to make and everything it started, and
// waits until every one of those processes is gone. make itself reports the
// interrupt with a non-zero status, as it always does on Ctrl-C; what counts
// is that agentcred-local shut down in order and nothing is left running.
func (r *localRun) stop(t *testing.T) {
	select {
	case <-r.outputClosed:
		return
	default:
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-r.outputClosed:
	case <-time.After(timeout):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		t.Errorf("make run did not stop within %s of SIGINT\n%s", timeout, r.output)
	}
	select {
	case err := <-r.exited:
		// make reports Ctrl-C as an interrupt (non-zero); that is expected.
		t.Logf("make run exited: %v", err)
	case <-time.After(timeout):
		t.Errorf("make did not exit")
	}
}

// kubectl runs the installed kubectl against the local control plane, with
// the plugin on PATH.
func (r *localRun) kubectl(t *testing.T, pluginDir, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("kubectl", args...)
	cmd.Dir = controlplane.RepoRoot()
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.kubeconfig, "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *localRun) mustKubectl(t *testing.T, pluginDir string, args ...string) string {
	t.Helper()
	out, err := r.kubectl(t, pluginDir, "", args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func verify(t *testing.T, url string, headers ...string) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/auth/verify", nil)
	for i := 0; i < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// errorCode is "STATUS code" of the answer of url (the auth endpoint's
// base URL, meaning /auth/verify, or a full /auth/verify URL) for an API key.
func errorCode(t *testing.T, url, key string) string {
	t.Helper()
	if !strings.Contains(url, "/auth/verify") {
		url += "/auth/verify"
	}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return fmt.Sprintf("%d %s", resp.StatusCode, body.Error.Code)
}

func buildPlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-agentcred"), "./cmd/kubectl-agentcred")
	cmd.Dir = controlplane.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl-agentcred: %v\n%s", err, out)
	}
	return dir
}

func TestNewcomerJourney(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: it runs make run's binary on a real control plane")
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kubectl is not installed; .ci/run must install it")
		}
		t.Skip("kubectl is not installed")
	}
	g := NewWithT(t)
	plugin := buildPlugin(t)
	r := startMakeRun(t)
	g.Expect(r.kubeconfig).NotTo(BeEmpty(), "make run must print export KUBECONFIG=…")
	g.Expect(r.output.String()).To(ContainSubstring("curl -i -H \"X-API-Key: $KEY\" " + r.authURL + "/auth/verify"))
	g.Expect(r.output.String()).To(ContainSubstring("plain HTTP on loopback"), "make run must say its endpoint is plain HTTP")
	g.Expect(r.output.String()).NotTo(ContainSubstring("check failed"), "make run's start must not log failed readiness checks")

	// Apply the samples and wait for them.
	g.Expect(r.mustKubectl(t, plugin, "apply", "-f", "config/samples/")).To(ContainSubstring("agentcredential.auth.agrenting.io/billing-agent created"))
	r.mustKubectl(t, plugin, "wait", "--for=condition=Ready", "agentcredential/billing-agent", "agentcredential/alice", "agentcredential/billing-agent-test", "--timeout=60s")
	readKey := func() string {
		b64 := r.mustKubectl(t, plugin, "get", "secret", "billing-agent", "-o", "jsonpath={.data.api-key}")
		key, err := base64.StdEncoding.DecodeString(b64)
		g.Expect(err).NotTo(HaveOccurred())
		return string(key)
	}
	key := readKey()
	g.Expect(key).To(HavePrefix("ak_"))

	// curl -H "X-API-Key: $KEY" …/auth/verify
	status, h := verify(t, r.authURL, "X-API-Key", key)
	g.Expect(status).To(Equal(200))
	g.Expect(h.Get("X-Auth-Agent-ID")).To(Equal(sampleAgent))
	g.Expect(h.Get("X-Auth-Credential")).To(Equal("default/billing-agent"))

	g.Expect(h.Get("X-Auth-Environment")).To(Equal("live"))

	// The sandbox sample: an ak_test_ key, refused by a live-only route.
	b64 := r.mustKubectl(t, plugin, "get", "secret", "billing-agent-test", "-o", "jsonpath={.data.api-key}")
	testKey, err := base64.StdEncoding.DecodeString(b64)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(testKey)).To(HavePrefix("ak_test_"))
	status, h = verify(t, r.authURL, "X-API-Key", string(testKey))
	g.Expect(status).To(Equal(200))
	g.Expect(h.Get("X-Auth-Environment")).To(Equal("sandbox"))
	g.Expect(errorCode(t, r.authURL+"/auth/verify?environment=live", string(testKey))).To(Equal("403 environment_not_permitted"))
	g.Expect(r.mustKubectl(t, plugin, "get", "agentcredentials")).To(MatchRegexp(`billing-agent-test\s+APIKey\s+sandbox`))

	// Mint a session and use it.
	req, _ := http.NewRequest("POST", r.authURL+"/auth/authenticate", nil)
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	var tok struct {
		Token   string `json:"token"`
		AgentID string `json:"agent_id"`
	}
	g.Expect(json.NewDecoder(resp.Body).Decode(&tok)).To(Succeed())
	resp.Body.Close()
	g.Expect(tok.AgentID).To(Equal(sampleAgent))
	status, h = verify(t, r.authURL, "Authorization", "Bearer "+tok.Token)
	g.Expect(status).To(Equal(200))
	g.Expect(h.Get("X-Auth-Method")).To(Equal("session"))

	// The plugin: status, key, check.
	out := r.mustKubectl(t, plugin, "agentcred", "status", "billing-agent")
	g.Expect(out).To(MatchRegexp(`Key ID:\s+%s`, h.Get("X-Auth-Key-ID")))
	g.Expect(out).To(ContainSubstring("Condition Ready"))
	g.Expect(strings.TrimSpace(r.mustKubectl(t, plugin, "agentcred", "key", "billing-agent"))).To(Equal(key))
	g.Expect(r.mustKubectl(t, plugin, "agentcred", "check", "billing-agent", "--url", r.authURL)).To(MatchRegexp(`Agent-ID:\s+%s`, sampleAgent))
	g.Expect(r.mustKubectl(t, plugin, "agentcred", "check", "alice", "--url", r.authURL, "--agent-id", aliceAgent)).To(ContainSubstring("user_token"))

	// kubectl annotate … auth.agrenting.io/rotate=…: the old key fails, the new one passes, the session ends.
	r.mustKubectl(t, plugin, "annotate", "agentcredential", "billing-agent", "auth.agrenting.io/rotate=e2e-1", "--overwrite")
	g.Eventually(func() int { s, _ := verify(t, r.authURL, "X-API-Key", key); return s }).WithTimeout(timeout).Should(Equal(401))
	newKey := readKey()
	g.Expect(newKey).NotTo(Equal(key))
	g.Eventually(func() int { s, _ := verify(t, r.authURL, "X-API-Key", newKey); return s }).WithTimeout(timeout).Should(Equal(200))
	status, _ = verify(t, r.authURL, "Authorization", "Bearer "+tok.Token)
	g.Expect(status).To(Equal(401), "a session must end with the key that minted it")

	// The plugin rotates too.
	g.Expect(r.mustKubectl(t, plugin, "agentcred", "rotate", "billing-agent")).To(ContainSubstring("Rotation of default/billing-agent requested"))
	g.Eventually(func() int { s, _ := verify(t, r.authURL, "X-API-Key", newKey); return s }).WithTimeout(timeout).Should(Equal(401))

	// A manifest the webhook refuses shows its message in kubectl's output.
	out, err = r.kubectl(t, plugin, `apiVersion: auth.agrenting.io/v1alpha1
kind: AgentCredential
metadata: {name: thief}
spec: {agentID: 0b7e2f4a-1c3d-4e5f-a6b7-c8d9e0f1a2b3, secretName: alice-token}
`, "apply", "-f", "-")
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring(`spec.secretName: Forbidden: Secret "alice-token" belongs to AgentCredential "alice"`))

	// A credential with a hard expiry: it works until spec.expiresAt, then
	// answers 401 expired_credentials, and reports Ready=False/Expired.
	expiresAt := time.Now().Add(8 * time.Second).UTC().Format(time.RFC3339)
	out, err = r.kubectl(t, plugin, `apiVersion: auth.agrenting.io/v1alpha1
kind: AgentCredential
metadata: {name: contractor}
spec: {agentID: 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d, expiresAt: "`+expiresAt+`"}
`, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("spec.expiresAt: " + expiresAt + " comes before the next scheduled rotation"))
	r.mustKubectl(t, plugin, "wait", "--for=condition=Ready", "agentcredential/contractor", "--timeout=60s")
	b64 = r.mustKubectl(t, plugin, "get", "secret", "contractor", "-o", "jsonpath={.data.api-key}")
	contractorKey, err := base64.StdEncoding.DecodeString(b64)
	g.Expect(err).NotTo(HaveOccurred())
	status, _ = verify(t, r.authURL, "X-API-Key", string(contractorKey))
	g.Expect(status).To(Equal(200))
	g.Eventually(func() string { return errorCode(t, r.authURL, string(contractorKey)) }).WithTimeout(timeout).WithPolling(250 * time.Millisecond).
		Should(Equal("401 expired_credentials"))
	r.mustKubectl(t, plugin, "wait", `--for=jsonpath={.status.conditions[?(@.type=="Ready")].reason}=Expired`, "agentcredential/contractor", "--timeout=60s")
	g.Expect(r.mustKubectl(t, plugin, "agentcred", "status", "contractor")).To(ContainSubstring("Expires:"))

	// kubectl delete: the key stops working.
	latest := readKey()
	r.mustKubectl(t, plugin, "delete", "agentcredential", "billing-agent", "--wait=true", "--timeout=60s")
	g.Eventually(func() int { s, _ := verify(t, r.authURL, "X-API-Key", latest); return s }).WithTimeout(timeout).Should(Equal(401))

	// Ctrl-C stops everything and removes what make run made.
	apiServer := apiServerAddress(t, r.kubeconfig)
	r.stop(t)
	g.Expect(r.output.String()).To(ContainSubstring("agentcred-local: stopping"))
	g.Expect(r.output.String()).To(ContainSubstring("stopped kube-apiserver and etcd"), "agentcred-local must shut down in order on SIGINT")
	_, err = os.Stat(filepath.Dir(r.kubeconfig))
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the kubeconfig directory must be removed")
	conn, err := net.DialTimeout("tcp", apiServer, time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("kube-apiserver still listens on %s after make run stopped", apiServer)
	}
}

// apiServerAddress reads host:port of the server from a kubeconfig.
func apiServerAddress(t *testing.T, kubeconfig string) string {
	t.Helper()
	raw, err := os.ReadFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "server: "); ok {
			return strings.TrimPrefix(strings.TrimPrefix(v, "https://"), "http://")
		}
	}
	t.Fatalf("no server in %s", kubeconfig)
	return ""
}
