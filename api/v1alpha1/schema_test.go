package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/test/controlplane"
)

var (
	durationPattern = regexp.MustCompile(authv1alpha1.DurationPattern)
	timePattern     = regexp.MustCompile(authv1alpha1.TimePattern)
)

// schemaAdmitsDuration is what the CRD's string checks admit for a duration
// field: the pattern and maxLength (maxLength counts characters).
func schemaAdmitsDuration(s string) bool {
	return len([]rune(s)) <= authv1alpha1.MaxDurationLength && durationPattern.MatchString(s)
}

// decodesAsDuration reports whether the controller's typed client decodes s
// as a metav1.Duration.
func decodesAsDuration(s string) bool {
	raw, _ := json.Marshal(s)
	var d metav1.Duration
	return json.Unmarshal(raw, &d) == nil
}

// durationMagnitude is |s| in nanoseconds, exactly, for a string the pattern
// matches, computed apart from time.ParseDuration.
func durationMagnitude(t *testing.T, s string) *big.Rat {
	t.Helper()
	units := map[string]int64{"ns": 1, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
	s = strings.TrimLeft(s, "+-")
	total := new(big.Rat)
	if s == "0" {
		return total
	}
	for _, m := range regexp.MustCompile(`([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)`).FindAllStringSubmatch(s, -1) {
		n := m[1]
		if strings.HasPrefix(n, ".") {
			n = "0" + n
		}
		n = strings.TrimSuffix(n, ".")
		v, ok := new(big.Rat).SetString(n)
		if !ok {
			t.Fatalf("%q: cannot read %q", s, m[1])
		}
		total.Add(total, v.Mul(v, new(big.Rat).SetInt64(units[m[2]])))
	}
	return total
}

// checkDuration: what decodes, the schema admits; what the schema admits
// decodes, unless it is beyond the range of int64 nanoseconds, which only
// the CRD's CEL rule (Go's time.ParseDuration, via duration()) can see.
func checkDuration(t *testing.T, s string) {
	t.Helper()
	decodes, admits := decodesAsDuration(s), schemaAdmitsDuration(s)
	switch {
	case decodes && !admits && len([]rune(s)) <= authv1alpha1.MaxDurationLength:
		t.Errorf("%q: metav1.Duration decodes it, the pattern refuses it", s)
	case admits && !decodes:
		// Only overflow may separate them: |s| at least 2^63 ns (with a
		// margin for the float64 rounding of fractions in ParseDuration).
		limit := new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), 63))
		limit.Sub(limit, big.NewRat(1<<12, 1))
		if durationMagnitude(t, s).Cmp(limit) < 0 {
			t.Errorf("%q: the pattern admits it, metav1.Duration refuses it, and it is no overflow", s)
		}
	}
}

