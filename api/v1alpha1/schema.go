package v1alpha1

// Schema bounds (issue 23 items 3–4). The API server must refuse every value
// the controller could not decode: one AgentCredential that fails to decode
// makes every typed LIST fail, which stops the controller for every tenant
// when the webhook is off. And it must refuse every value that would let a
// tenant make the objects the manager caches arbitrarily large. The markers
// in *_types.go repeat these values (markers cannot name constants);
// TestGeneratedSchemaUsesTheBounds checks that the generated CRDs carry them.

// DurationPattern is the syntax Go's time.ParseDuration accepts, which is
// what metav1.Duration decodes: an optional sign, then "0" alone or one or
// more decimal numbers (fraction allowed, ".5" and "1." too) each with a
// unit ns, us, µs (U+00B5), μs (U+03BC), ms, s, m or h. The CRD's `format:
// duration` is not that syntax (kube-openapi also reads "90d", "1 day",
// "10 minutes"), so duration fields carry no format, this pattern, and a CEL
// rule that calls duration(self): CEL converts a string with Go's
// time.ParseDuration, so a value the pattern admits but that overflows
// int64 nanoseconds (the only difference left) is refused by the rule.
const DurationPattern = `^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`

// MaxDurationLength bounds a duration string. Go's own longest spelling,
// time.Duration(math.MinInt64).String(), has 25 characters.
const MaxDurationLength = 32

// TimePattern is RFC 3339 as metav1.Time decodes it (time.Parse with
// time.RFC3339) and as Kubernetes writes it: upper-case T and Z, a
// fraction of 1 to 9 digits, an offset of at most 23:59. The CRD's `format:
// date-time` alone also passes "2026-01-01t00:00:00z", any character before
// the fraction ("…00x5Z"), offsets such as +99:00 and trailing text after a
// second "T", all of which metav1.Time refuses; format date-time still
// checks the calendar (no February 30th) and hours, minutes and seconds.
// `make manifests` (hack/crdmeta) gives every date-time field of the CRDs,
// those of metav1.Condition included, this pattern and MaxTimeLength.
const TimePattern = `^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`

// MaxTimeLength is the longest string TimePattern matches.
const MaxTimeLength = len("2006-01-02T15:04:05.999999999+07:00")

// Bounds of spec.secretTemplate, whose labels and annotations the controller
// copies onto the agent Secret. Kubernetes refuses a Secret whose
// annotations total more than 256 KiB; the template's share is a quarter of
// that, leaving room for agentcred's own metadata, and bounds what one
// credential costs the manager's cache.
const (
	// MaxSecretTemplateKeyLength is the longest label or annotation key: a
	// 253-character DNS prefix, "/" and a 63-character name, as Kubernetes
	// itself allows.
	MaxSecretTemplateKeyLength = 253 + 1 + 63
	// MaxSecretTemplateLabelValueLength is Kubernetes' own bound on a label value.
	MaxSecretTemplateLabelValueLength = 63
	// MaxSecretTemplateAnnotationValueLength bounds one annotation value, in
	// characters.
	MaxSecretTemplateAnnotationValueLength = 16 << 10
	// MaxSecretTemplateEntries bounds the labels and, apart, the annotations.
	MaxSecretTemplateEntries = 64
	// MaxSecretTemplateBytes bounds the UTF-8 size of every key and value of
	// the labels and annotations together.
	MaxSecretTemplateBytes = 64 << 10
)

// MaxConditions bounds status.conditions; agentcred sets two (Ready and
// RolledOut).
const MaxConditions = 8
