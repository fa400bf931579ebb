package webhook_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/operator"
	"github.com/agrenting/agentcred/internal/tenancy"
	"github.com/agrenting/agentcred/webhook"
)

// The fast tier: every branch of the Validator over a fake client with the
// same indexes as the manager's cache (no control plane; `go test -short`).
// The envtest suite in this package proves the same through a real API
// server over TLS.

const (
	agentX = "aaaaaaaa-0000-4000-8000-000000000001"
	agentY = "aaaaaaaa-0000-4000-8000-000000000002"
)

func fakeClaim(id tenancy.Identity, namespace string) *authv1alpha1.IdentityClaim {
	return &authv1alpha1.IdentityClaim{
		ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(id)},
		Spec:       authv1alpha1.IdentityClaimSpec{Kind: id.Kind, Value: id.Value, Namespace: namespace},
	}
}

func fakeValidator(mode tenancy.Mode, objs ...client.Object) *webhook.Validator {
	c := fake.NewClientBuilder().WithScheme(operator.Scheme()).WithObjects(objs...).
		WithIndex(&authv1alpha1.AgentCredential{}, identityindex.CredentialsByClaim, identityindex.ClaimNames).
		WithIndex(&authv1alpha1.IdentityClaim{}, identityindex.ClaimsByCredential, identityindex.UsedBy).
		WithIndex(&authv1alpha1.IdentityClaim{}, identityindex.ClaimsByNamespace, identityindex.BoundNamespace).
		Build()
	return &webhook.Validator{Credentials: c, Secrets: c, IdentityClaims: mode, CallersAuthenticated: true}
}

// reviewOf is the context of an admission request for obj, made by alice
// in obj's namespace, as kube-apiserver sends it.
func reviewOf(obj client.Object) context.Context {
	return reviewAs(obj.GetNamespace(), "alice")
}

// reviewAs is the context of an admission request in namespace by user.
func reviewAs(namespace, user string) context.Context {
	return admission.NewContextWithRequest(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Namespace: namespace,
		UserInfo:  authenticationv1.UserInfo{Username: user, Groups: []string{"devs"}, Extra: map[string]authenticationv1.ExtraValue{"scope": {"x"}}},
	}})
}

func TestValidatorCreateTable(t *testing.T) {
	mine := func(name string, mutate ...func(*authv1alpha1.AgentCredential)) *authv1alpha1.AgentCredential {
		return apiKey("team-a", name, agentX, mutate...)
	}
	token := func(user string, agents ...string) *authv1alpha1.AgentCredential {
		return &authv1alpha1.AgentCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "token"},
			Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: user, Agents: agents},
		}
	}
	otherCred := apiKey("team-a", "other", agentY, func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "shared" })
	tests := []struct {
		name     string
		mode     tenancy.Mode
		existing []client.Object
		cred     *authv1alpha1.AgentCredential
		want     []string // substrings of the error; none = admitted
		notWant  []string
	}{
		{name: "unclaimed agent, first use", cred: mine("a")},
		{name: "agent claimed here", existing: []client.Object{fakeClaim(tenancy.Agent(agentX), "team-a")}, cred: mine("a")},
		{name: "agent claimed elsewhere", existing: []client.Object{fakeClaim(tenancy.Agent(agentX), "team-b")}, cred: mine("a"),
			want: []string{"spec.agentID: Forbidden: agent ID " + agentX + " is claimed by another namespace"}, notWant: []string{"team-b"}},
		{name: "agent of a user token claimed elsewhere", existing: []client.Object{fakeClaim(tenancy.Agent(agentY), "team-b")},
			cred: token("alice", agentX, agentY), want: []string{"spec.agents[1]: Forbidden"}, notWant: []string{"team-b"}},
		{name: "user claimed elsewhere, other spelling", existing: []client.Object{fakeClaim(tenancy.User("alice@example.com"), "team-b")},
			cred: token("ALICE@example.com", agentX), want: []string{`spec.user: Forbidden: user "ALICE@example.com" is claimed by another namespace`}, notWant: []string{"team-b"}},
		{name: "misnamed admin claim grants nothing", existing: []client.Object{&authv1alpha1.IdentityClaim{
			ObjectMeta: metav1.ObjectMeta{Name: tenancy.ClaimName(tenancy.User("alice"))},
			Spec:       authv1alpha1.IdentityClaimSpec{Kind: authv1alpha1.UserIdentity, Value: "bob", Namespace: "team-a"}}},
			cred: token("alice", agentX), want: []string{"spec.user: Forbidden"}},
		{name: "preassigned, unassigned", mode: tenancy.Preassigned, cred: mine("a"),
			want: []string{"spec.agentID: Forbidden: agent ID " + agentX + " is not assigned to this namespace: a cluster admin must create IdentityClaim agent-" + agentX}},
		{name: "preassigned, assigned", mode: tenancy.Preassigned, existing: []client.Object{fakeClaim(tenancy.Agent(agentX), "team-a")}, cred: mine("a")},
		{name: "foreign Secret in the way", existing: []client.Object{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "a"}}},
			cred: mine("a"), want: []string{`spec.secretName: Forbidden: Secret "a" already exists and is not managed by agentcred`}},
		{name: "another credential's Secret", existing: []client.Object{otherCred},
			cred: mine("a", func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "shared" }),
			want: []string{`AgentCredential "other" already issues its key into Secret "shared"`}},
		{name: "Secret controlled by another credential", existing: []client.Object{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Namespace: "team-a", Name: "issued", OwnerReferences: []metav1.OwnerReference{{APIVersion: authv1alpha1.GroupVersion.String(),
				Kind: "AgentCredential", Name: "first", UID: "u1", Controller: ptr.To(true)}}}}},
			cred: mine("a", func(c *authv1alpha1.AgentCredential) { c.Spec.SecretName = "issued" }),
			want: []string{`Secret "issued" belongs to AgentCredential "first"`}},
		{name: "two problems, two field errors", existing: []client.Object{fakeClaim(tenancy.Agent(agentX), "team-b"),
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "a"}}},
			cred: mine("a"), want: []string{"spec.secretName: Forbidden", "spec.agentID: Forbidden"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			mode := tt.mode
			if mode == "" {
				mode = tenancy.FirstUse
			}
			_, err := fakeValidator(mode, tt.existing...).ValidateCreate(reviewOf(tt.cred), tt.cred)
			if len(tt.want) == 0 {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(HaveOccurred())
			for _, w := range tt.want {
				g.Expect(err.Error()).To(ContainSubstring(w))
			}
			for _, w := range tt.notWant {
				g.Expect(err.Error()).NotTo(ContainSubstring(w))
			}
		})
	}
}

