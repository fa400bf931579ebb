// Package cli is `kubectl agentcred`: the things people do by hand with
// AgentCredentials — rotate one, read its status, print its key for a shell,
// check a key against the auth endpoint — and listing the IdentityClaims that
// bind agent IDs and users to namespaces.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/identityindex"
	"github.com/agrenting/agentcred/internal/tenancy"
)

const usage = `kubectl agentcred: manage agentcred AgentCredentials by hand.

Usage:
  kubectl agentcred rotate NAME   rotate now; the old key is revoked at once
  kubectl agentcred status NAME   key ID, rotation times, conditions and the claims on its identities
  kubectl agentcred key NAME      print the key from the agent Secret (for KEY=$(...))
  kubectl agentcred check [NAME]  verify a key against the auth endpoint and print the identity
                                  (the key of NAME, or --key, or the AGENTCRED_KEY variable)
  kubectl agentcred claims        list IdentityClaims: which namespace holds which agent ID or user
                                  (all of them; with -n, only those of that namespace)
  kubectl agentcred claim-name agent|user VALUE
                                  print the IdentityClaim name agentcred uses for an agent ID or a
                                  user (users are compared NFKC case-folded), for admins making claims

Flags (every command):
  -n, --namespace NS    namespace (default: the kubeconfig context's; for claims: every namespace)
  --kubeconfig PATH     kubeconfig (default: $KUBECONFIG or ~/.kube/config)
  --context NAME        kubeconfig context
check only:
  --url URL             auth endpoint (default http://127.0.0.1:8082)
  --key KEY             key to check instead of NAME's
  --agent-id UUID       send X-Agent-ID (user tokens acting for several agents)
  --ca-file PATH        trust this CA (PEM) for an https:// --url, besides the system's
`

// Main runs the CLI with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, rest := args[0], args[1:]
	if cmd == "claim-name" {
		return claimName(rest, stdout, stderr)
	}
	fs := flag.NewFlagSet("kubectl agentcred "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var namespace, kubeconfig, kubecontext, url, key, agentID, caFile string
	fs.StringVar(&namespace, "namespace", "", "namespace")
	fs.StringVar(&namespace, "n", "", "namespace")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig")
	fs.StringVar(&kubecontext, "context", "", "kubeconfig context")
	fs.StringVar(&url, "url", "http://127.0.0.1:8082", "auth endpoint")
	fs.StringVar(&key, "key", os.Getenv("AGENTCRED_KEY"), "key to check")
	fs.StringVar(&agentID, "agent-id", "", "X-Agent-ID")
	fs.StringVar(&caFile, "ca-file", "", "CA bundle (PEM) for an https auth endpoint")
	if err := fs.Parse(interleave(rest)); err != nil {
		return 2
	}
	name := fs.Arg(0)
	needsName := cmd != "claims" && (cmd != "check" || key == "")
	if needsName && name == "" {
		fmt.Fprintf(stderr, "kubectl agentcred %s: NAME is required\n\n%s", cmd, usage)
		return 2
	}
	if cmd == "claims" && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kubectl agentcred claims takes no NAME\n\n%s", usage)
		return 2
	}
	// The namespace as given on the command line, before connect falls
	// back to the context's: claims lists every namespace unless told.
	explicitNamespace := namespace
	var c *session
	if needsName || cmd == "claims" {
		var err error
		if c, err = connect(kubeconfig, kubecontext, namespace); err != nil {
			fmt.Fprintln(stderr, "error:", err)
			return 1
		}
	}
	var err error
	switch cmd {
	case "rotate":
		err = c.rotate(ctx, name, stdout)
	case "status":
		err = c.status(ctx, name, stdout)
	case "key":
		err = c.printKey(ctx, name, stdout)
	case "claims":
		err = c.claims(ctx, explicitNamespace, stdout)
	case "check":
		if key == "" {
			if key, err = c.key(ctx, name); err != nil {
				break
			}
		}
		var client *http.Client
		if client, err = httpClient(caFile); err == nil {
			err = check(ctx, client, url, key, agentID, stdout)
		}
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

// claimName prints the claim name of an identity: no cluster needed.
func claimName(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || (args[0] != "agent" && args[0] != "user") || args[1] == "" {
		fmt.Fprintf(stderr, "usage: kubectl agentcred claim-name agent|user VALUE\n")
		return 2
	}
	id := tenancy.Agent(args[1])
	if args[0] == "user" {
		id = tenancy.User(args[1])
	}
	fmt.Fprintln(stdout, tenancy.ClaimName(id))
	return 0
}

// interleave moves flags before positional arguments, so that both
// "status NAME -n ns" and "status -n ns NAME" work as with kubectl.
func interleave(args []string) []string {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		positional = append(positional, a)
	}
	return append(flags, positional...)
}

