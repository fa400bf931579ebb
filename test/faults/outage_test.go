package faults

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/test/harness"
)

// outageProxy forwards TCP from a fixed loopback address to the API server;
// cutting it is an API server outage as the operator sees it (connections
// reset, then refused), while the test keeps its own direct connection.
type outageProxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]struct{}
}

func newOutageProxy(t *testing.T, target string) *outageProxy {
	t.Helper()
	p := &outageProxy{addr: harness.FreeLoopbackAddr(t), target: target, conns: map[net.Conn]struct{}{}}
	p.up(t)
	t.Cleanup(p.down)
	return p
}

func (p *outageProxy) up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *outageProxy) forward(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
	_, _ = io.Copy(c, s)
	_ = c.Close()
}

// down closes the listener and every forwarded connection.
func (p *outageProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

func TestAPIServerOutage(t *testing.T) {
	g := NewWithT(t)
	raw, err := os.ReadFile(kubeconfig)
	g.Expect(err).NotTo(HaveOccurred())
	m := regexp.MustCompile(`server: https://([^\s/]+)`).FindStringSubmatch(string(raw))
	g.Expect(m).NotTo(BeNil(), "no server in the kubeconfig")
	apiHost := m[1]
	proxy := newOutageProxy(t, apiHost)
	viaProxy := filepath.Join(t.TempDir(), "kubeconfig")
	rewritten := strings.ReplaceAll(string(raw), apiHost, proxy.addr)
	g.Expect(rewritten).To(ContainSubstring("server: https://"+proxy.addr), "the operator's kubeconfig must go through the proxy")
	g.Expect(os.WriteFile(viaProxy, []byte(rewritten), 0o600)).To(Succeed())

	// Throttling off: this test sends many failures on purpose.
	r := startReplicaWith(t, "outage", viaProxy, "--leader-elect=false", "--auth-failure-rate=0")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "outage-"}}
	g.Expect(k8s.Create(ctx, ns)).To(Succeed())
	newCred := func(name string) *authv1alpha1.AgentCredential {
		c := &authv1alpha1.AgentCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name},
			Spec:       authv1alpha1.AgentCredentialSpec{AgentID: fmt.Sprintf("ffffffff-0000-4000-8000-%012d", runs.Add(1))},
		}
		g.Expect(k8s.Create(ctx, c)).To(Succeed())
		return c
	}
	rotated, deleted := newCred("rotated"), newCred("deleted")
	waitConverged(t, []*authv1alpha1.AgentCredential{rotated, deleted}, 1)
	keyRotated, keyDeleted := agentKey(g, rotated), agentKey(g, deleted)
	g.Eventually(func() int { return verify(r.authURL, keyRotated) }).WithTimeout(10 * time.Second).Should(Equal(200))
	g.Eventually(func() int { return verify(r.authURL, keyDeleted) }).WithTimeout(10 * time.Second).Should(Equal(200))

	// The API server is gone for the operator.
	proxy.down()
	// A well-formed key (valid checksum) that was never issued: it reaches
	// the index lookup and must fail there, not at the checksum.
	unknown, err := credential.Generate(credential.APIKey)
	g.Expect(err).NotTo(HaveOccurred())
	g.Consistently(func(g Gomega) {
		g.Expect(verify(r.authURL, keyRotated)).To(Equal(200), "a known key must keep verifying from the index")
		g.Expect(verify(r.authURL, unknown)).To(Equal(401), "an unknown key must keep failing")
		g.Expect(get(r.authURL+"/readyz")).To(Equal(200), "readiness reflects the synced index, not the API server")
	}).WithTimeout(5 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	select {
	case <-r.exited:
		t.Fatalf("the manager exited during the outage\n%s", r.logs())
	default:
	}

	// Changes made meanwhile...
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"during-outage"}}}`, authv1alpha1.RotateAnnotation)
	g.Expect(k8s.Patch(ctx, rotated, client.RawPatch("application/merge-patch+json", []byte(patch)))).To(Succeed())
	g.Expect(k8s.Delete(ctx, deleted)).To(Succeed())
	g.Consistently(func() int { return verify(r.authURL, keyRotated) }).WithTimeout(2*time.Second).Should(Equal(200),
		"nothing can change while the operator cannot see the API server")

	// ...reach the endpoint when it returns.
	proxy.up(t)
	g.Eventually(func() int { return verify(r.authURL, keyRotated) }).WithTimeout(60*time.Second).WithPolling(100*time.Millisecond).Should(Equal(401),
		func() string { return "the rotation made during the outage never reached the endpoint\n" + r.logs() })
	g.Eventually(func() int { return verify(r.authURL, keyDeleted) }).WithTimeout(60 * time.Second).Should(Equal(401))
	g.Eventually(func(g Gomega) int { return verify(r.authURL, agentKey(g, rotated)) }).WithTimeout(60 * time.Second).Should(Equal(200))
	g.Expect(r.logs()).NotTo(ContainSubstring("panic"))
}

func get(url string) int {
	resp, err := httpClient.Get(url) //nolint:noctx // loopback probe
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
