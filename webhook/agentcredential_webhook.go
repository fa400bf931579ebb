// Package webhook is the validating admission webhook for AgentCredentials.
// It does only what the CRD schema cannot, because it needs a lookup: it
// refuses a secretName that would take over a Secret this credential does not
// control, agent IDs or users that another namespace has claimed, and
// restart targets the requester could not restart itself. The controller enforces
// the same rules, so bypassing the webhook gains nothing — except the
// restart-target check, which needs the requester, whom only admission sees.
//
// Anyone who reaches the webhook's port can send it an AdmissionReview with
// the namespace, object and user of their choice, unless the server verifies
// the caller's client certificate (--webhook-client-ca-file). So every
// lookup stays inside the review's namespace, a review whose object lies in
// another namespace is refused, and the claim check — whose answer for a
// chosen namespace would say which namespace holds an identity — runs only
// for authenticated callers; otherwise the controller refuses, in the
// credential's own status.
package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// Path is where the webhook is served.
const Path = "/validate-auth-agrenting-io-v1alpha1-agentcredential"

// RecommendedMaxPeriod is the platform's recommended rotation period.
const RecommendedMaxPeriod = authv1alpha1.DefaultRotationPeriod

// The self-signed certificate rotation (cert-controller) injects the CA
// bundle into agentcred's webhook configuration only; it watches them all.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;update;patch,resourceNames=agentcred-validating-webhook-configuration

// Restart targets are checked with SubjectAccessReviews:
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// +kubebuilder:webhook:path=/validate-auth-agrenting-io-v1alpha1-agentcredential,mutating=false,failurePolicy=fail,sideEffects=None,groups=auth.agrenting.io,resources=agentcredentials,verbs=create;update,versions=v1alpha1,name=vagentcredential.auth.agrenting.io,admissionReviewVersions=v1,timeoutSeconds=5

// Validator validates AgentCredentials on create and update.
type Validator struct {
	// Credentials reads AgentCredentials and IdentityClaims (cached).
	Credentials client.Reader
	// Secrets reads a Secret by name, around the label-filtered cache.
	Secrets client.Reader
	// IdentityClaims is the claim mode: with Preassigned, identities
	// without a claim for the namespace are refused too.
	IdentityClaims tenancy.Mode
	// Reviews creates SubjectAccessReviews: a restart target is allowed
	// only if the requester may patch that workload itself.
	Reviews client.Writer
	// CallersAuthenticated says the webhook server verifies a client
	// certificate on every connection, so reviews come from kube-apiserver
	// and their namespace and user are true. Only then are identities
	// checked against IdentityClaims at admission.
	CallersAuthenticated bool
	// Now is the clock of the expiry warnings (nil: time.Now).
	Now func() time.Time
}

var _ admission.Validator[*authv1alpha1.AgentCredential] = &Validator{}

// SetupWithManager registers the webhook with the manager's webhook server.
func (v *Validator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &authv1alpha1.AgentCredential{}).WithValidator(v).Complete()
}

// ValidateCreate checks a new credential.
func (v *Validator) ValidateCreate(ctx context.Context, cred *authv1alpha1.AgentCredential) (admission.Warnings, error) {
	req, err := review(ctx, cred)
	if err != nil {
		return nil, err
	}
	var errs field.ErrorList
	secretErr, err := v.checkSecretName(ctx, cred)
	if err != nil {
		return nil, err
	}
	if secretErr != nil {
		errs = append(errs, secretErr)
	}
	identityErrs, err := v.checkIdentities(ctx, cred, identityindex.Identities(cred))
	if err != nil {
		return nil, err
	}
	errs = append(errs, identityErrs...)
	envErr, err := v.checkEnvironment(ctx, cred)
	if err != nil {
		return nil, err
	}
	if envErr != nil {
		errs = append(errs, envErr)
	}
	targetErrs, err := v.checkRestartTargets(ctx, req, cred, cred.Spec.Rotation.RestartTargets, nil)
	if err != nil {
		return nil, err
	}
	errs = append(errs, targetErrs...)
	return v.warnings(cred), invalid(cred, errs)
}

