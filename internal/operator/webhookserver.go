package operator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/agrenting/agentcred/internal/listener"
)

// The admission webhook's bounds. Its one legitimate caller is
// kube-apiserver (a few addresses, HTTP/2, a few connections), but any pod
// can reach its Service, so it is bounded like every listener: a pod cannot
// make the manager — controller and webhook in one process — hold more than
// webhookMaxRequests × webhookMaxBody of requests, nor take the slots
// kube-apiserver needs.
const (
	webhookMaxConnections = 256
	// webhookMaxRequests bounds the reviews in flight, shared per source
	// like connections.
	webhookMaxRequests = 32
	// webhookMaxBody bounds an AdmissionReview: an AgentCredential and its
	// old version, whose spec the schema bounds, with at most 256 KiB of
	// annotations each.
	webhookMaxBody = 2 << 20
	// webhookMaxStreams bounds HTTP/2 streams per connection.
	webhookMaxStreams = 16
)

// webhookServer serves the admission webhook on a listener from
// internal/listener. Webhooks register with controller-runtime's own server
// (which instruments them), built with its listener off; this serves that
// server's mux, with the same certificate handling (a watched CertDir, or
// TLSOpts that set GetCertificate) and client authentication (TLSOpts).
type webhookServer struct {
	ctrlwebhook.Server
	opts ctrlwebhook.Options
	// Listener, if set, is served instead of listening on opts' address
	// (tests).
	Listener net.Listener

	requests *listener.Slots
	observer listener.Observer

	mu      sync.Mutex
	started bool
	addr    string
}

func newWebhookServer(opts ctrlwebhook.Options, observer listener.Observer) *webhookServer {
	if opts.Port == 0 {
		opts.Port = 9443
	}
	if opts.CertDir == "" {
		opts.CertDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
	}
	if opts.CertName == "" {
		opts.CertName = "tls.crt"
	}
	if opts.KeyName == "" {
		opts.KeyName = "tls.key"
	}
	inner := opts
	inner.Port = -1 // registration and instrumentation only: we serve its mux
	return &webhookServer{
		Server: ctrlwebhook.NewServer(inner), opts: opts, observer: observer,
		requests: listener.NewSlots(listener.Limits{Name: "webhook_requests", Max: webhookMaxRequests}),
	}
}

// Start serves until ctx is done.
func (s *webhookServer) Start(ctx context.Context) error {
	if s.opts.Port < 0 {
		return nil
	}
	cfg := &tls.Config{NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	for _, op := range s.opts.TLSOpts {
		op(cfg)
	}
	if cfg.GetCertificate == nil {
		watcher, err := certwatcher.New(filepath.Join(s.opts.CertDir, s.opts.CertName), filepath.Join(s.opts.CertDir, s.opts.KeyName))
		if err != nil {
			return err
		}
		cfg.GetCertificate = watcher.GetCertificate
		go func() {
			if err := watcher.Start(ctx); err != nil {
				ctrl.Log.WithName("webhook").Error(err, "Stopped watching the webhook certificate")
			}
		}()
	}
	ln := s.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort(s.opts.Host, strconv.Itoa(s.opts.Port))); err != nil {
			return err
		}
	}
	bounded := listener.Wrap(ln, listener.Limits{Name: "webhook", Max: webhookMaxConnections}, s.observer)
	srv := &http.Server{
		Handler:           s.bound(s.WebhookMux()),
		ReadHeaderTimeout: 5 * time.Second,
		// kube-apiserver waits at most 30 s for a webhook.
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    90 * time.Second,
		MaxHeaderBytes: 64 << 10,
		HTTP2:          &http.HTTP2Config{MaxConcurrentStreams: webhookMaxStreams},
		TLSConfig:      cfg,
	}
	s.mu.Lock()
	s.started, s.addr = true, bounded.Addr().String()
	s.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(bounded, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			return err
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// bound refuses a review past the requests in flight (429, which
// kube-apiserver answers per the webhook's failurePolicy) and caps its body.
func (s *webhookServer) bound(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var addr netip.Addr
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = ap.Addr()
		}
		slot, reason := s.requests.Take(addr, nil)
		if reason != "" {
			if s.observer != nil {
				s.observer.Refused("webhook_requests", reason)
			}
			http.Error(w, "too many admission reviews in flight", http.StatusTooManyRequests)
			return
		}
		defer s.requests.Release(slot)
		r.Body = http.MaxBytesReader(w, r.Body, webhookMaxBody)
		h.ServeHTTP(w, r)
	})
}

// StartedChecker is healthy once the server serves TLS on its listener.
func (s *webhookServer) StartedChecker() healthz.Checker {
	return func(*http.Request) error {
		s.mu.Lock()
		started, addr := s.started, s.addr
		s.mu.Unlock()
		if s.opts.Port < 0 {
			return nil
		}
		if !started {
			return errors.New("webhook server has not been started yet")
		}
		d := &net.Dialer{Timeout: 10 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a liveness dial of our own listener
		if err != nil {
			return fmt.Errorf("webhook server is not reachable: %w", err)
		}
		return conn.Close()
	}
}