func TestValidatorUpdateChecksOnlyAddedIdentities(t *testing.T) {
	g := NewWithT(t)
	v := fakeValidator(tenancy.FirstUse, fakeClaim(tenancy.Agent(agentY), "team-b"), fakeClaim(tenancy.User("eve"), "team-b"))
	old := &authv1alpha1.AgentCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "token"},
		Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: "eve", Agents: []string{agentX}},
	}
	// The user was claimed elsewhere already (webhook bypassed): an
	// annotation change or a deletion must still pass.
	annotated := old.DeepCopy()
	annotated.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "1"}
	_, err := v.ValidateUpdate(reviewOf(old), old, annotated)
	g.Expect(err).NotTo(HaveOccurred())
	// Adding an agent claimed elsewhere is refused, with its index.
	added := old.DeepCopy()
	added.Spec.Agents = []string{agentX, agentY}
	_, err = v.ValidateUpdate(reviewOf(old), old, added)
	g.Expect(err).To(MatchError(ContainSubstring("spec.agents[1]: Forbidden")))
	g.Expect(err.Error()).NotTo(ContainSubstring("spec.user"))
	// Adding it while being deleted passes.
	deleting := added.DeepCopy()
	deleting.DeletionTimestamp = ptr.To(metav1.Now())
	_, err = v.ValidateUpdate(reviewOf(old), old, deleting)
	g.Expect(err).NotTo(HaveOccurred())
	// Deletes always pass.
	_, err = v.ValidateDelete(context.Background(), added)
	g.Expect(err).NotTo(HaveOccurred())
}

func TestValidatorWarnings(t *testing.T) {
	g := NewWithT(t)
	cred := apiKey("team-a", "yearly", agentX, func(c *authv1alpha1.AgentCredential) {
		c.Spec.Rotation.Period = &metav1.Duration{Duration: authv1alpha1.MaxRotationPeriod}
		c.Spec.Rotation.GracePeriod = &metav1.Duration{}
	})
	w, err := fakeValidator(tenancy.FirstUse).ValidateCreate(reviewOf(cred), cred)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(w).To(ConsistOf(ContainSubstring("spec.rotation.period"), ContainSubstring("spec.rotation.gracePeriod: 0s")))
}