// ValidateUpdate checks a changed credential. secretName and user cannot
// change (the schema says so), but agents can: only agents added now are
// checked, so a credential that conflicts already (made while the webhook
// was bypassed) can still get its finalizer, annotations and deletion.
// Restart targets are checked when added, and all of them when the update
// asks for a new key, which restarts every target.
func (v *Validator) ValidateUpdate(ctx context.Context, old, cred *authv1alpha1.AgentCredential) (admission.Warnings, error) {
	req, err := review(ctx, cred)
	if err != nil {
		return nil, err
	}
	if old.Namespace != cred.Namespace {
		return nil, invalid(cred, field.ErrorList{field.Forbidden(field.NewPath("metadata", "namespace"), "the old object is in another namespace")})
	}
	if !cred.DeletionTimestamp.IsZero() {
		return v.warnings(cred), nil
	}
	errs, err := v.checkIdentities(ctx, cred, addedIdentities(old, cred))
	if err != nil {
		return nil, err
	}
	targets, trigger := addedTargets(old, cred), newKeyRequest(old, cred)
	if trigger != nil {
		targets = cred.Spec.Rotation.RestartTargets
	}
	targetErrs, err := v.checkRestartTargets(ctx, req, cred, targets, func(t authv1alpha1.RestartTarget) *field.Path {
		if slices.Contains(old.Spec.Rotation.RestartTargets, t) {
			return trigger
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	errs = append(errs, targetErrs...)
	return v.warnings(cred), invalid(cred, errs)
}

// review returns the admission request cred came in, refusing one whose
// object lies outside the request's namespace: every lookup is made in the
// object's namespace, and a forged review must not point them elsewhere.
func review(ctx context.Context, cred *authv1alpha1.AgentCredential) (admission.Request, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return req, fmt.Errorf("validating AgentCredential: %w", err)
	}
	path := field.NewPath("metadata", "namespace")
	switch {
	case cred.Namespace == "":
		return req, invalid(cred, field.ErrorList{field.Required(path, "an AgentCredential is namespaced")})
	case cred.Namespace != req.Namespace:
		return req, invalid(cred, field.ErrorList{field.Forbidden(path, fmt.Sprintf("the object's namespace %q is not the request's %q", cred.Namespace, req.Namespace))})
	}
	return req, nil
}

// newKeyRequest returns the field through which an update of cred asks for
// a new key — a changed rotate annotation, spec.expiresAt moved later or
// removed (an expired credential gets a new key), a shorter rotation period
// (the next key comes sooner) — or nil. Every new key restarts every
// restart target.
func newKeyRequest(old, cred *authv1alpha1.AgentCredential) *field.Path {
	if r := cred.RotationRequest(); r != "" && r != old.RotationRequest() {
		return field.NewPath("metadata", "annotations").Key(authv1alpha1.RotateAnnotation)
	}
	if was, now := old.ExpiresAt(), cred.ExpiresAt(); !was.IsZero() && (now.IsZero() || now.After(was)) {
		return field.NewPath("spec", "expiresAt")
	}
	if cred.RotationPeriod() < old.RotationPeriod() {
		return field.NewPath("spec", "rotation", "period")
	}
	return nil
}

// checkEnvironment refuses a live credential in a namespace labelled
// auth.agrenting.io/environment=sandbox. (Only on create: the environment
// is immutable, and a credential made before the label must stay editable
// and deletable; the controller holds it without a key.)
func (v *Validator) checkEnvironment(ctx context.Context, cred *authv1alpha1.AgentCredential) (*field.Error, error) {
	if ok, err := identityindex.EnvironmentAllowed(ctx, v.Credentials, cred); err != nil || ok {
		return nil, err
	}
	return field.Forbidden(field.NewPath("spec", "environment"), tenancy.EnvironmentRefusal(cred.Namespace)), nil
}

// addedTargets returns the restart targets b names that a does not.
func addedTargets(a, b *authv1alpha1.AgentCredential) []authv1alpha1.RestartTarget {
	var out []authv1alpha1.RestartTarget
	for _, t := range b.Spec.Rotation.RestartTargets {
		if !slices.Contains(a.Spec.Rotation.RestartTargets, t) {
			out = append(out, t)
		}
	}
	return out
}

// checkRestartTargets refuses a restart target the requester could not
// restart itself (patch, as kubectl rollout restart does): otherwise anyone
// allowed to write AgentCredentials could restart every workload in the
// namespace through agentcred. trigger, when it returns a path for a
// target, names the change that would restart it (a new key) instead of
// the target itself.
func (v *Validator) checkRestartTargets(ctx context.Context, req admission.Request, cred *authv1alpha1.AgentCredential,
	targets []authv1alpha1.RestartTarget, trigger func(authv1alpha1.RestartTarget) *field.Path) (field.ErrorList, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	if v.Reviews == nil {
		return nil, errors.New("checking restart targets: no SubjectAccessReview client")
	}
	var errs field.ErrorList
	for _, t := range targets {
		sar := accessReview(req.UserInfo, cred.Namespace, t)
		if err := v.Reviews.Create(ctx, sar); err != nil {
			return nil, fmt.Errorf("checking access to restart target %s: %w", t, err)
		}
		if sar.Status.Allowed {
			continue
		}
		refusal := fmt.Sprintf("%s may not patch %s %q in namespace %s", req.UserInfo.Username, t.Kind, t.Name, cred.Namespace)
		if trigger != nil {
			if p := trigger(t); p != nil {
				errs = append(errs, field.Forbidden(p, fmt.Sprintf(
					"this asks for a new key, which restarts every restart target, and %s (%s); only someone who could restart each target may, or remove the target first",
					refusal, targetPath(cred, t))))
				continue
			}
		}
		errs = append(errs, field.Forbidden(targetPath(cred, t), refusal+
			"; agentcred restarts only workloads the credential's author could restart (kubectl rollout restart needs patch)"))
	}
	return errs, nil
}

// accessReview asks whether user may patch the workload t in namespace.
func accessReview(user authenticationv1.UserInfo, namespace string, t authv1alpha1.RestartTarget) *authorizationv1.SubjectAccessReview {
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	return &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: namespace, Verb: "patch", Group: "apps", Resource: strings.ToLower(string(t.Kind)) + "s", Name: t.Name,
		},
	}}
}

