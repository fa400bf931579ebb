package integration

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/test/harness"
)

const (
	timeout  = 15 * time.Second
	interval = 20 * time.Millisecond
)

func zapLevelDebug() zapcore.Level { return zapcore.DebugLevel }

// allLogs keeps every log line of the operator, for the leak scan.
var allLogs = &harness.SyncBuffer{}

// levelFilter passes only warnings and errors (JSON lines) to w.
type levelFilter struct{ w io.Writer }

func (f levelFilter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"level":"warn`)) || bytes.Contains(p, []byte(`"level":"error`)) {
		return f.w.Write(p)
	}
	return len(p), nil
}

var counter atomic.Int64

func newAgentID() string { return fmt.Sprintf("aaaaaaaa-1111-4000-8000-%012d", counter.Add(1)) }

func newNamespace(t *testing.T) string { return harness.NewNamespace(t, k8s, "it") }

func waitReady(t *testing.T, cred *authv1alpha1.AgentCredential) *authv1alpha1.AgentCredential {
	t.Helper()
	out := &authv1alpha1.AgentCredential{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cred), out)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(out.Status.Conditions, authv1alpha1.ReadyCondition)).To(BeTrue())
		g.Expect(out.Status.ObservedGeneration).To(Equal(out.Generation))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	return out
}

func secretValue(t *testing.T, ns, name, key string) string {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return string(s.Data[key])
}

type response struct {
	status int
	header http.Header
	body   string
}

func call(t *testing.T, method, path string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, authURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := authClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b)}
}

// eventuallyStatus polls until the call answers want.
func eventuallyStatus(t *testing.T, want int, method, path string, headers ...string) response {
	t.Helper()
	var last response
	NewWithT(t).Eventually(func() int {
		last = call(t, method, path, headers...)
		return last.status
	}).WithTimeout(timeout).WithPolling(interval).Should(Equal(want), "last body: %s", last.body)
	return last
}

func annotate(t *testing.T, obj client.Object, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if err := k8s.Patch(ctx, obj, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

// identityEcho starts an upstream that answers with every identity and
// credential header it received, and returns its host:port.
func identityEcho(t *testing.T) string {
	t.Helper()
	seen := []string{"X-Auth-Agent-Id", "X-Auth-Method", "X-Auth-Key-Id", "X-Auth-Credential", "X-Auth-User", "X-Auth-Environment", "X-Api-Key", "Api-Key", "Authorization"}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, h := range seen {
			fmt.Fprintf(w, "%s=%q\n", h, r.Header.Values(h))
		}
	}))
	t.Cleanup(upstream.Close)
	return strings.TrimPrefix(upstream.URL, "http://")
}

// spoofedIdentity are the X-Auth-* headers a hostile client sends along.
var spoofedIdentity = []string{"X-Auth-User", "admin@example.com", "X-Auth-Agent-Id", "00000000-0000-4000-8000-000000000000",
	"X-Auth-Credential", "kube-system/root", "X-Auth-Method", "session", "X-Auth-Environment", "sandbox"}

// issuedKey creates an API key credential name in a new namespace and
// returns it, once Ready and verified by the endpoint, with its key.
func issuedKey(t *testing.T, name string) (*authv1alpha1.AgentCredential, string) {
	t.Helper()
	ns := newNamespace(t)
	cred := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       authv1alpha1.AgentCredentialSpec{AgentID: newAgentID()},
	}
	if err := k8s.Create(ctx, cred); err != nil {
		t.Fatal(err)
	}
	cred = waitReady(t, cred)
	key := secretValue(t, ns, name, "api-key")
	eventuallyStatus(t, 200, "GET", "/auth/verify", "X-API-Key", key)
	return cred, key
}