type session struct {
	client    client.Client
	namespace string
}

func connect(kubeconfig, kubecontext, namespace string) (*session, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubecontext})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, err
	}
	if namespace == "" {
		if namespace, _, err = loader.Namespace(); err != nil {
			return nil, err
		}
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := authv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &session{client: c, namespace: namespace}, nil
}

func (s *session) get(ctx context.Context, name string) (*authv1alpha1.AgentCredential, error) {
	cred := &authv1alpha1.AgentCredential{}
	err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: name}, cred)
	return cred, err
}

func (s *session) rotate(ctx context.Context, name string, out io.Writer) error {
	cred, err := s.get(ctx, name)
	if err != nil {
		return err
	}
	value := time.Now().UTC().Format(time.RFC3339Nano)
	patch := client.MergeFrom(cred.DeepCopy())
	if cred.Annotations == nil {
		cred.Annotations = map[string]string{}
	}
	cred.Annotations[authv1alpha1.RotateAnnotation] = value
	if err := s.client.Patch(ctx, cred, patch); err != nil {
		return err
	}
	fmt.Fprintf(out, "Rotation of %s/%s requested (%s=%s); the old key %s is revoked once the new key is issued.\n",
		s.namespace, name, authv1alpha1.RotateAnnotation, value, cred.Status.KeyID)
	return nil
}

func (s *session) status(ctx context.Context, name string, out io.Writer) error {
	cred, err := s.get(ctx, name)
	if err != nil {
		return err
	}
	st := cred.Status
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, v) }
	row("Name", s.namespace+"/"+name)
	row("Type", string(cred.CredentialType()))
	row("Environment", string(cred.Environment()))
	if cred.CredentialType() == authv1alpha1.UserTokenType {
		row("User", cred.Spec.User)
		row("Agents", strings.Join(cred.Spec.Agents, ", "))
	} else {
		row("Agent", cred.Spec.AgentID)
	}
	row("Secret", cred.SecretName())
	row("Key ID", st.KeyID)
	if st.PreviousKeyID != "" && st.PreviousKeyExpiresAt != nil {
		row("Previous key ID", fmt.Sprintf("%s (valid until %s)", st.PreviousKeyID, st.PreviousKeyExpiresAt.UTC().Format(time.RFC3339)))
	}
	if st.LastRotationTime != nil {
		row("Last rotation", st.LastRotationTime.UTC().Format(time.RFC3339))
	}
	if st.NextRotationTime != nil {
		row("Next rotation", st.NextRotationTime.UTC().Format(time.RFC3339))
	}
	if exp := cred.Spec.ExpiresAt; exp != nil {
		row("Expires", exp.UTC().Format(time.RFC3339))
	}
	row("Rotations", fmt.Sprint(st.RotationCount))
	row("Rotation period", cred.RotationPeriod().String())
	for _, t := range restartTargetRows(cred) {
		row("Restart target", t)
	}
	for _, c := range st.Conditions {
		row("Condition "+c.Type, fmt.Sprintf("%s (%s): %s", c.Status, c.Reason, c.Message))
	}
	if err := s.printCredentialClaims(ctx, cred, w); err != nil {
		return err
	}
	return w.Flush()
}

