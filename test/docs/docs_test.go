// Package docs checks the README and docs/ against the code (`make
// docs-check`): every manager flag is documented and every documented flag
// exists, every `make` target named exists, every repository path named
// exists, every `kubectl agentcred` command named exists, and the generated
// CRD reference is fresh. The commands of the README's journey are run by
// test/e2e.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agrenting/agentcred/controllers"
	"github.com/agrenting/agentcred/internal/authserver"
	"github.com/agrenting/agentcred/internal/crdref"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/test/controlplane"
)

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docs returns README.md and every file in docs/, by name.
func docs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{"README.md": read(t, "README.md")}
	entries, err := os.ReadDir(filepath.Join(controlplane.RepoRoot(), "docs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".md") {
			out["docs/"+e.Name()] = read(t, "docs/"+e.Name())
		}
	}
	return out
}

func TestEveryManagerFlagIsDocumentedAndNoOther(t *testing.T) {
	readme := read(t, "README.md")
	_, table, found := strings.Cut(readme, "### Manager flags")
	if !found {
		t.Fatal("the README has no \"### Manager flags\" section")
	}
	table, _, _ = strings.Cut(table, "\n### ")
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`--([a-z0-9-]+)`").FindAllStringSubmatch(table, -1) {
		documented[m[1]] = true
	}
	known := map[string]bool{}
	for _, f := range operator.FlagNames() {
		known[f] = true
		if !documented[f] {
			t.Errorf("flag --%s is not in the README's flag table", f)
		}
	}
	for f := range documented {
		if !known[f] && !strings.HasPrefix(f, "zap-") {
			t.Errorf("the README documents --%s, which the manager does not have", f)
		}
	}
}

func TestMakeTargetsNamedInDocsExist(t *testing.T) {
	makefile := read(t, "Makefile")
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-zA-Z0-9_-]+):`).FindAllStringSubmatch(makefile, -1) {
		targets[m[1]] = true
	}
	for name, text := range docs(t) {
		for _, m := range regexp.MustCompile("`make ([a-z][a-z0-9-]*)").FindAllStringSubmatch(text, -1) {
			if !targets[m[1]] {
				t.Errorf("%s names `make %s`, which the Makefile lacks", name, m[1])
			}
		}
	}
}

func TestPathsNamedInDocsExist(t *testing.T) {
	re := regexp.MustCompile("(?:^|[\\s(`\\[])((?:config|docs|test|hack|cmd|internal|api|controllers|webhook)/[A-Za-z0-9_./-]*[A-Za-z0-9_/-])")
	for name, text := range docs(t) {
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			p := strings.TrimSuffix(m[1], "/")
			if strings.Contains(p, "*") || strings.HasPrefix(p, "config/crd/bases/auth") && !strings.HasSuffix(p, ".yaml") {
				continue
			}
			if _, err := os.Stat(filepath.Join(controlplane.RepoRoot(), p)); err != nil {
				t.Errorf("%s names %s, which does not exist", name, p)
			}
		}
	}
}

func TestCLICommandsNamedInDocsExist(t *testing.T) {
	known := map[string]bool{"rotate": true, "status": true, "key": true, "check": true, "claims": true, "claim-name": true}
	for name, text := range docs(t) {
		for _, m := range regexp.MustCompile(`kubectl agentcred ([a-z-]+)`).FindAllStringSubmatch(text, -1) {
			if !known[m[1]] {
				t.Errorf("%s names `kubectl agentcred %s`, which the CLI lacks", name, m[1])
			}
		}
	}
	usage := read(t, "internal/cli/cli.go")
	for c := range known {
		if !strings.Contains(usage, "kubectl agentcred "+c+" ") {
			t.Errorf("the CLI's usage does not list %s", c)
		}
	}
}

func TestCRDReferenceIsGenerated(t *testing.T) {
	var parts []string
	for _, crd := range []string{"auth.agrenting.io_agentcredentials.yaml", "auth.agrenting.io_identityclaims.yaml"} {
		part, err := crdref.Render([]byte(read(t, "config/crd/bases/"+crd)))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, part)
	}
	want := strings.Join(parts, "\n")
	if got := read(t, "docs/crd-reference.md"); got != want {
		t.Fatal("docs/crd-reference.md is stale: run `make docs` and commit it")
	}
}