// TestDurationPatternMatchesParseDuration: the schema's duration pattern
// admits exactly the strings Go's time.ParseDuration (metav1.Duration)
// decodes, except values beyond ±2^63 ns, which the CRD's CEL rules refuse
// (TestSchemaRefusesWhatTheControllerCannotDecode). Before, the CRD used
// `format: duration`, which also reads "90d".
func TestDurationPatternMatchesParseDuration(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want bool // the pattern admits it
	}{
		{"0", true}, {"-0", true}, {"+0", true}, {"0s", true}, {"-1h", true}, {"+10m", true},
		{"2160h", true}, {"2160h0m0s", true}, {"1h30m", true}, {"1.5h", true}, {".5s", true}, {"1.s", true},
		{"1ns", true}, {"1us", true}, {"1µs", true}, {"1μs", true}, {"1ms", true}, {"3m3s3ms", true},
		{"1h1h", true}, {"0.000000001s", true}, {"00001s", true},
		{"2562047h47m16.854775807s", true}, {"-2562047h47m16.854775808s", true},
		{"", false}, {"-", false}, {"+", false}, {"00", false}, {"1", false}, {"-1", false}, {".", false}, {".s", false},
		{"-.s", false}, {"1..5s", false}, {"1.5.5s", false}, {"90d", false}, {"1d", false}, {"1w", false}, {"1y", false},
		{"10 minutes", false}, {"1 h", false}, {" 1h", false}, {"1h ", false}, {"1H", false}, {"1Ms", false},
		{"1hm", false}, {"1mss", false}, {"h", false}, {"1h-1m", false}, {"--1h", false}, {"+-1h", false},
		{"1e3s", false}, {"0x10s", false}, {"1,5s", false}, {"1_000s", false}, {"١s", false}, {"1µ", false},
		{"1h\n", false}, {"1mμs", false},
	} {
		if got := durationPattern.MatchString(tt.s); got != tt.want {
			t.Errorf("pattern on %q = %v, want %v", tt.s, got, tt.want)
		}
		if decodes := decodesAsDuration(tt.s); decodes != tt.want {
			t.Errorf("table error: metav1.Duration decodes %q: %v", tt.s, decodes)
		}
	}
	// Overflow: the pattern admits it, Go does not (the CEL rule refuses it).
	for _, s := range []string{"9223372036854775808ns", "2562048h", "99999999999999999999.5h", "2562047h2562047h"} {
		if !durationPattern.MatchString(s) || decodesAsDuration(s) {
			t.Errorf("%q: want admitted by the pattern and refused by Go (overflow)", s)
		}
		checkDuration(t, s)
	}

	// Every string of up to 5 symbols over an alphabet that reaches every
	// branch of ParseDuration.
	alphabet := []string{"0", "1", "9", ".", "-", "+", "n", "s", "u", "µ", "μ", "m", "h", "d", " ", "H"}
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		checkDuration(t, prefix)
		if depth == 0 {
			return
		}
		for _, a := range alphabet {
			walk(prefix+a, depth-1)
		}
	}
	walk("", 5)

	// Random spellings of the grammar, well-formed and slightly broken, with
	// numbers up to 25 digits so that overflow is reached.
	r := rand.New(rand.NewPCG(23, 4))
	units := []string{"ns", "us", "µs", "μs", "ms", "s", "m", "h", "d", "", "S", "mh", "u"}
	digits := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		return b.String()
	}
	for range 200_000 {
		var b strings.Builder
		switch r.IntN(4) {
		case 0:
			b.WriteString("-")
		case 1:
			b.WriteString("+")
		}
		for range 1 + r.IntN(4) {
			b.WriteString(digits(r.IntN(26)))
			if r.IntN(3) == 0 {
				b.WriteString("." + digits(r.IntN(12)))
			}
			b.WriteString(units[r.IntN(len(units))])
		}
		s := b.String()
		if r.IntN(10) == 0 && len(s) > 0 { // one byte changed
			i := r.IntN(len(s))
			s = s[:i] + string(".-+0hms "[r.IntN(8)]) + s[i+1:]
		}
		checkDuration(t, s)
	}
}

// schemaAdmitsTime is what the CRD admits for a date-time field: the
// pattern, maxLength and kube-apiserver's own `format: date-time` check.
func schemaAdmitsTime(s string) bool {
	return len(s) <= authv1alpha1.MaxTimeLength && timePattern.MatchString(s) && strfmt.IsDateTime(s)
}

func decodesAsTime(s string) bool {
	raw, _ := json.Marshal(s)
	var tm metav1.Time
	return json.Unmarshal(raw, &tm) == nil
}