func TestValidatorExpiryWarnings(t *testing.T) {
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	v := fakeValidator(tenancy.FirstUse)
	v.Now = func() time.Time { return now }
	expiring := func(at time.Time, mutate ...func(*authv1alpha1.AgentCredential)) *authv1alpha1.AgentCredential {
		return apiKey("team-a", "temp", agentX, append([]func(*authv1alpha1.AgentCredential){func(c *authv1alpha1.AgentCredential) {
			c.Spec.ExpiresAt = &metav1.Time{Time: at}
		}}, mutate...)...)
	}
	issuedLongAgo := func(c *authv1alpha1.AgentCredential) {
		c.Status.LastRotationTime = &metav1.Time{Time: now.Add(-80 * 24 * time.Hour)}
	}
	tests := []struct {
		name string
		cred *authv1alpha1.AgentCredential
		want []string
	}{
		{"no expiry", apiKey("team-a", "temp", agentX), nil},
		{"in the past", expiring(now.Add(-time.Hour)), []string{"spec.expiresAt: 2026-12-31T23:00:00Z has passed"}},
		{"now", expiring(now), []string{"has passed"}},
		{"before the next rotation of a new credential", expiring(now.Add(30 * 24 * time.Hour)),
			[]string{"comes before the next scheduled rotation (2027-04-01T00:00:00Z)"}},
		{"after the next rotation", expiring(now.Add(100 * 24 * time.Hour)), nil},
		{"before an issued credential's next rotation", expiring(now.Add(5*24*time.Hour), issuedLongAgo),
			[]string{"comes before the next scheduled rotation (2027-01-11T00:00:00Z)"}},
		{"after an old credential's next rotation", expiring(now.Add(11*24*time.Hour), issuedLongAgo), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			w, err := v.ValidateCreate(reviewOf(tt.cred), tt.cred)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(w).To(HaveLen(len(tt.want)))
			for i, s := range tt.want {
				g.Expect(w[i]).To(ContainSubstring(s))
			}
		})
	}
}

// sarAllowing answers SubjectAccessReviews: allowed only for user.
func sarAllowing(user string, seen *[]authorizationv1.SubjectAccessReviewSpec) client.Writer {
	return interceptor.NewClient(fake.NewClientBuilder().WithScheme(operator.Scheme()).Build(), interceptor.Funcs{
		Create: func(_ context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			sar := obj.(*authorizationv1.SubjectAccessReview)
			*seen = append(*seen, sar.Spec)
			sar.Status.Allowed = sar.Spec.User == user
			return nil
		},
	})
}

func TestValidatorRestartTargetsNeedTheRequestersPatchRight(t *testing.T) {
	target := authv1alpha1.RestartTarget{Kind: authv1alpha1.StatefulSetKind, Name: "db"}
	withTarget := func(c *authv1alpha1.AgentCredential) {
		c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{target}
	}
	as := func(user string) context.Context { return reviewAs("team-a", user) }
	t.Run("allowed", func(t *testing.T) {
		g := NewWithT(t)
		var seen []authorizationv1.SubjectAccessReviewSpec
		v := fakeValidator(tenancy.FirstUse)
		v.Reviews = sarAllowing("alice", &seen)
		_, err := v.ValidateCreate(as("alice"), apiKey("team-a", "c", agentX, withTarget))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(seen).To(HaveLen(1))
		g.Expect(seen[0].Groups).To(Equal([]string{"devs"}))
		g.Expect(seen[0].Extra).To(HaveKeyWithValue("scope", authorizationv1.ExtraValue{"x"}))
		g.Expect(*seen[0].ResourceAttributes).To(Equal(authorizationv1.ResourceAttributes{
			Namespace: "team-a", Verb: "patch", Group: "apps", Resource: "statefulsets", Name: "db"}))
	})
	t.Run("refused with the field path", func(t *testing.T) {
		g := NewWithT(t)
		var seen []authorizationv1.SubjectAccessReviewSpec
		v := fakeValidator(tenancy.FirstUse)
		v.Reviews = sarAllowing("alice", &seen)
		_, err := v.ValidateCreate(as("mallory"), apiKey("team-a", "c", agentX, withTarget))
		g.Expect(err).To(MatchError(ContainSubstring(`spec.rotation.restartTargets[0]: Forbidden: mallory may not patch StatefulSet "db" in namespace team-a`)))
	})
	t.Run("update checks only added targets", func(t *testing.T) {
		g := NewWithT(t)
		var seen []authorizationv1.SubjectAccessReviewSpec
		v := fakeValidator(tenancy.FirstUse)
		v.Reviews = sarAllowing("alice", &seen)
		old := apiKey("team-a", "c", agentX, withTarget)
		cur := old.DeepCopy()
		cur.Annotations = map[string]string{"x": "y"}
		_, err := v.ValidateUpdate(as("mallory"), old, cur)
		g.Expect(err).NotTo(HaveOccurred(), "an unchanged target must not block other edits")
		cur.Spec.Rotation.RestartTargets = append(cur.Spec.Rotation.RestartTargets, authv1alpha1.RestartTarget{Kind: authv1alpha1.DeploymentKind, Name: "web"})
		_, err = v.ValidateUpdate(as("mallory"), old, cur)
		g.Expect(err).To(MatchError(ContainSubstring(`spec.rotation.restartTargets[1]`)))
		g.Expect(seen).To(HaveLen(1))
	})
	t.Run("no request, no review client: refused, never waved through", func(t *testing.T) {
		g := NewWithT(t)
		v := fakeValidator(tenancy.FirstUse)
		_, err := v.ValidateCreate(as("alice"), apiKey("team-a", "c", agentX, withTarget))
		g.Expect(err).To(HaveOccurred())
		v.Reviews = sarAllowing("alice", new([]authorizationv1.SubjectAccessReviewSpec))
		_, err = v.ValidateCreate(context.Background(), apiKey("team-a", "c", agentX, withTarget))
		g.Expect(err).To(MatchError(ContainSubstring("admission.Request not found")))
		g.Expect(err).To(HaveOccurred())
	})
}

