package authserver

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// FailureLimiter is a token bucket per client address that only failed
// attempts drain. A client whose bucket is empty gets 429 for its failures;
// a valid credential is never throttled. With 256-bit keys this is about the
// cost and noise of hammering, not about guessability.
type FailureLimiter struct {
	// Rate is how many failures per second refill; Burst is the bucket size.
	Rate  float64
	Burst float64
	// MaxClients bounds memory: past it, fully refilled buckets are dropped.
	MaxClients int

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewFailureLimiter returns a limiter allowing burst failures at once and
// rate failures per second after that.
func NewFailureLimiter(rate float64, burst int) *FailureLimiter {
	return &FailureLimiter{Rate: rate, Burst: float64(burst), MaxClients: 100000, buckets: map[netip.Addr]*bucket{}}
}

// Fail records a failed attempt from addr at now. It reports whether the
// failure is within the client's budget and, if not, when to retry.
func (l *FailureLimiter) Fail(addr netip.Addr, now time.Time) (bool, time.Duration) {
	if l == nil || l.Rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[addr]
	if !ok {
		if len(l.buckets) >= l.MaxClients {
			l.sweepLocked(now)
		}
		b = &bucket{tokens: l.Burst, last: now}
		l.buckets[addr] = b
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

func (l *FailureLimiter) sweepLocked(now time.Time) {
	for a, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.Rate >= l.Burst {
			delete(l.buckets, a)
		}
	}
	if len(l.buckets) >= l.MaxClients {
		// Everyone is mid-attack: start over rather than grow without bound.
		clear(l.buckets)
	}
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
	if !peer.IsValid() || !isTrusted(peer, trusted) {
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
			if !isTrusted(a, trusted) {
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

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
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
