package authserver

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/session"
)

// Source feeds the index and the session keyring from an informer on the
// operator namespace, limited to hash Secrets and the signing-key Secret. Its
// transform reduces each Secret to what verification needs before it is
// stored, so the informer never holds Secret data.
type Source struct {
	Client    kubernetes.Interface
	Namespace string
	Index     *Index
	Server    *Server
	Log       logr.Logger
}

// NeedLeaderElection is false: every replica keeps its own index.
func (src *Source) NeedLeaderElection() bool { return false }

// compactSecret is what the informer stores for each Secret.
type compactSecret struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	credential string
	entry      *Entry
	keyring    *session.Keyring
}

func (c *compactSecret) DeepCopyObject() runtime.Object {
	out := *c
	return &out
}

// compact keeps only the name, namespace and resourceVersion of a Secret and
// the parsed record or keyring; it drops the data and everything else.
func (src *Source) compact(obj interface{}) (interface{}, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	c := &compactSecret{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, ResourceVersion: s.ResourceVersion}}
	switch s.Labels[authv1alpha1.SecretRoleLabel] {
	case authv1alpha1.SecretRoleKeyHash:
		c.credential = s.Labels[authv1alpha1.CredentialNamespaceLabel] + "/" + s.Labels[authv1alpha1.CredentialLabel]
		rec, err := hashsecret.Parse(s.Data)
		switch {
		case err != nil:
			src.Log.Info("Ignored a damaged hash Secret", "secret", s.Name, "problem", err.Error())
		case rec.Credential != c.credential || s.Name != hashsecret.Name(s.Labels[authv1alpha1.CredentialNamespaceLabel], s.Labels[authv1alpha1.CredentialLabel]):
			src.Log.Info("Ignored a hash Secret whose name, labels and record disagree", "secret", s.Name)
		default:
			c.entry = EntryFromRecord(rec)
		}
	case authv1alpha1.SecretRoleSessionKeys:
		ring, err := session.ParseKeyring(s.Data)
		if err != nil {
			src.Log.Info("Ignored a damaged session key Secret", "secret", s.Name, "problem", err.Error())
		}
		c.keyring = ring
	}
	return c, nil
}

func (src *Source) apply(obj interface{}) {
	c, ok := obj.(*compactSecret)
	if !ok {
		return
	}
	switch {
	case c.entry != nil:
		src.Index.Put(c.entry)
	case c.credential != "":
		// Damaged: its key stops verifying until the controller rewrites it.
		src.Index.Remove(c.credential)
	case c.Name == session.SecretName && c.keyring != nil:
		src.Server.SetKeyring(c.keyring)
	}
}

func (src *Source) remove(obj interface{}) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	c, ok := obj.(*compactSecret)
	if !ok {
		return
	}
	if c.credential != "" {
		src.Index.Remove(c.credential)
	}
	if c.Name == session.SecretName {
		src.Server.SetKeyring(nil)
	}
}

// Start runs the informer until ctx is done and marks the index synced once
// it has listed every Secret.
func (src *Source) Start(ctx context.Context) error {
	selector := fmt.Sprintf("%s=%s,%s in (%s,%s)", authv1alpha1.ManagedByLabel, authv1alpha1.ManagedByValue,
		authv1alpha1.SecretRoleLabel, authv1alpha1.SecretRoleKeyHash, authv1alpha1.SecretRoleSessionKeys)
	lw := toolscache.NewFilteredListWatchFromClient(src.Client.CoreV1().RESTClient(), "secrets", src.Namespace,
		func(o *metav1.ListOptions) { o.LabelSelector = selector })
	inf := toolscache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, toolscache.Indexers{})
	if err := inf.SetTransform(src.compact); err != nil {
		return err
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    src.apply,
		UpdateFunc: func(_, obj interface{}) { src.apply(obj) },
		DeleteFunc: src.remove,
	})
	if err != nil {
		return err
	}
	go inf.Run(ctx.Done())
	if !toolscache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return ctx.Err()
	}
	src.Index.MarkSynced()
	src.Log.Info("Synced the hash index", "credentials", src.Index.Len())
	<-ctx.Done()
	return nil
}

// AddToManager adds the auth endpoint and the informer that feeds its index
// to mgr; both run on every replica, leader or not. The index is returned
// for readiness checks.
func AddToManager(mgr manager.Manager, client kubernetes.Interface, namespace string, opts Options) (*Index, error) {
	index := NewIndex()
	server, err := New(index, opts)
	if err != nil {
		return nil, err
	}
	source := &Source{Client: client, Namespace: namespace, Index: index, Server: server, Log: opts.Log.WithName("index")}
	if err := mgr.Add(source); err != nil {
		return nil, err
	}
	if err := mgr.Add(server); err != nil {
		return nil, err
	}
	if opts.GRPC != nil {
		if err := mgr.Add(server.GRPC(*opts.GRPC)); err != nil {
			return nil, err
		}
	}
	return index, nil
}