// TestTimePatternOnlyAdmitsWhatMetav1TimeDecodes: `format: date-time` alone
// admits times metav1.Time refuses; with the pattern the schema admits only
// what decodes, and admits every time Kubernetes and Go write.
func TestTimePatternOnlyAdmitsWhatMetav1TimeDecodes(t *testing.T) {
	for _, s := range []string{
		"2027-01-01t00:00:00z", "2027-01-01T00:00:00x5Z", "2027-01-01T00:00:00+99:00", "2027-01-01T00:00:00ZTnoon",
	} {
		if !strfmt.IsDateTime(s) || decodesAsTime(s) {
			t.Fatalf("%q: want a date-time that metav1.Time refuses (the hazard)", s)
		}
		if schemaAdmitsTime(s) {
			t.Errorf("%q: the schema admits it", s)
		}
	}
	for _, s := range []string{
		"2027-01-01T00:00:00Z", "2027-01-01T00:00:00.5Z", "2027-01-01T00:00:00.123456789+05:30",
		"2027-01-01T00:00:00-00:00", "2027-01-01T00:00:00+23:59", "2024-02-29T23:59:59Z", "0001-01-01T00:00:00Z",
	} {
		if !schemaAdmitsTime(s) || !decodesAsTime(s) {
			t.Errorf("%q: want admitted and decoded (admitted %v, decoded %v)", s, schemaAdmitsTime(s), decodesAsTime(s))
		}
	}
	r := rand.New(rand.NewPCG(23, 3))
	zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+1800), time.FixedZone("", -12*3600), time.FixedZone("", 23*3600+59*60)}
	for range 100_000 {
		tm := time.Unix(r.Int64N(253402300799), r.Int64N(1e9)).In(zones[r.IntN(len(zones))])
		for _, s := range []string{tm.Format(time.RFC3339), tm.Format(time.RFC3339Nano)} {
			if !schemaAdmitsTime(s) {
				t.Fatalf("%q (Go's RFC 3339) is refused", s)
			}
		}
		raw, err := metav1.NewTime(tm).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var written string
		if err := json.Unmarshal(raw, &written); err != nil || !schemaAdmitsTime(written) {
			t.Fatalf("%s (as metav1.Time writes it) is refused", raw)
		}
		// The same with one character changed: whatever the schema admits decodes.
		s := tm.Format(time.RFC3339Nano)
		i := r.IntN(len(s))
		s = s[:i] + string("0159tTzZ.,:+-x "[r.IntN(15)]) + s[i+1:]
		if schemaAdmitsTime(s) && !decodesAsTime(s) {
			t.Errorf("%q: the schema admits it, metav1.Time refuses it", s)
		}
	}
}

// TestGeneratedSchemaUsesTheBounds reads the generated CRDs (make
// manifests): every string has a maxLength or an enum, every list a
// maxItems, every map a maxProperties; every metav1.Duration field of the Go
// types has DurationPattern, no `format: duration` and a CEL rule through
// duration(self); every metav1.Time field has TimePattern.
func TestGeneratedSchemaUsesTheBounds(t *testing.T) {
	for file, root := range map[string]reflect.Type{
		"auth.agrenting.io_agentcredentials.yaml": reflect.TypeFor[authv1alpha1.AgentCredential](),
		"auth.agrenting.io_identityclaims.yaml":   reflect.TypeFor[authv1alpha1.IdentityClaim](),
	} {
		for _, dir := range []string{"config/crd/bases", "charts/agentcred/crds"} {
			raw, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), dir, file))
			if err != nil {
				t.Fatal(err)
			}
			var crd apiextensionsv1.CustomResourceDefinition
			if err := yaml.UnmarshalStrict(raw, &crd); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for _, v := range crd.Spec.Versions {
				schema := v.Schema.OpenAPIV3Schema
				checkBounded(t, file+":", schema)
				checkGoTypes(t, file+":", root, schema)
			}
		}
	}
}

func checkBounded(t *testing.T, path string, s *apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	switch s.Type {
	case "string":
		if s.MaxLength == nil && len(s.Enum) == 0 {
			t.Errorf("%s: a string without maxLength or enum", path)
		}
	case "array":
		if s.MaxItems == nil {
			t.Errorf("%s: a list without maxItems", path)
		}
	case "object":
		if s.AdditionalProperties != nil && s.MaxProperties == nil {
			t.Errorf("%s: a map without maxProperties", path)
		}
	}
	for name, p := range s.Properties {
		if strings.HasSuffix(path, ":") && (name == "apiVersion" || name == "kind") {
			continue // the API server refuses any but the CRD's own
		}
		checkBounded(t, path+"."+name, &p)
	}
	if s.Items != nil && s.Items.Schema != nil {
		checkBounded(t, path+"[]", s.Items.Schema)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		checkBounded(t, path+"{}", s.AdditionalProperties.Schema)
	}
}

var (
	durationType = reflect.TypeFor[metav1.Duration]()
	timeType     = reflect.TypeFor[metav1.Time]()
)