func TestValidatorSandboxNamespaceAdmitsOnlySandboxCredentials(t *testing.T) {
	sandboxNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "qa", Labels: map[string]string{authv1alpha1.NamespaceEnvironmentLabel: "sandbox"}}}
	plainNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}
	v := fakeValidator(tenancy.FirstUse, sandboxNS, plainNS)
	env := func(e authv1alpha1.Environment) func(*authv1alpha1.AgentCredential) {
		return func(c *authv1alpha1.AgentCredential) { c.Spec.Environment = e }
	}
	tests := []struct {
		ns, name string
		env      authv1alpha1.Environment
		refused  bool
	}{
		{"qa", "a", authv1alpha1.LiveEnvironment, true},
		{"qa", "b", "", true}, // the default is live
		{"qa", "c", authv1alpha1.SandboxEnvironment, false},
		{"team-a", "d", authv1alpha1.LiveEnvironment, false},
		{"team-a", "e", authv1alpha1.SandboxEnvironment, false},
		{"no-such-namespace", "f", authv1alpha1.LiveEnvironment, false},
	}
	for _, tt := range tests {
		g := NewWithT(t)
		cred := apiKey(tt.ns, tt.name, agentX, env(tt.env))
		_, err := v.ValidateCreate(reviewOf(cred), cred)
		if tt.refused {
			g.Expect(err).To(MatchError(ContainSubstring("spec.environment: Forbidden: namespace qa is labelled auth.agrenting.io/environment=sandbox")), tt.name)
		} else {
			g.Expect(err).NotTo(HaveOccurred(), tt.name)
		}
	}
	// A live credential made before the label stays editable.
	old := apiKey("qa", "legacy", agentX)
	cur := old.DeepCopy()
	cur.Annotations = map[string]string{"x": "y"}
	_, err := v.ValidateUpdate(reviewOf(old), old, cur)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
}

// countingValidator is fakeValidator whose reads are counted: a refused
// forged review must make none.
func countingValidator(mode tenancy.Mode, reads *int, objs ...client.Object) *webhook.Validator {
	v := fakeValidator(mode, objs...)
	count := interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			*reads++
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			*reads++
			return c.List(ctx, list, opts...)
		},
	}
	c := interceptor.NewClient(v.Credentials.(client.WithWatch), count)
	v.Credentials, v.Secrets = c, c
	return v
}