func targetPath(cred *authv1alpha1.AgentCredential, t authv1alpha1.RestartTarget) *field.Path {
	return field.NewPath("spec", "rotation", "restartTargets").Index(slices.Index(cred.Spec.Rotation.RestartTargets, t))
}

// ValidateDelete allows every delete.
func (v *Validator) ValidateDelete(context.Context, *authv1alpha1.AgentCredential) (admission.Warnings, error) {
	return nil, nil
}

// addedIdentities returns the identities b names that a does not.
func addedIdentities(a, b *authv1alpha1.AgentCredential) []tenancy.Identity {
	had := map[string]bool{}
	for _, id := range identityindex.Identities(a) {
		had[tenancy.ClaimName(id)] = true
	}
	var out []tenancy.Identity
	for _, id := range identityindex.Identities(b) {
		if !had[tenancy.ClaimName(id)] {
			out = append(out, id)
		}
	}
	return out
}

func invalid(cred *authv1alpha1.AgentCredential, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(authv1alpha1.GroupVersion.WithKind("AgentCredential").GroupKind(), cred.Name, errs)
}

// checkSecretName refuses a secretName that names an existing Secret this
// credential does not control, or that another credential uses.
func (v *Validator) checkSecretName(ctx context.Context, cred *authv1alpha1.AgentCredential) (*field.Error, error) {
	path := field.NewPath("spec", "secretName")
	name := cred.SecretName()
	s := &corev1.Secret{}
	err := v.Secrets.Get(ctx, client.ObjectKey{Namespace: cred.Namespace, Name: name}, s)
	switch {
	case err == nil && !metav1.IsControlledBy(s, cred):
		if owner := metav1.GetControllerOf(s); owner != nil && owner.Kind == "AgentCredential" {
			return field.Forbidden(path, fmt.Sprintf("Secret %q belongs to AgentCredential %q; choose another secretName", name, owner.Name)), nil
		}
		return field.Forbidden(path, fmt.Sprintf("Secret %q already exists and is not managed by agentcred; "+
			"agentcred will not take it over: choose another secretName or delete that Secret", name)), nil
	case err != nil && !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("checking Secret %q: %w", name, err)
	}
	others := &authv1alpha1.AgentCredentialList{}
	if err := v.Credentials.List(ctx, others, client.InNamespace(cred.Namespace)); err != nil {
		return nil, fmt.Errorf("listing AgentCredentials: %w", err)
	}
	for i := range others.Items {
		o := &others.Items[i]
		if o.Name != cred.Name && o.SecretName() == name {
			return field.Forbidden(path, fmt.Sprintf("AgentCredential %q already issues its key into Secret %q; choose another secretName", o.Name, name)), nil
		}
	}
	return nil, nil
}