// checkGoTypes walks the Go type next to its schema.
func checkGoTypes(t *testing.T, path string, typ reflect.Type, s *apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch {
	case typ == durationType:
		rules := fmt.Sprint(s.XValidations)
		if s.Pattern != authv1alpha1.DurationPattern || s.Format != "" || s.MaxLength == nil ||
			*s.MaxLength != authv1alpha1.MaxDurationLength || !strings.Contains(rules, "duration(self)") {
			t.Errorf("%s: a duration with pattern %q, format %q, maxLength %v and rules %s", path, s.Pattern, s.Format, s.MaxLength, rules)
		}
	case typ == timeType:
		if s.Pattern != authv1alpha1.TimePattern || s.MaxLength == nil || *s.MaxLength != int64(authv1alpha1.MaxTimeLength) {
			t.Errorf("%s: a time with pattern %q, maxLength %v", path, s.Pattern, s.MaxLength)
		}
	case typ.Kind() == reflect.Struct:
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "metadata" || name == "-" {
				continue
			}
			p, ok := s.Properties[name]
			if !ok {
				t.Errorf("%s.%s: not in the schema", path, name)
				continue
			}
			checkGoTypes(t, path+"."+name, f.Type, &p)
		}
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() != reflect.Uint8:
		checkGoTypes(t, path+"[]", typ.Elem(), s.Items.Schema)
	case typ.Kind() == reflect.Map:
		checkGoTypes(t, path+"{}", typ.Elem(), s.AdditionalProperties.Schema)
	}
}

const boundsNS = "schema-bounds"

// raw is an object as a manifest would send it, not as the typed client
// would: metav1.Duration and metav1.Time cannot even hold what is tested.
func raw(kind, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: fields}
	u.SetAPIVersion(authv1alpha1.GroupVersion.String())
	u.SetKind(kind)
	u.SetName(name)
	if kind == "AgentCredential" {
		u.SetNamespace(boundsNS)
	}
	return u
}

func specWith(path string, value any) map[string]any {
	spec := map[string]any{"agentID": agentA}
	node := spec
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := node[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			node[k] = next
		}
		node = next
	}
	node[keys[len(keys)-1]] = value
	return map[string]any{"spec": spec}
}

func entries(n, valueLen int, value string) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprintf("example.com/k%d", i)] = strings.Repeat(value, valueLen)
	}
	return m
}

// listDecodes is what the controller needs after any write: its typed LIST
// of AgentCredentials decodes.
func listDecodes(t *testing.T) {
	t.Helper()
	if err := k8s.List(context.Background(), &authv1alpha1.AgentCredentialList{}, client.InNamespace(boundsNS)); err != nil {
		t.Fatalf("a typed LIST of AgentCredentials fails, which stops the controller for every tenant: %v", err)
	}
	if err := k8s.List(context.Background(), &authv1alpha1.IdentityClaimList{}); err != nil {
		t.Fatalf("a typed LIST of IdentityClaims fails: %v", err)
	}
}