func TestValidatorRefusesReviewsForAnotherNamespace(t *testing.T) {
	target := func(c *authv1alpha1.AgentCredential) {
		c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{{Kind: authv1alpha1.DeploymentKind, Name: "api"}}
	}
	cred := apiKey("team-a", "probe", agentX, target)
	tests := []struct {
		name string
		ctx  context.Context
		cred *authv1alpha1.AgentCredential
		want string
	}{
		{"object in another namespace", reviewAs("mallory", "alice"), cred,
			`metadata.namespace: Forbidden: the object's namespace "team-a" is not the request's "mallory"`},
		{"request without a namespace", reviewAs("", "alice"), cred, "metadata.namespace: Forbidden"},
		{"object without a namespace", reviewAs("", "alice"), apiKey("", "probe", agentX, target), "metadata.namespace: Required"},
		{"no admission request", context.Background(), cred, "admission.Request not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			reads := 0
			var seen []authorizationv1.SubjectAccessReviewSpec
			v := countingValidator(tenancy.Preassigned, &reads, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "probe"}})
			v.Reviews = sarAllowing("alice", &seen)
			_, err := v.ValidateCreate(tt.ctx, tt.cred)
			g.Expect(err).To(MatchError(ContainSubstring(tt.want)))
			g.Expect(err.Error()).NotTo(ContainSubstring("spec."), "a refused review reveals nothing of the namespace")
			_, err = v.ValidateUpdate(tt.ctx, tt.cred, tt.cred)
			g.Expect(err).To(MatchError(ContainSubstring(tt.want)))
			g.Expect(reads).To(BeZero(), "no lookup for a review that points elsewhere")
			g.Expect(seen).To(BeEmpty(), "no SubjectAccessReview either")
		})
	}
	t.Run("old object in another namespace", func(t *testing.T) {
		g := NewWithT(t)
		old := apiKey("team-b", "probe", agentX)
		_, err := fakeValidator(tenancy.FirstUse).ValidateUpdate(reviewOf(cred), old, cred)
		g.Expect(err).To(MatchError(ContainSubstring("metadata.namespace: Forbidden: the old object is in another namespace")))
	})
}

// TestValidatorUnauthenticatedCallersLearnNothingOfClaims: without a
// verified client certificate anyone may forge a review for any namespace,
// so the answer must be the same whether another namespace holds the
// identity, this one does, or none does; the controller refuses instead.
func TestValidatorUnauthenticatedCallersLearnNothingOfClaims(t *testing.T) {
	user := tenancy.User("ceo@example.com")
	token := func(ns string) *authv1alpha1.AgentCredential {
		return &authv1alpha1.AgentCredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"},
			Spec:       authv1alpha1.AgentCredentialSpec{Type: authv1alpha1.UserTokenType, User: user.Value, Agents: []string{agentX}},
		}
	}
	holders := map[string][]client.Object{
		"unclaimed":              nil,
		"held by this namespace": {fakeClaim(user, "team-a"), fakeClaim(tenancy.Agent(agentX), "team-a")},
		"held by another":        {fakeClaim(user, "team-b"), fakeClaim(tenancy.Agent(agentX), "team-b")},
	}
	for _, mode := range []tenancy.Mode{tenancy.FirstUse, tenancy.Preassigned} {
		for name, claims := range holders {
			t.Run(string(mode)+"/"+name, func(t *testing.T) {
				g := NewWithT(t)
				reads := 0
				v := countingValidator(mode, &reads, claims...)
				v.CallersAuthenticated = false
				cred := token("team-a")
				w, err := v.ValidateCreate(reviewOf(cred), cred)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(w).To(BeEmpty())
				added := cred.DeepCopy()
				added.Spec.Agents = append(added.Spec.Agents, agentY)
				_, err = v.ValidateUpdate(reviewOf(cred), cred, added)
				g.Expect(err).NotTo(HaveOccurred())
				// The Secret, the namespace's credentials and the Namespace
				// (environment) are read: three lookups, all in team-a, none
				// of an IdentityClaim.
				g.Expect(reads).To(Equal(3))
			})
		}
	}
}

