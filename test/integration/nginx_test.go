package integration

import (
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

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/test/harness"
)

// nginxConfig puts agentcred in front of an upstream with auth_request, the
// way docs/integrations.md shows.
const nginxConfig = `
worker_processes 1;
daemon off;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path {{dir}}/body;
  proxy_temp_path {{dir}}/proxy;
  fastcgi_temp_path {{dir}}/fastcgi;
  uwsgi_temp_path {{dir}}/uwsgi;
  scgi_temp_path {{dir}}/scgi;
  server {
    listen {{listen}};
    location = /_agentcred_verify {
      internal;
      proxy_pass http://{{auth}}/auth/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
    }
    location / {
      auth_request /_agentcred_verify;
      auth_request_set $agent_id $upstream_http_x_auth_agent_id;
      auth_request_set $auth_method $upstream_http_x_auth_method;
      proxy_set_header X-Auth-Agent-ID $agent_id;
      proxy_set_header X-Auth-Method $auth_method;
      proxy_set_header X-API-Key "";
      proxy_pass http://{{upstream}};
    }
  }
}
`

// startNginx runs the real nginx on loopback and stops it by its PID when
// the test ends; its files live in the test's temp dir.
func startNginx(t *testing.T, upstream string) string {
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
	conf := strings.NewReplacer("{{dir}}", dir, "{{listen}}", listen, "{{auth}}", authAddr, "{{upstream}}", upstream).Replace(nginxConfig)
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

func TestNginxAuthRequest(t *testing.T) {
	g := NewWithT(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "agent=%s method=%s apikey=%q", r.Header.Get("X-Auth-Agent-ID"), r.Header.Get("X-Auth-Method"), r.Header.Get("X-API-Key"))
	}))
	defer upstream.Close()
	proxy := startNginx(t, strings.TrimPrefix(upstream.URL, "http://"))

	ns := newNamespace(t)
	agent := newAgentID()
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "behind-nginx"},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: agent},
	}
	g.Expect(k8s.Create(ctx, cred)).To(Succeed())
	waitReady(t, cred)
	key := secretValue(t, ns, "behind-nginx", "api-key")
	eventuallyStatus(t, 200, "GET", "/auth/verify", "X-API-Key", key)

	get := func(key string) (int, string) {
		req, _ := http.NewRequest("GET", proxy+"/orders/42", nil)
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := get(key)
	g.Expect(status).To(Equal(200))
	g.Expect(body).To(Equal(fmt.Sprintf("agent=%s method=api_key apikey=\"\"", agent)), "nginx must set X-Auth-Agent-ID and strip the key")

	wrong := []byte(key)
	wrong[20] ^= 0x01
	status, body = get(string(wrong))
	g.Expect(status).To(Equal(401))
	g.Expect(body).NotTo(ContainSubstring("agent="), "the upstream must not be reached")
	status, _ = get("")
	g.Expect(status).To(Equal(401))
}
