package authserver

import (
	"container/list"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/agrenting/agentcred/internal/listener"
)

// FailureLimiter is a token bucket per client that only failed attempts
// drain. A client whose bucket is empty gets 429 for its failures; a valid
// credential is never throttled. With 256-bit keys this is about the cost
// and noise of hammering, not about guessability.
//
// A client is an IPv4 address or an IPv6 /64 (one host usually holds a
// whole /64, so per-address buckets would give it unlimited fresh ones). At
// MaxClients buckets the least recently used is evicted, one at a time: an
// attacker filling the table pushes out only clients quieter than itself,
// and never resets the buckets of the clients it is racing.
type FailureLimiter struct {
	// Rate is how many failures per second refill; Burst is the bucket size.
	Rate  float64
	Burst float64
	// MaxClients bounds memory.
	MaxClients int

	mu      sync.Mutex
	buckets map[netip.Prefix]*list.Element
	lru     *list.List // of *bucket, most recently used at the front
}

type bucket struct {
	client netip.Prefix
	tokens float64
	last   time.Time
}

// NewFailureLimiter returns a limiter allowing burst failures at once and
// rate failures per second after that.
func NewFailureLimiter(rate float64, burst int) *FailureLimiter {
	return &FailureLimiter{Rate: rate, Burst: float64(burst), MaxClients: 100000,
		buckets: map[netip.Prefix]*list.Element{}, lru: list.New()}
}

// Fail records a failed attempt from addr at now. It reports whether the
// failure is within the client's budget and, if not, when to retry.
func (l *FailureLimiter) Fail(addr netip.Addr, now time.Time) (bool, time.Duration) {
	if l == nil || l.Rate <= 0 {
		return true, 0
	}
	client := listener.SourceOf(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *bucket
	if e, ok := l.buckets[client]; ok {
		l.lru.MoveToFront(e)
		b = e.Value.(*bucket)
	} else {
		for len(l.buckets) >= l.MaxClients && l.lru.Len() > 0 {
			oldest := l.lru.Back()
			delete(l.buckets, oldest.Value.(*bucket).client)
			l.lru.Remove(oldest)
		}
		b = &bucket{client: client, tokens: l.Burst, last: now}
		l.buckets[client] = l.lru.PushFront(b)
	}
	b.tokens = math.Min(l.Burst, b.tokens+now.Sub(b.last).Seconds()*l.Rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.Rate * float64(time.Second))
	return false, wait
}

// clients is how many buckets the limiter holds.
func (l *FailureLimiter) clients() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// retryAfterSeconds rounds a wait up to whole seconds for Retry-After.
func retryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// ClientAddress returns the address a request is from: the peer, or, when
// the peer is a trusted proxy, the right-most address in X-Forwarded-For that
// is not itself a trusted proxy.
func ClientAddress(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !peer.IsValid() || !listener.IsTrusted(peer, trusted) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a := parseAddr(strings.TrimSpace(parts[j]))
			if !a.IsValid() {
				return client // garbage: stop at the last address we could trust
			}
			client = a
			if !listener.IsTrusted(a, trusted) {
				return a
			}
		}
	}
	return client
}

func parseAddr(s string) netip.Addr {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// ParseTrustedProxies reads a comma-separated list of CIDRs or addresses.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
