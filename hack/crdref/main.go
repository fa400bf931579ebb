// Command crdref prints the Markdown field reference of CRD files, one
// after the other:
//
//	go run ./hack/crdref config/crd/bases/*.yaml > docs/crd-reference.md
package main

import (
	"fmt"
	"os"

	"github.com/agrenting/agentcred/internal/crdref"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdref CRD.yaml...")
		os.Exit(2)
	}
	for i, path := range os.Args[1:] {
		raw, err := os.ReadFile(path) //nolint:gosec // a developer's own file argument
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out, err := crdref.Render(raw)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if i > 0 {
			fmt.Println()
		}
		fmt.Print(out)
	}
}