func TestSamplesNamedInTheJourneyExist(t *testing.T) {
	readme := read(t, "README.md")
	var names []string
	for _, m := range regexp.MustCompile(`agentcredential/([a-z-]+)`).FindAllStringSubmatch(readme, -1) {
		names = append(names, m[1])
	}
	sort.Strings(names)
	files, err := filepath.Glob(filepath.Join(controlplane.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var samples string
	for _, f := range files {
		samples += read(t, strings.TrimPrefix(f, controlplane.RepoRoot()+"/"))
	}
	for _, n := range names {
		if !strings.Contains(samples, "name: "+n) {
			t.Errorf("the README waits for agentcredential/%s, which no sample creates", n)
		}
	}
}

// TestNginxSnippetIsTheTestedConfig: the nginx snippet in the README and
// docs/auth-endpoint.md is the location blocks of the config that
// test/integration runs through the real nginx, word for word.
func TestNginxSnippetIsTheTestedConfig(t *testing.T) {
	lines := strings.Split(read(t, "test/integration/testdata/nginx.conf.tmpl"), "\n")
	start, end := -1, -1
	for i, l := range lines {
		if strings.Contains(l, "location = /_agentcred_verify") && start < 0 {
			start = i
		}
		if l == "    }" {
			end = i
		}
	}
	if start < 0 || end < start {
		t.Fatal("the tested nginx config has no location blocks")
	}
	var block []string
	for _, l := range lines[start : end+1] {
		block = append(block, strings.TrimPrefix(l, "    "))
	}
	want := strings.NewReplacer("{{auth}}", "agentcred-auth.agentcred-system.svc:8082", "{{upstream}}", "backend", "{{ca}}", "/etc/nginx/agentcred-ca.crt").
		Replace("```nginx\n" + strings.Join(block, "\n") + "\n```")
	for _, doc := range []string{"README.md", "docs/auth-endpoint.md"} {
		if !strings.Contains(read(t, doc), want) {
			t.Errorf("%s: the nginx snippet differs from test/integration/testdata/nginx.conf.tmpl; copy its location blocks", doc)
		}
	}
}

// TestConsumerManifestsAreTheSamples: every manifest in
// docs/consuming-keys.md is a file of config/samples/consumers, word for
// word (test/manifests dry-runs those files against the API server).
func TestConsumerManifestsAreTheSamples(t *testing.T) {
	page := read(t, "docs/consuming-keys.md")
	files, err := filepath.Glob(filepath.Join(controlplane.RepoRoot(), "config", "samples", "consumers", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no consumer samples: %v", err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(page, -1)
	if len(blocks) != len(files) {
		t.Errorf("docs/consuming-keys.md has %d yaml blocks, config/samples/consumers has %d files", len(blocks), len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(page, "```yaml\n"+string(raw)+"```") {
			t.Errorf("docs/consuming-keys.md does not show %s as it is", filepath.Base(f))
		}
	}
}

// TestCaddySnippetIsTheTestedConfig: the README's Caddyfile is the site
// block test/integration runs through the real Caddy, word for word.
func TestCaddySnippetIsTheTestedConfig(t *testing.T) {
	tmpl := read(t, "test/integration/testdata/Caddyfile.tmpl")
	i := strings.Index(tmpl, "http://{{listen}} {")
	if i < 0 {
		t.Fatal("the tested Caddyfile has no site block")
	}
	want := strings.NewReplacer("http://{{listen}}", "api.example.com", "{{auth}}", "agentcred-auth.agentcred-system.svc:8082", "{{upstream}}", "backend:8080", "{{ca}}", "/etc/caddy/agentcred-ca.crt").
		Replace("```caddyfile\n" + strings.TrimRight(tmpl[i:], "\n") + "\n```")
	if !strings.Contains(read(t, "README.md"), want) {
		t.Error("README.md: the Caddy snippet differs from test/integration/testdata/Caddyfile.tmpl; copy its site block")
	}
}

// TestErrorCodesAreTheEndpoints: the error table of docs/auth-endpoint.md
// lists exactly the codes the endpoint answers with, each under its status.
func TestErrorCodesAreTheEndpoints(t *testing.T) {
	page := read(t, "docs/auth-endpoint.md")
	start := strings.Index(page, "Errors are JSON")
	if start < 0 {
		t.Fatal("docs/auth-endpoint.md has no error table")
	}
	table := page[start:]
	if i := strings.Index(table, "| status"); i >= 0 {
		if j := strings.Index(table[i:], "\n\n"); j >= 0 {
			table = table[:i+j]
		}
	}
	documented := map[string]string{} // code -> status
	row := regexp.MustCompile(`(?m)^\| (\d{3}) \|(.*)\|$`)
	code := regexp.MustCompile("`([a-z]+(?:_[a-z]+)+)`")
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		for _, c := range code.FindAllStringSubmatch(m[2], -1) {
			documented[c[1]] = m[1]
		}
	}
	real := map[string]string{}
	for _, e := range authserver.Errors() {
		real[e.Code] = strconv.Itoa(e.Status)
	}
	for c, status := range real {
		if documented[c] != status {
			t.Errorf("the endpoint answers %s %s; docs/auth-endpoint.md's error table says %q", status, c, documented[c])
		}
	}
	for c := range documented {
		if _, ok := real[c]; !ok {
			t.Errorf("docs/auth-endpoint.md documents %s, which the endpoint never answers", c)
		}
	}
}

// describeRecorder records the names of every metric registered with it.
type describeRecorder struct{ names map[string]bool }

func (d *describeRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for desc := range ch {
		if m := fq.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return nil
}
func (d *describeRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}
func (d *describeRecorder) Unregister(prometheus.Collector) bool { return true }

// TestMetricNamesAreTheOperators: every agentcred_ metric the docs name is
// one the operator defines, and every one it defines is documented.
func TestMetricNamesAreTheOperators(t *testing.T) {
	rec := &describeRecorder{names: map[string]bool{}}
	if err := controllers.NewMetrics(nil).Register(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := authserver.New(authserver.NewIndex(), authserver.Options{Registerer: rec}); err != nil {
		t.Fatal(err)
	}
	if len(rec.names) < 8 {
		t.Fatalf("found only %d metrics: %v", len(rec.names), rec.names)
	}
	all := ""
	for name, text := range docs(t) {
		all += text
		for _, sub := range regexp.MustCompile(`(?:^|[^_@/a-z-])(agentcred_[a-z_]+[a-z])`).FindAllStringSubmatch(text, -1) {
			m := sub[1]
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
			if !rec.names[m] && !rec.names[base] {
				t.Errorf("%s names metric %s, which the operator does not define", name, m)
			}
		}
	}
	all += read(t, "config/prometheus/rules.yaml")
	for m := range rec.names {
		if strings.HasPrefix(m, "agentcred_") && !strings.Contains(all, m) {
			t.Errorf("metric %s is documented nowhere in README.md or docs/", m)
		}
	}
}
