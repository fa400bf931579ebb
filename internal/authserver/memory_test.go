package authserver

import (
	"fmt"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
)

// hashSecretFor builds the hash Secret the controller would write for one
// API key credential, as the informer delivers it.
func hashSecretFor(i int) *corev1.Secret {
	ns, name := fmt.Sprintf("team-%d", i%200), fmt.Sprintf("agent-%d", i)
	key, _ := credential.Generate(credential.APIKey)
	rec := &hashsecret.Record{
		Credential: ns + "/" + name, UID: fmt.Sprintf("uid-%d", i), Type: "APIKey",
		AgentIDs: []string{fmt.Sprintf("aaaaaaaa-0000-4000-8000-%012d", i)},
		Current:  hashsecret.Entry{Digest: credential.DigestOf(key)},
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "agentcred-system", Name: hashsecret.Name(ns, name), ResourceVersion: fmt.Sprint(i),
			Labels: map[string]string{
				authv1alpha1.ManagedByLabel: authv1alpha1.ManagedByValue, authv1alpha1.SecretRoleLabel: authv1alpha1.SecretRoleKeyHash,
				authv1alpha1.CredentialLabel: name, authv1alpha1.CredentialNamespaceLabel: ns,
			},
		},
		Data: rec.Data(),
	}
}

// BenchmarkIndexMemory reports the heap the auth endpoint keeps per indexed
// credential: what the informer stores after the compacting transform plus
// the index entry, with the Secrets themselves garbage.
func BenchmarkIndexMemory(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("credentials=%d", n), func(b *testing.B) {
			for b.Loop() {
				src := &Source{Index: NewIndex()}
				// The same kind of store the informer keeps its objects in.
				store := toolscache.NewStore(toolscache.DeletionHandlingMetaNamespaceKeyFunc)
				before := heapInUse()
				for i := range n {
					c, _ := src.compact(hashSecretFor(i))
					src.apply(c)
					if err := store.Add(c); err != nil {
						b.Fatal(err)
					}
				}
				after := heapInUse()
				b.ReportMetric(float64(after-before)/float64(n), "heap-bytes/credential")
				runtime.KeepAlive(store)
				runtime.KeepAlive(src)
			}
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
