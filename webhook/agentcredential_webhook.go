// Package webhook is the validating admission webhook for AgentCredentials.
// It does only what the CRD schema cannot, because it needs a lookup: it
// refuses a secretName that would take over a Secret this credential does not
// control, and agent IDs that another namespace owns. The controller enforces
// the same rules, so bypassing the webhook gains nothing.
package webhook

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/agentindex"
	"github.com/agrenting/agentcred/internal/tenancy"
)

// Path is where the webhook is served.
const Path = "/validate-auth-agrenting-io-v1alpha1-agentcredential"

// RecommendedMaxPeriod is the platform's recommended rotation period.
const RecommendedMaxPeriod = authv1alpha1.DefaultRotationPeriod

// The self-signed certificate rotation (cert-controller) injects the CA bundle:
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;list;watch;update;patch

// +kubebuilder:webhook:path=/validate-auth-agrenting-io-v1alpha1-agentcredential,mutating=false,failurePolicy=fail,sideEffects=None,groups=auth.agrenting.io,resources=agentcredentials,verbs=create;update,versions=v1alpha1,name=vagentcredential.auth.agrenting.io,admissionReviewVersions=v1,timeoutSeconds=5

// Validator validates AgentCredentials on create and update.
type Validator struct {
	// Credentials reads AgentCredentials through the agent-ID index.
	Credentials client.Reader
	// Secrets reads a Secret by name, around the label-filtered cache.
	Secrets client.Reader
	Clock   clock.PassiveClock
}

var _ admission.Validator[*authv1alpha1.AgentCredential] = &Validator{}

// SetupWithManager registers the webhook with the manager's webhook server.
func (v *Validator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &authv1alpha1.AgentCredential{}).WithValidator(v).Complete()
}

// ValidateCreate checks a new credential.
func (v *Validator) ValidateCreate(ctx context.Context, cred *authv1alpha1.AgentCredential) (admission.Warnings, error) {
	var errs field.ErrorList
	secretErr, err := v.checkSecretName(ctx, cred)
	if err != nil {
		return nil, err
	}
	if secretErr != nil {
		errs = append(errs, secretErr)
	}
	tenancyErrs, err := v.checkAgentIDs(ctx, cred, true)
	if err != nil {
		return nil, err
	}
	errs = append(errs, tenancyErrs...)
	return warnings(cred), invalid(cred, errs)
}

// ValidateUpdate checks a changed credential. secretName cannot change (the
// schema says so), but agents can: only a change of agents is checked, so a
// credential that conflicts already (made while the webhook was bypassed)
// can still get its finalizer, annotations and deletion.
func (v *Validator) ValidateUpdate(ctx context.Context, old, cred *authv1alpha1.AgentCredential) (admission.Warnings, error) {
	added := addedAgents(old, cred)
	if !cred.DeletionTimestamp.IsZero() || len(added) == 0 {
		return warnings(cred), nil
	}
	// An agent ID added now is claimed now: it must not take an agent from a
	// namespace that already owns it, however old this credential is.
	claimant := cred.DeepCopy()
	claimant.Spec.AgentID, claimant.Spec.Agents = "", added
	claimant.Spec.Type = authv1alpha1.UserTokenType
	errs, err := v.checkAgentIDs(ctx, claimant, true)
	for _, e := range errs {
		e.Field = agentIDPathIn(cred, e.BadValue).String()
	}
	if err != nil {
		return nil, err
	}
	return warnings(cred), invalid(cred, errs)
}

// ValidateDelete allows every delete.
func (v *Validator) ValidateDelete(context.Context, *authv1alpha1.AgentCredential) (admission.Warnings, error) {
	return nil, nil
}

// addedAgents returns the agent IDs in b that are not in a.
func addedAgents(a, b *authv1alpha1.AgentCredential) []string {
	had := map[string]bool{}
	for _, id := range a.AgentIDs() {
		had[id] = true
	}
	var out []string
	for _, id := range b.AgentIDs() {
		if !had[id] {
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

// checkAgentIDs refuses agent IDs owned by another namespace: the same rule,
// through the same index, as the controller.
func (v *Validator) checkAgentIDs(ctx context.Context, cred *authv1alpha1.AgentCredential, creating bool) (field.ErrorList, error) {
	claims, err := agentindex.ListClaims(ctx, v.Credentials, cred.AgentIDs())
	if err != nil {
		return nil, err
	}
	claim := agentindex.ClaimOf(cred)
	if creating {
		// The API server stamps creationTimestamp before admission, to the
		// second; an object being created is newer than every existing one,
		// even one created in the same second.
		claim.Created = v.Clock.Now().Add(time.Second)
	}
	var errs field.ErrorList
	for _, c := range tenancy.Conflicts(claim, claims) {
		ns, _, _ := strings.Cut(c.Owner, "/")
		errs = append(errs, forbiddenAgent(agentIDPath(cred, c.AgentID), c.AgentID,
			fmt.Sprintf("agent ID %s belongs to namespace %q (AgentCredential %s); an agent's credentials must all live in one namespace", c.AgentID, ns, c.Owner)))
	}
	return errs, nil
}

// forbiddenAgent is field.Forbidden that remembers the agent ID, so the
// path can be recomputed against the full object.
func forbiddenAgent(path *field.Path, agentID, detail string) *field.Error {
	e := field.Forbidden(path, detail)
	e.BadValue = agentID
	return e
}

func agentIDPathIn(cred *authv1alpha1.AgentCredential, agentID interface{}) *field.Path {
	id, _ := agentID.(string)
	return agentIDPath(cred, id)
}

func agentIDPath(cred *authv1alpha1.AgentCredential, id string) *field.Path {
	if cred.CredentialType() != authv1alpha1.UserTokenType {
		return field.NewPath("spec", "agentID")
	}
	for i, a := range cred.Spec.Agents {
		if strings.EqualFold(a, id) {
			return field.NewPath("spec", "agents").Index(i)
		}
	}
	return field.NewPath("spec", "agents")
}

// warnings are advice, not errors.
func warnings(cred *authv1alpha1.AgentCredential) admission.Warnings {
	var w admission.Warnings
	if p := cred.RotationPeriod(); p > RecommendedMaxPeriod {
		w = append(w, fmt.Sprintf("spec.rotation.period: %s is longer than the 90 days (2160h) the platform recommends", p))
	}
	if g := cred.Spec.Rotation.GracePeriod; g != nil && g.Duration == 0 {
		w = append(w, "spec.rotation.gracePeriod: 0s revokes the old key at the moment of a scheduled rotation; "+
			"pods still using it fail until they read the new key from the Secret")
	}
	return w
}