// TestSchemaRefusesWhatTheControllerCannotDecode: with no webhook (this
// package runs none), kube-apiserver itself refuses every spec value the
// typed client could not decode, and tenant-written sizes beyond the bounds,
// naming the field; what Go writes and reads is accepted, and a typed LIST
// decodes after every case (issue 23 items 3–4).
func TestSchemaRefusesWhatTheControllerCannotDecode(t *testing.T) {
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: boundsNS}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	key318 := "example.com/" + strings.Repeat("k", 306)
	tests := []struct {
		name   string
		fields map[string]any
		want   []string // nil = accepted
	}{
		{"period 90d", specWith("rotation.period", "90d"), []string{"spec.rotation.period"}},
		{"period 1d", specWith("rotation.period", "1d"), []string{"spec.rotation.period"}},
		{"period in words", specWith("rotation.period", "10 minutes"), []string{"spec.rotation.period"}},
		{"period upper-case unit", specWith("rotation.period", "2160H"), []string{"spec.rotation.period"}},
		{"period beyond int64 nanoseconds", specWith("rotation.period", "99999999999999999999.5h"), []string{"spec.rotation.period", "period must be between 1h and 8760h"}},
		{"period over-long", specWith("rotation.period", strings.Repeat("0", 40)+"1h"), []string{"spec.rotation.period", "Too long"}},
		{"gracePeriod 1w", specWith("rotation.gracePeriod", "1w"), []string{"spec.rotation.gracePeriod"}},
		{"gracePeriod beyond int64", specWith("rotation.gracePeriod", "2562047h2562047h"), []string{"spec.rotation.gracePeriod", "gracePeriod must not be negative"}},
		{"sessionTTL 1 hour", specWith("sessionTTL", "1 hour"), []string{"spec.sessionTTL"}},
		{"expiresAt lower-case", specWith("expiresAt", "2037-01-01t00:00:00z"), []string{"spec.expiresAt"}},
		{"expiresAt trailing text", specWith("expiresAt", "2037-01-01T00:00:00ZTnoon"), []string{"spec.expiresAt"}},
		{"expiresAt offset +99:00", specWith("expiresAt", "2037-01-01T00:00:00+99:00"), []string{"spec.expiresAt"}},
		{"expiresAt odd separator", specWith("expiresAt", "2037-01-01T00:00:00x5Z"), []string{"spec.expiresAt"}},
		{"annotation value of 16385", specWith("secretTemplate.annotations", entries(1, 16385, "a")), []string{"spec.secretTemplate.annotations.example.com/k0", "Too long"}},
		{"label value of 64", specWith("secretTemplate.labels", entries(1, 64, "a")), []string{"spec.secretTemplate.labels.example.com/k0", "Too long"}},
		{"annotation key of 318", specWith("secretTemplate.annotations", map[string]any{key318: "v"}), []string{"spec.secretTemplate.annotations", "annotation keys must be at most 317 characters"}},
		{"label key of 318", specWith("secretTemplate.labels", map[string]any{key318: "v"}), []string{"spec.secretTemplate.labels", "label keys must be at most 317 characters"}},
		{"template of 80 KiB", specWith("secretTemplate.annotations", entries(5, 16384, "a")), []string{"spec.secretTemplate", "labels and annotations must take at most 65536 bytes in all"}},
		{"template of 48,042 characters, 96,042 bytes", specWith("secretTemplate.annotations", entries(3, 16000, "é")), []string{"spec.secretTemplate", "labels and annotations must take at most 65536 bytes in all"}},
		{"65 annotations", specWith("secretTemplate.annotations", entries(65, 1, "a")), []string{"spec.secretTemplate.annotations", "must have at most 64 items"}},

		{"period as Go writes it", specWith("rotation.period", "2160h0m0s"), nil},
		{"period with a fraction and a sign", specWith("rotation.period", "+1.5h"), nil},
		{"gracePeriod 0", specWith("rotation.gracePeriod", "0"), nil},
		{"gracePeriod in µs (U+00B5)", specWith("rotation.gracePeriod", "90000000µs"), nil},
		{"gracePeriod in μs (U+03BC)", specWith("rotation.gracePeriod", "90000000μs"), nil},
		{"sessionTTL .5h", specWith("sessionTTL", ".5h"), nil},
		{"expiresAt with nanoseconds and an offset", specWith("expiresAt", "2037-01-01T00:00:00.123456789+05:30"), nil},
		{"template of exactly 64 KiB", specWith("secretTemplate.annotations", map[string]any{
			"example.com/a": strings.Repeat("a", 16384), "example.com/b": strings.Repeat("b", 16384),
			"example.com/c": strings.Repeat("c", 16384), "example.com/d": strings.Repeat("d", 16384-4*len("example.com/a")),
		}), nil},
		{"64 labels of 63", specWith("secretTemplate.labels", entries(64, 63, "a")), nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := raw("AgentCredential", fmt.Sprintf("bounds-%d", i), tt.fields)
			err := k8s.Create(ctx, obj)
			if err == nil {
				t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })
			}
			checkRefusal(t, err, tt.want)
			listDecodes(t)
		})
	}
}

func checkRefusal(t *testing.T, err error, want []string) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("refused: %v", err)
	case want != nil && err == nil:
		t.Errorf("accepted, want a refusal naming %q", want)
	case want != nil && !apierrors.IsInvalid(err):
		t.Errorf("error %v, want Invalid", err)
	case want != nil:
		t.Logf("refused: %v", err)
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not contain %q", err, w)
			}
		}
	}
}

