// Command crdmeta writes into CRDs that controller-gen wrote the bounds no
// controller-gen marker can, in place, for each FILE=MAXLENGTH argument:
//
//   - maxLength on metadata.name in every version's schema. kube-apiserver
//     then refuses a longer name as `metadata.name: Too long: may not be
//     more than 63 bytes`, where a CEL rule on the root object can only say
//     `<nil>: Invalid value: "object"` (a rule's fieldPath may not point
//     into metadata);
//   - v1alpha1.TimePattern and MaxTimeLength on every `format: date-time`
//     string that has no pattern (those of metav1.Condition), so that the
//     API server refuses every time metav1.Time could not decode;
//   - maxLength on the values of spec.secretTemplate.labels and
//     .annotations (map values take no marker).
//
// `make manifests` runs it.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

// mapValueLengths are the maxLength of the values of maps under spec, by
// dotted path, where present in the schema.
var mapValueLengths = map[string]int{
	"spec.secretTemplate.labels":      authv1alpha1.MaxSecretTemplateLabelValueLength,
	"spec.secretTemplate.annotations": authv1alpha1.MaxSecretTemplateAnnotationValueLength,
}

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
		if err := boundTimes(schema, ""); err != nil {
			return err
		}
		for path, n := range mapValueLengths {
			node, ok := dig(schema, propertiesPath(path)...)
			if !ok {
				continue
			}
			values, ok := node["additionalProperties"].(map[string]any)
			if !ok || values["type"] != "string" {
				return fmt.Errorf("%s: not a map of strings", path)
			}
			values["maxLength"] = n
		}
	}
	out, err := yaml.Marshal(crd)
	if err != nil {
		return err
	}
	// controller-gen starts each file with a document separator.
	return os.WriteFile(file, append([]byte("---\n"), out...), 0o644) //nolint:gosec // a generated manifest, world-readable like its source
}

// boundTimes gives every date-time string under the schema properties props
// TimePattern and MaxTimeLength, and fails on a date-time string with another
// pattern.
func boundTimes(props map[string]any, path string) error {
	for name, v := range props {
		node, ok := v.(map[string]any)
		if !ok {
			continue
		}
		p := path + "." + name
		if err := boundTime(node, p); err != nil {
			return err
		}
	}
	return nil
}

func boundTime(node map[string]any, path string) error {
	if node["format"] == "date-time" {
		switch pattern, _ := node["pattern"].(string); pattern {
		case "":
			node["pattern"] = authv1alpha1.TimePattern
			node["maxLength"] = authv1alpha1.MaxTimeLength
		case authv1alpha1.TimePattern:
		default:
			return fmt.Errorf("%s: a date-time with pattern %q, not v1alpha1.TimePattern", path, pattern)
		}
	}
	if props, ok := node["properties"].(map[string]any); ok {
		if err := boundTimes(props, path); err != nil {
			return err
		}
	}
	if items, ok := node["items"].(map[string]any); ok {
		if err := boundTime(items, path+"[]"); err != nil {
			return err
		}
	}
	if values, ok := node["additionalProperties"].(map[string]any); ok {
		if err := boundTime(values, path+"{}"); err != nil {
			return err
		}
	}
	return nil
}

// propertiesPath turns "a.b" into the keys that reach it in a schema's
// properties: a, properties, b.
func propertiesPath(dotted string) []string {
	var keys []string
	for i, p := range strings.Split(dotted, ".") {
		if i > 0 {
			keys = append(keys, "properties")
		}
		keys = append(keys, p)
	}
	return keys
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