// checkIdentities refuses identities whose IdentityClaim binds them to
// another namespace (and, with preassigned claims, identities no claim binds
// to this one), when the caller is authenticated. The message names the
// field, never the holder. Claims are read from the cache: the controller,
// which creates them with one atomic Create, is the authority; this only
// refuses early.
func (v *Validator) checkIdentities(ctx context.Context, cred *authv1alpha1.AgentCredential, ids []tenancy.Identity) (field.ErrorList, error) {
	if !v.CallersAuthenticated {
		// A forger chooses the namespace: refusing here would tell them
		// whether it holds the identity, and in turn which one does.
		return nil, nil
	}
	var errs field.ErrorList
	for _, id := range ids {
		claim := &authv1alpha1.IdentityClaim{}
		err := v.Credentials.Get(ctx, client.ObjectKey{Name: tenancy.ClaimName(id)}, claim)
		var spec *authv1alpha1.IdentityClaimSpec
		switch {
		case err == nil:
			spec = &claim.Spec
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("reading IdentityClaim %s: %w", tenancy.ClaimName(id), err)
		}
		switch tenancy.HoldingOf(spec, id, cred.Namespace) {
		case tenancy.Elsewhere:
			errs = append(errs, field.Forbidden(identityPath(cred, id), tenancy.Refusal(id)))
		case tenancy.Unclaimed:
			if v.IdentityClaims == tenancy.Preassigned {
				errs = append(errs, field.Forbidden(identityPath(cred, id), tenancy.NotAssigned(id, cred.Namespace)))
			}
		}
	}
	return errs, nil
}

// identityPath is the field that names id: spec.user, spec.agentID or
// spec.agents[i].
func identityPath(cred *authv1alpha1.AgentCredential, id tenancy.Identity) *field.Path {
	if id.Kind == authv1alpha1.UserIdentity {
		return field.NewPath("spec", "user")
	}
	if cred.CredentialType() != authv1alpha1.UserTokenType {
		return field.NewPath("spec", "agentID")
	}
	for i, a := range cred.Spec.Agents {
		if strings.EqualFold(a, id.Value) {
			return field.NewPath("spec", "agents").Index(i)
		}
	}
	return field.NewPath("spec", "agents")
}

// warnings are advice, not errors.
func (v *Validator) warnings(cred *authv1alpha1.AgentCredential) admission.Warnings {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	w := expiryWarnings(cred, now())
	if p := cred.RotationPeriod(); p > RecommendedMaxPeriod {
		w = append(w, fmt.Sprintf("spec.rotation.period: %s is longer than the 90 days (2160h) the platform recommends", p))
	}
	if g := cred.Spec.Rotation.GracePeriod; g != nil && g.Duration == 0 {
		w = append(w, "spec.rotation.gracePeriod: 0s revokes the old key at the moment of a scheduled rotation; "+
			"pods still using it fail until they read the new key from the Secret")
	}
	return w
}

// expiryWarnings says when spec.expiresAt has passed already, or comes
// before the next scheduled rotation (which then never happens).
func expiryWarnings(cred *authv1alpha1.AgentCredential, now time.Time) admission.Warnings {
	exp := cred.ExpiresAt()
	if exp.IsZero() {
		return nil
	}
	at := exp.UTC().Format(time.RFC3339)
	if !now.Before(exp) {
		return admission.Warnings{fmt.Sprintf("spec.expiresAt: %s has passed; the key does not authenticate (401 expired_credentials) until spec.expiresAt is moved into the future", at)}
	}
	issued := now
	if t := cred.Status.LastRotationTime; t != nil {
		issued = t.Time
	}
	if next := issued.Add(cred.RotationPeriod()); !next.Before(exp) {
		return admission.Warnings{fmt.Sprintf("spec.expiresAt: %s comes before the next scheduled rotation (%s); the key will not be rotated, it stops authenticating at %s",
			at, next.UTC().Format(time.RFC3339), at)}
	}
	return nil
}