// restartTargetRows describes each restart target with its rollout state
// ("Pending" until the controller reported one).
func restartTargetRows(cred *authv1alpha1.AgentCredential) []string {
	states := map[authv1alpha1.RestartTarget]authv1alpha1.RestartTargetStatus{}
	for _, s := range cred.Status.RestartTargets {
		states[authv1alpha1.RestartTarget{Kind: s.Kind, Name: s.Name}] = s
	}
	rows := make([]string, 0, len(cred.Spec.Rotation.RestartTargets))
	for _, t := range cred.Spec.Rotation.RestartTargets {
		s, ok := states[t]
		switch {
		case !ok:
			rows = append(rows, t.String()+": Pending")
		case s.Message != "":
			rows = append(rows, fmt.Sprintf("%s: %s (%s)", t, s.State, s.Message))
		default:
			rows = append(rows, fmt.Sprintf("%s: %s", t, s.State))
		}
	}
	return rows
}

// printCredentialClaims adds to a status the claim on each identity cred
// names. Tenants usually may not read IdentityClaims (they are cluster-scoped
// and only cluster admins should have rights on them): then it says so
// instead of failing the whole status.
func (s *session) printCredentialClaims(ctx context.Context, cred *authv1alpha1.AgentCredential, w io.Writer) error {
	ids := identityindex.Identities(cred)
	claims, err := s.claimsOf(ctx, ids)
	switch {
	case apierrors.IsForbidden(err):
		_, err = fmt.Fprintf(w, "Claims:\tnot readable with your permissions\n")
		return err
	case meta.IsNoMatchError(err):
		_, err = fmt.Fprintf(w, "Claims:\tthe IdentityClaim CRD is not installed\n")
		return err
	case err != nil:
		return err
	}
	return printIdentityClaims(w, cred.Namespace, ids, claims)
}

// claimsOf reads the IdentityClaim of each identity, by name; identities
// without a claim are missing from the map.
func (s *session) claimsOf(ctx context.Context, ids []tenancy.Identity) (map[string]*authv1alpha1.IdentityClaim, error) {
	claims := map[string]*authv1alpha1.IdentityClaim{}
	for _, id := range ids {
		name := tenancy.ClaimName(id)
		claim := &authv1alpha1.IdentityClaim{}
		err := s.client.Get(ctx, client.ObjectKey{Name: name}, claim)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("reading IdentityClaim %s: %w", name, err)
		}
		claims[name] = claim
	}
	return claims, nil
}

// printIdentityClaims writes one "Claim NAME:" row per identity, saying
// whether its claim binds it to namespace (the credential's), to another
// namespace — never which: a tenant must not learn who holds an identity —
// or to nobody yet. claims maps claim names to the claims that exist.
func printIdentityClaims(w io.Writer, namespace string, ids []tenancy.Identity, claims map[string]*authv1alpha1.IdentityClaim) error {
	for _, id := range ids {
		name := tenancy.ClaimName(id)
		var spec *authv1alpha1.IdentityClaimSpec
		if c, ok := claims[name]; ok {
			spec = &c.Spec
		}
		if _, err := fmt.Fprintf(w, "Claim %s:\t%s %s -> %s\n", name, id.Kind, id.Value, holder(spec, id, namespace)); err != nil {
			return err
		}
	}
	return nil
}

// holder says, for a credential in namespace, what the claim spec (nil:
// none) on id means, in the words of printIdentityClaims.
func holder(spec *authv1alpha1.IdentityClaimSpec, id tenancy.Identity, namespace string) string {
	switch tenancy.HoldingOf(spec, id, namespace) {
	case tenancy.Ours:
		return "this namespace"
	case tenancy.Unclaimed:
		return "not claimed"
	}
	if spec.Namespace == namespace {
		// A hand-made claim named for this identity but describing
		// another: it grants nothing.
		return "a claim that does not match this identity (grants nothing)"
	}
	return "another namespace"
}