func TestValidatorNewKeyNeedsThePatchRightOnEveryTarget(t *testing.T) {
	targets := func(c *authv1alpha1.AgentCredential) {
		c.Spec.Rotation.RestartTargets = []authv1alpha1.RestartTarget{
			{Kind: authv1alpha1.DeploymentKind, Name: "payments"}, {Kind: authv1alpha1.StatefulSetKind, Name: "db"}}
		c.Spec.ExpiresAt = &metav1.Time{Time: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
		c.Spec.Rotation.Period = &metav1.Duration{Duration: 48 * time.Hour}
		c.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "1"}
	}
	rotatePath := "metadata.annotations[auth.agrenting.io/rotate]: Forbidden: this asks for a new key, which restarts every restart target, and mallory may not patch "
	tests := []struct {
		name   string
		before func(*authv1alpha1.AgentCredential) // of the old object
		change func(*authv1alpha1.AgentCredential)
		want   []string // error substrings; none: admitted without a review
	}{
		{"rotate annotation changed", nil, func(c *authv1alpha1.AgentCredential) { c.Annotations[authv1alpha1.RotateAnnotation] = "2" },
			[]string{rotatePath + `Deployment "payments" in namespace team-a (spec.rotation.restartTargets[0])`,
				rotatePath + `StatefulSet "db" in namespace team-a (spec.rotation.restartTargets[1])`}},
		{"rotate annotation added", func(c *authv1alpha1.AgentCredential) { c.Annotations = nil },
			func(c *authv1alpha1.AgentCredential) {
				c.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "1"}
			},
			[]string{rotatePath + `Deployment "payments"`}},
		{"rotate annotation removed", nil, func(c *authv1alpha1.AgentCredential) { delete(c.Annotations, authv1alpha1.RotateAnnotation) }, nil},
		{"other annotation", nil, func(c *authv1alpha1.AgentCredential) { c.Annotations["team"] = "pay" }, nil},
		{"expiry extended", nil, func(c *authv1alpha1.AgentCredential) { c.Spec.ExpiresAt.Time = c.Spec.ExpiresAt.AddDate(0, 1, 0) },
			[]string{"spec.expiresAt: Forbidden: this asks for a new key", "(spec.rotation.restartTargets[1])"}},
		{"expiry removed", nil, func(c *authv1alpha1.AgentCredential) { c.Spec.ExpiresAt = nil }, []string{"spec.expiresAt: Forbidden"}},
		{"expiry brought forward", nil, func(c *authv1alpha1.AgentCredential) { c.Spec.ExpiresAt.Time = c.Spec.ExpiresAt.AddDate(0, -1, 0) }, nil},
		{"period shortened", nil, func(c *authv1alpha1.AgentCredential) { c.Spec.Rotation.Period.Duration = time.Hour },
			[]string{"spec.rotation.period: Forbidden: this asks for a new key"}},
		{"period lengthened", nil, func(c *authv1alpha1.AgentCredential) { c.Spec.Rotation.Period.Duration = 72 * time.Hour }, nil},
		{"rotation and a new target", nil, func(c *authv1alpha1.AgentCredential) {
			c.Annotations[authv1alpha1.RotateAnnotation] = "2"
			c.Spec.Rotation.RestartTargets = append(c.Spec.Rotation.RestartTargets, authv1alpha1.RestartTarget{Kind: authv1alpha1.DaemonSetKind, Name: "agent"})
		}, []string{rotatePath + `Deployment "payments"`, `spec.rotation.restartTargets[2]: Forbidden: mallory may not patch DaemonSet "agent"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			old := apiKey("team-a", "c", agentX, targets)
			if tt.before != nil {
				tt.before(old)
			}
			cur := old.DeepCopy()
			tt.change(cur)
			for _, user := range []string{"mallory", "alice"} {
				var seen []authorizationv1.SubjectAccessReviewSpec
				v := fakeValidator(tenancy.FirstUse)
				v.Reviews = sarAllowing("alice", &seen)
				_, err := v.ValidateUpdate(reviewAs("team-a", user), old, cur)
				if len(tt.want) == 0 {
					g.Expect(err).NotTo(HaveOccurred())
					g.Expect(seen).To(BeEmpty(), "no new key, no review")
					continue
				}
				g.Expect(seen).To(HaveLen(len(cur.Spec.Rotation.RestartTargets)), "every target is reviewed")
				if user == "alice" {
					g.Expect(err).NotTo(HaveOccurred(), "one who may restart every target may ask for a new key")
					continue
				}
				g.Expect(err).To(HaveOccurred())
				for _, w := range tt.want {
					g.Expect(err.Error()).To(ContainSubstring(w))
				}
			}
		})
	}
	t.Run("no targets, no review", func(t *testing.T) {
		g := NewWithT(t)
		var seen []authorizationv1.SubjectAccessReviewSpec
		v := fakeValidator(tenancy.FirstUse)
		v.Reviews = sarAllowing("alice", &seen)
		old := apiKey("team-a", "c", agentX)
		cur := old.DeepCopy()
		cur.Annotations = map[string]string{authv1alpha1.RotateAnnotation: "now"}
		_, err := v.ValidateUpdate(reviewAs("team-a", "mallory"), old, cur)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(seen).To(BeEmpty())
	})
}
