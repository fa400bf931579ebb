package controllers

import (
	"context"
	"fmt"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/agrenting/agentcred/api/v1alpha1"
	"github.com/agrenting/agentcred/internal/session"
)

// SessionKeyRotator keeps the session signing keys in the operator
// namespace: it creates the keyring, adds a key every Every and drops keys
// once no token they signed can still be valid. It runs on the leader only.
type SessionKeyRotator struct {
	Client    client.Client
	APIReader client.Reader
	Namespace string
	Clock     clock.Clock
	// Every is how often a new signing key takes over.
	Every time.Duration
	// MaxTTL is the longest a session can live.
	MaxTTL time.Duration
	Log    logr.Logger
	// Informers, if set, wake the rotator when the signing-key Secret
	// changes or is deleted, so a deleted keyring is rewritten within
	// seconds instead of at the next poll (Every/4).
	Informers cache.Informers
}

// NeedLeaderElection is true: one writer.
func (r *SessionKeyRotator) NeedLeaderElection() bool { return true }

// Start rotates at once, then whenever the newest key is due or the
// signing-key Secret changes, until ctx ends.
func (r *SessionKeyRotator) Start(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	if r.Informers != nil {
		stop, err := r.watchKeyring(ctx, wake)
		if err != nil {
			return err
		}
		defer stop()
	}
	repeat(ctx, r.Clock, r.Every/4, wake, r.Log, "Failed to rotate session signing keys", r.RotateOnce)
	return nil
}

// repeat runs once at once, then again every every (10 s after a failure,
// which it logs as failed), and whenever wake fires (nil: never), until
// ctx ends.
func repeat(ctx context.Context, clk clock.Clock, every time.Duration, wake <-chan struct{}, log logr.Logger, failed string, once func(context.Context) error) {
	for {
		wait := every
		if err := once(ctx); err != nil {
			log.Error(err, failed)
			wait = 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-clk.After(wait):
		case <-wake:
		}
	}
}

// watchKeyring signals wake on every event of the signing-key Secret.
func (r *SessionKeyRotator) watchKeyring(ctx context.Context, wake chan<- struct{}) (func(), error) {
	inf, err := r.Informers.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return nil, fmt.Errorf("watching the session signing-key Secret: %w", err)
	}
	signal := func(obj interface{}) {
		if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if s, ok := obj.(*corev1.Secret); ok && s.Namespace == r.Namespace && s.Name == session.SecretName {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj interface{}) { signal(obj) },
		DeleteFunc: signal,
	})
	if err != nil {
		return nil, err
	}
	return func() { _ = inf.RemoveEventHandler(reg) }, nil
}

// RotateOnce brings the signing-key Secret up to date.
func (r *SessionKeyRotator) RotateOnce(ctx context.Context) error {
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: session.SecretName}, s)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	var ring *session.Keyring
	if exists {
		if ring, err = session.ParseKeyring(s.Data); err != nil {
			r.Log.Info("Replacing a damaged session keyring; existing sessions end", "problem", err.Error())
		}
	}
	next, changed, err := session.Rotate(ring, r.Clock.Now(), r.Every, r.MaxTTL)
	if err != nil || !changed {
		return err
	}
	s.Namespace, s.Name = r.Namespace, session.SecretName
	s.Labels = map[string]string{
		authv1alpha1.ManagedByLabel:  authv1alpha1.ManagedByValue,
		authv1alpha1.SecretRoleLabel: authv1alpha1.SecretRoleSessionKeys,
	}
	s.Type = corev1.SecretTypeOpaque
	s.Data = next.Data()
	if exists {
		err = r.Client.Update(ctx, s)
	} else {
		s.ObjectMeta = metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, Labels: s.Labels}
		err = r.Client.Create(ctx, s)
	}
	if err != nil {
		return fmt.Errorf("writing session signing keys: %w", err)
	}
	ids := make([]string, 0, len(next.Keys))
	for _, k := range next.Keys {
		ids = append(ids, k.ID)
	}
	r.Log.Info("Rotated session signing keys", "keyIDs", ids)
	return nil
}