// claims lists the IdentityClaims, only those binding identities to
// namespace when it is not empty.
func (s *session) claims(ctx context.Context, namespace string, out io.Writer) error {
	list := &authv1alpha1.IdentityClaimList{}
	if err := s.client.List(ctx, list); err != nil {
		if apierrors.IsForbidden(err) {
			return fmt.Errorf("listing IdentityClaims (cluster-scoped; reading them takes list rights that cluster admins have): %w", err)
		}
		return fmt.Errorf("listing IdentityClaims: %w", err)
	}
	items := list.Items
	if namespace != "" {
		items = slices.DeleteFunc(items, func(c authv1alpha1.IdentityClaim) bool { return c.Spec.Namespace != namespace })
	}
	return printClaimTable(out, items)
}

// printClaimTable writes claims as a table sorted by name: NAME, KIND,
// VALUE, NAMESPACE, IN USE BY (the credentials in that namespace that use
// the identity) and LAST USED; or a sentence when there are none.
func printClaimTable(out io.Writer, claims []authv1alpha1.IdentityClaim) error {
	if len(claims) == 0 {
		_, err := fmt.Fprintln(out, "No IdentityClaims found.")
		return err
	}
	sorted := slices.Clone(claims)
	slices.SortFunc(sorted, func(a, b authv1alpha1.IdentityClaim) int { return strings.Compare(a.Name, b.Name) })
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tVALUE\tNAMESPACE\tIN USE BY\tLAST USED")
	for _, c := range sorted {
		inUse, lastUsed := "-", "-"
		if len(c.Status.Credentials) > 0 {
			inUse = strings.Join(c.Status.Credentials, ",")
		}
		if t := c.Status.LastUsedTime; t != nil {
			lastUsed = t.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Spec.Kind, c.Spec.Value, c.Spec.Namespace, inUse, lastUsed)
	}
	return w.Flush()
}

func (s *session) key(ctx context.Context, name string) (string, error) {
	cred, err := s.get(ctx, name)
	if err != nil {
		return "", err
	}
	secret := &corev1.Secret{}
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: cred.SecretName()}, secret); err != nil {
		return "", err
	}
	field := authv1alpha1.AgentSecretKeyField(cred.CredentialType())
	key, ok := secret.Data[field]
	if !ok {
		return "", fmt.Errorf("Secret %s has no %s yet; is the credential Ready?", cred.SecretName(), field) //nolint:staticcheck // names a Kubernetes kind
	}
	return string(key), nil
}

func (s *session) printKey(ctx context.Context, name string, out io.Writer) error {
	key, err := s.key(ctx, name)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, key)
	return err
}

// check calls /auth/verify with key and prints the identity it answers.
// httpClient is the client of check: the system's roots, plus caFile's.
func httpClient(caFile string) (*http.Client, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	if caFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(caFile) //nolint:gosec // a file the user names
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", caFile)
	}
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return c, nil
}

func check(ctx context.Context, client *http.Client, url, key, agentID string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/auth/verify", nil)
	if err != nil {
		return err
	}
	if credential.KindOf(key) == credential.APIKey {
		req.Header.Set("X-API-Key", key)
	} else {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if agentID != "" {
		req.Header.Set("X-Agent-ID", agentID)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status + ": " + strings.TrimSpace(string(body)))
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Valid:\tyes\n")
	for _, h := range []string{"X-Auth-Agent-ID", "X-Auth-Method", "X-Auth-Key-ID", "X-Auth-Credential", "X-Auth-User", "X-Auth-Environment"} {
		if v := resp.Header.Get(h); v != "" {
			fmt.Fprintf(w, "%s:\t%s\n", strings.TrimPrefix(h, "X-Auth-"), v)
		}
	}
	return w.Flush()
}
