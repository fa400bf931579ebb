// Package cli is `kubectl agentcred`: the things people do by hand with
// AgentCredentials — rotate one, read its status, print its key for a shell,
// and check a key against the auth endpoint.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
)

const usage = `kubectl agentcred: manage agentcred AgentCredentials by hand.

Usage:
  kubectl agentcred rotate NAME   rotate now; the old key is revoked at once
  kubectl agentcred status NAME   key ID, rotation times and conditions
  kubectl agentcred key NAME      print the key from the agent Secret (for KEY=$(...))
  kubectl agentcred check [NAME]  verify a key against the auth endpoint and print the identity
                                  (the key of NAME, or --key, or the AGENTCRED_KEY variable)

Flags (every command):
  -n, --namespace NS    namespace (default: the kubeconfig context's)
  --kubeconfig PATH     kubeconfig (default: $KUBECONFIG or ~/.kube/config)
  --context NAME        kubeconfig context
check only:
  --url URL             auth endpoint (default http://127.0.0.1:8082)
  --key KEY             key to check instead of NAME's
  --agent-id UUID       send X-Agent-ID (user tokens acting for several agents)
`

// Main runs the CLI with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("kubectl agentcred "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var namespace, kubeconfig, kubecontext, url, key, agentID string
	fs.StringVar(&namespace, "namespace", "", "namespace")
	fs.StringVar(&namespace, "n", "", "namespace")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig")
	fs.StringVar(&kubecontext, "context", "", "kubeconfig context")
	fs.StringVar(&url, "url", "http://127.0.0.1:8082", "auth endpoint")
	fs.StringVar(&key, "key", os.Getenv("AGENTCRED_KEY"), "key to check")
	fs.StringVar(&agentID, "agent-id", "", "X-Agent-ID")
	if err := fs.Parse(interleave(rest)); err != nil {
		return 2
	}
	name := fs.Arg(0)
	needsName := cmd != "check" || key == ""
	if needsName && name == "" {
		fmt.Fprintf(stderr, "kubectl agentcred %s: NAME is required\n\n%s", cmd, usage)
		return 2
	}
	var c *session
	if needsName {
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
	case "check":
		if key == "" {
			if key, err = c.key(ctx, name); err != nil {
				break
			}
		}
		err = check(ctx, url, key, agentID, stdout)
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
	row("Rotations", fmt.Sprint(st.RotationCount))
	row("Rotation period", cred.RotationPeriod().String())
	for _, c := range st.Conditions {
		row("Condition "+c.Type, fmt.Sprintf("%s (%s): %s", c.Status, c.Reason, c.Message))
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
	field := "api-key"
	if cred.CredentialType() == authv1alpha1.UserTokenType {
		field = "token"
	}
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
func check(ctx context.Context, url, key, agentID string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/auth/verify", nil)
	if err != nil {
		return err
	}
	if strings.HasPrefix(key, "ak_") {
		req.Header.Set("X-API-Key", key)
	} else {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if agentID != "" {
		req.Header.Set("X-Agent-ID", agentID)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
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
	for _, h := range []string{"X-Auth-Agent-ID", "X-Auth-Method", "X-Auth-Key-ID", "X-Auth-Credential", "X-Auth-User"} {
		if v := resp.Header.Get(h); v != "" {
			fmt.Fprintf(w, "%s:\t%s\n", strings.TrimPrefix(h, "X-Auth-"), v)
		}
	}
	return w.Flush()
}
