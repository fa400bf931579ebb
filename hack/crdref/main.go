// Command crdref prints the Markdown field reference of a CRD file:
//
//	go run ./hack/crdref config/crd/bases/auth.agrenting.io_agentcredentials.yaml > docs/crd-reference.md
package main

import (
	"fmt"
	"os"

	"github.com/agrenting/agentcred/internal/crdref"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: crdref CRD.yaml")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1]) //nolint:gosec // a developer's own file argument
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := crdref.Render(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Print(out)
}
