package authserver

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agrenting/agentcred/internal/credential"
)

// Names agentcred gives identities in Kubernetes TokenReviews.
const (
	// UsernamePrefixAgent + agent UUID is an agent's Kubernetes username.
	UsernamePrefixAgent = "agentcred:agent:"
	// UsernamePrefixUser + user is a user token's Kubernetes username.
	UsernamePrefixUser = "agentcred:user:"
	GroupAgents        = "agentcred:agents"
	GroupUsers         = "agentcred:users"
	// GroupNamespacePrefix + namespace: the namespace of the AgentCredential.
	GroupNamespacePrefix = "agentcred:namespace:"
	// GroupEnvironmentPrefix + live|sandbox: the credential's environment,
	// so RBAC can bind sandbox agents to less.
	GroupEnvironmentPrefix = "agentcred:environment:"
	ExtraKeyID             = "auth.agrenting.io/key-id"
	ExtraCredential        = "auth.agrenting.io/credential"
	ExtraAgentIDs          = "auth.agrenting.io/agent-ids"
	ExtraMethod            = "auth.agrenting.io/method"
)

const maxTokenReviewBody = 64 << 10

// ErrInvalidTokenReview: the body is not an authentication.k8s.io/v1 TokenReview.
var ErrInvalidTokenReview = &Error{http.StatusBadRequest, "invalid_request", "expected an authentication.k8s.io/v1 TokenReview"}

// handleTokenReview implements Kubernetes webhook token authentication
// (authentication.k8s.io/v1), so kube-apiserver can authenticate agents by
// their keys. A guessed token drains the caller's failure budget like a
// guess at /auth/verify (a pod probing keys through /tokenreview spends the
// same budget), but a review is always answered 200: past the budget it is
// unauthenticated with the throttling message, never 429, which
// kube-apiserver would retry (about five calls per token). Valid tokens are
// never throttled.
func (s *Server) handleTokenReview(w http.ResponseWriter, r *http.Request) outcome {
	var review authnv1.TokenReview
	body, err := io.ReadAll(io.LimitReader(r.Body, maxTokenReviewBody+1))
	if err != nil || len(body) > maxTokenReviewBody || json.Unmarshal(body, &review) != nil ||
		review.APIVersion != authnv1.SchemeGroupVersion.String() || review.Kind != "TokenReview" {
		return s.writeError(w, ErrInvalidTokenReview)
	}
	out := authnv1.TokenReview{
		TypeMeta:   metav1.TypeMeta{APIVersion: authnv1.SchemeGroupVersion.String(), Kind: "TokenReview"},
		ObjectMeta: metav1.ObjectMeta{UID: review.UID},
	}
	now := s.opts.Clock.Now()
	token := strings.TrimSpace(review.Spec.Token)
	id, verr := s.verifier.VerifyToken(token, now)
	method, env := MethodNone, credential.Live
	if verr != nil {
		verr, _ = s.throttle(verr, ClientAddress(r, s.opts.TrustedProxies), now)
		out.Status.Error = verr.Message
	} else {
		method, env = id.Method, id.Entry.Environment
		auds, ok := vouchedAudiences(review.Spec.Audiences, s.opts.TokenReviewAudiences)
		if ok {
			out.Status.Authenticated = true
			out.Status.User = userInfo(id)
			out.Status.Audiences = auds
		} else {
			method = MethodNone
			out.Status.Error = "agentcred vouches only for the audiences in --tokenreview-audiences"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
	return outcome{method: method, status: http.StatusOK, environment: env, attempted: methodOf(credential.KindOf(token))}
}

// vouchedAudiences decides which of the audiences a review asks for
// agentcred vouches for: none asked means the caller's own (kube-apiserver's
// implicit audience), answered with no audiences; otherwise only those also
// in allowed, and a review none of whose audiences is allowed is not
// authenticated — a key is not a token for every service that asks.
func vouchedAudiences(asked, allowed []string) ([]string, bool) {
	if len(asked) == 0 {
		return nil, true
	}
	var out []string
	for _, a := range asked {
		if slices.Contains(allowed, a) {
			out = append(out, a)
		}
	}
	return out, len(out) > 0
}

func userInfo(id Identity) authnv1.UserInfo {
	ns, _, _ := strings.Cut(id.Credential, "/")
	extra := map[string]authnv1.ExtraValue{
		ExtraKeyID:      {id.KeyID},
		ExtraCredential: {id.Credential},
		ExtraMethod:     {string(id.Method)},
	}
	if id.Method == MethodUserToken {
		extra[ExtraAgentIDs] = append(authnv1.ExtraValue{}, id.Entry.AgentIDs...)
		return authnv1.UserInfo{
			Username: UsernamePrefixUser + id.User,
			Groups:   []string{GroupUsers, GroupNamespacePrefix + ns, GroupEnvironmentPrefix + id.Entry.Environment.String()},
			Extra:    extra,
		}
	}
	return authnv1.UserInfo{
		Username: UsernamePrefixAgent + id.AgentID,
		UID:      id.AgentID,
		Groups:   []string{GroupAgents, GroupNamespacePrefix + ns, GroupEnvironmentPrefix + id.Entry.Environment.String()},
		Extra:    extra,
	}
}

// VerifyToken verifies a bare bearer token, as a TokenReview carries it. A
// user token for several agents authenticates as its user, with no agent.
func (v *Verifier) VerifyToken(token string, now time.Time) (Identity, *Error) {
	if token == "" {
		return Identity{}, ErrMissingCredentials
	}
	kind := credential.KindOf(token)
	switch kind {
	case credential.APIKey:
		return v.verifyKey(token, kind, "", now)
	case credential.UserToken:
		id, err := v.verifyKey(token, kind, "", now)
		if err == ErrAgentIDRequired {
			return v.verifyKeyAnyAgent(token, now)
		}
		return id, err
	case credential.Session:
		return v.verifySession(token, "", now)
	default:
		return Identity{}, ErrInvalidCredentials
	}
}

func (v *Verifier) verifyKeyAnyAgent(token string, now time.Time) (Identity, *Error) {
	digest := credential.DigestOf(token)
	e, ok := v.Index.Lookup(digest, now)
	if !ok {
		return Identity{}, ErrInvalidCredentials
	}
	return Identity{Method: MethodUserToken, KeyID: digest.KeyID(), Credential: e.Credential, User: e.User, Entry: e}, nil
}