// TestStatusSchemaRefusesWhatTheControllerCannotDecode: a tenant may write
// status (/status is theirs in their namespace), and the API server refuses
// there too what the typed client could not decode or what exceeds the
// bounds; so do IdentityClaims.
func TestStatusSchemaRefusesWhatTheControllerCannotDecode(t *testing.T) {
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: boundsNS}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cred := raw("AgentCredential", "status-bounds", map[string]any{"spec": map[string]any{"agentID": agentA}})
	if err := k8s.Create(ctx, cred); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, cred) })
	condition := func(tm string) map[string]any {
		return map[string]any{"type": "Ready", "status": "True", "reason": "KeyIssued", "message": "", "lastTransitionTime": tm}
	}
	conditions := func(n int) []any {
		var l []any
		for i := range n {
			c := condition("2026-12-06T00:00:00Z")
			c["type"] = fmt.Sprintf("C%d", i)
			l = append(l, c)
		}
		return l
	}
	targets := func(n int, state string) []any {
		var l []any
		for i := range n {
			l = append(l, map[string]any{"kind": "Deployment", "name": fmt.Sprintf("w%d", i), "state": state})
		}
		return l
	}
	tests := []struct {
		name   string
		status map[string]any
		want   []string
	}{
		{"lastRotationTime lower-case", map[string]any{"lastRotationTime": "2026-12-06t00:00:00z"}, []string{"status.lastRotationTime"}},
		{"nextRotationTime trailing text", map[string]any{"nextRotationTime": "2026-12-06T00:00:00ZTnoon"}, []string{"status.nextRotationTime"}},
		{"previousKeyExpiresAt offset +99:00", map[string]any{"previousKeyExpiresAt": "2026-12-06T00:00:00+99:00"}, []string{"status.previousKeyExpiresAt"}},
		{"condition time lower-case", map[string]any{"conditions": []any{condition("2026-12-06t00:00:00z")}}, []string{"status.conditions[0].lastTransitionTime"}},
		{"9 conditions", map[string]any{"conditions": conditions(9)}, []string{"status.conditions", "must have at most 8 items"}},
		{"keyID of 13", map[string]any{"keyID": "0123456789abc"}, []string{"status.keyID", "Too long"}},
		{"lastRotationRequest of 129", map[string]any{"lastRotationRequest": strings.Repeat("r", 129)}, []string{"status.lastRotationRequest", "Too long"}},
		{"21 restart targets", map[string]any{"restartTargets": targets(21, "Rolling")}, []string{"status.restartTargets", "must have at most 20 items"}},
		{"unknown rollout state", map[string]any{"restartTargets": targets(1, "Stuck")}, []string{"status.restartTargets[0].state", "Unsupported value"}},
		{"rotationCount beyond int64", map[string]any{"rotationCount": float64(1e19)}, []string{"status.rotationCount"}},
		{"observedGeneration not a whole number", map[string]any{"observedGeneration": 1.5}, []string{"status.observedGeneration"}},

		{"times as Go writes them", map[string]any{"lastRotationTime": "2026-12-06T00:00:00Z", "conditions": []any{condition("2026-12-06T00:00:00.5+01:00")}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := &unstructured.Unstructured{}
			obj.SetGroupVersionKind(cred.GroupVersionKind())
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(cred), obj); err != nil {
				t.Fatal(err)
			}
			obj.Object["status"] = tt.status
			checkRefusal(t, k8s.Status().Update(ctx, obj), tt.want)
			listDecodes(t)
		})
	}

	const userClaim = "user-00000000000000000000000000000000000000b0"
	for _, tt := range []struct {
		name, lastUsed string
		want           []string
	}{
		{"claim lastUsedTime lower-case", "2026-12-06t00:00:00z", []string{"status.lastUsedTime"}},
		{"claim lastUsedTime as Go writes it", "2026-12-06T00:00:00Z", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := raw("IdentityClaim", userClaim, map[string]any{
				"spec":   map[string]any{"kind": "User", "value": "bounds@example.com", "namespace": boundsNS},
				"status": map[string]any{"lastUsedTime": tt.lastUsed},
			})
			err := k8s.Create(ctx, c)
			if err == nil {
				t.Cleanup(func() { _ = k8s.Delete(ctx, c) })
			}
			checkRefusal(t, err, tt.want)
			listDecodes(t)
		})
	}
}
