package manifests

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/agrenting/agentcred/test/controlplane"
)

// TestManagerBuildsAsAStaticBinary builds the manager the way the Dockerfile
// does (CGO_ENABLED=0) and checks the result needs no dynamic loader, so it
// runs on distroless/static.
func TestManagerBuildsAsAStaticBinary(t *testing.T) {
	out := filepath.Join(t.TempDir(), "manager")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/manager")
	cmd.Dir = controlplane.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/manager: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the manager binary is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("the manager binary needs shared libraries: %v", libs)
	}
	help, err := exec.Command(out, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("manager --help: %v\n%s", err, help)
	}
}
