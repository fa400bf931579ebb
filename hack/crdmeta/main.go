// Command crdmeta bounds metadata.name in CRDs that controller-gen wrote,
// which no controller-gen marker can: for each FILE=MAXLENGTH argument it
// sets maxLength on metadata.name in every version's schema, in place.
// kube-apiserver then refuses a longer name as
// `metadata.name: Too long: may not be more than 63 bytes`, where a CEL rule
// on the root object can only say `<nil>: Invalid value: "object"` (a
// rule's fieldPath may not point into metadata). `make manifests` runs it.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdmeta CRD_FILE=MAX_NAME_LENGTH ...")
		os.Exit(2)
	}
	for _, arg := range os.Args[1:] {
		file, limit, ok := strings.Cut(arg, "=")
		n, err := strconv.Atoi(limit)
		if !ok || err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "crdmeta: %q: want CRD_FILE=MAX_NAME_LENGTH\n", arg)
			os.Exit(2)
		}
		if err := boundName(file, n); err != nil {
			fmt.Fprintf(os.Stderr, "crdmeta: %s: %v\n", file, err)
			os.Exit(1)
		}
	}
}

func boundName(file string, maxLength int) error {
	raw, err := os.ReadFile(file) //nolint:gosec // the CRD file make manifests names
	if err != nil {
		return err
	}
	var crd map[string]any
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		return err
	}
	if crd["kind"] != "CustomResourceDefinition" {
		return fmt.Errorf("not a CustomResourceDefinition")
	}
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	if len(versions) == 0 {
		return fmt.Errorf("no versions")
	}
	for _, v := range versions {
		schema, ok := dig(v, "schema", "openAPIV3Schema", "properties")
		if !ok {
			return fmt.Errorf("a version without an openAPIV3Schema")
		}
		schema["metadata"] = map[string]any{
			"type":       "object",
			"properties": map[string]any{"name": map[string]any{"type": "string", "maxLength": maxLength}},
		}
	}
	out, err := yaml.Marshal(crd)
	if err != nil {
		return err
	}
	// controller-gen starts each file with a document separator.
	return os.WriteFile(file, append([]byte("---\n"), out...), 0o644) //nolint:gosec // a generated manifest, world-readable like its source
}

// dig walks nested maps.
func dig(v any, path ...string) (map[string]any, bool) {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		v = m[p]
	}
	m, ok := v.(map[string]any)
	return m, ok
}
