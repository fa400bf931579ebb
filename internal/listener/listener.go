// Package listener is the one constructor of every network listener the
// project serves an unauthenticated client on. A Listener bounds connections
// in total and per source, so that one client — one pod, one address — can
// neither exhaust the process's memory nor take the connection slots every
// other client needs. The servers built on it (internal/authserver's HTTP
// and gRPC servers) add the byte caps, deadlines and connection age of their
// protocol; a new listener inherits these bounds by being made here.
package listener

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound the connections of one listener.
type Limits struct {
	// Name labels the listener in metrics ("auth_http", "auth_grpc").
	Name string
	// Max is the bound on concurrent connections in total.
	Max int
	// PerSource bounds the connections of one source: an IPv4 address, or
	// an IPv6 /64 (one host usually holds a whole /64). 0: Max/8, at least
	// 1. It need not be small for fairness: when the total is reached a
	// newcomer displaces the largest holder (Slots).
	PerSource int
	// Trusted are the proxies (--trusted-proxies) that carry many clients'
	// requests: each may hold PerTrustedSource connections, and Max/4 of
	// the slots are theirs alone, so untrusted sources together cannot lock
	// them out.
	Trusted []netip.Prefix
	// PerTrustedSource bounds one trusted proxy's connections. 0: Max/2.
	PerTrustedSource int
}

// Reasons a connection was refused, for metrics.
const (
	ReasonSource = "per_source"
	ReasonTotal  = "total"
	// ReasonEvicted counts holders closed to make room for a newcomer.
	ReasonEvicted = "evicted"
)

// shares completes l's defaults.
func (l Limits) shares() Limits {
	if l.Max < 1 {
		l.Max = 1
	}
	if l.PerSource <= 0 {
		l.PerSource = max(1, l.Max/8)
	}
	if l.PerTrustedSource <= 0 {
		l.PerTrustedSource = max(1, l.Max/2)
	}
	return l
}

// untrustedMax is how many connections untrusted sources may hold together:
// all of them without trusted proxies, else all but the trusted proxies'
// reserved quarter.
func (l Limits) untrustedMax() int {
	if len(l.Trusted) == 0 {
		return l.Max
	}
	return max(1, l.Max-l.Max/4)
}

// Observer is told of every connection opened, closed or refused (nil:
// nobody is); Metrics is the one the servers use.
type Observer interface {
	Refused(listener, reason string)
	Open(listener string, delta int)
}

// Slots bounds what sources hold at once — the connections of a Listener,
// the concurrent calls of a gRPC server — by Limits: in total, per source,
// and with a quarter kept for trusted proxies. When the total is reached,
// a newcomer is not locked out by those holding it: it takes the oldest slot
// of the source holding the most (that holder is evicted), as long as that
// source holds more than the newcomer would; so however many sources an
// attacker brings, every source keeps about an equal share.
type Slots struct {
	limits Limits

	mu        sync.Mutex
	total     int
	untrusted int
	bySource  map[netip.Prefix]*list.List // of *Slot, oldest first
}

// Slot is one slot taken: give it back with Release.
type Slot struct {
	source  netip.Prefix
	trusted bool
	// evict ends the holder (closes its connection, cancels its call).
	evict func()
	elem  *list.Element
	held  bool
}

// NewSlots returns slots bounded by l (defaults completed).
func NewSlots(l Limits) *Slots {
	return &Slots{limits: l.shares(), bySource: map[netip.Prefix]*list.List{}}
}

// Take takes a slot for a client at addr, or says why not (ReasonSource,
// ReasonTotal). evict ends the holder if a newcomer later takes its slot; it
// is called without the lock held, at most once, and Release after it is a
// no-op. A holder without one (nil) is never displaced.
func (s *Slots) Take(addr netip.Addr, evict func()) (*Slot, string) {
	slot := &Slot{source: SourceOf(addr), trusted: IsTrusted(addr, s.limits.Trusted), evict: evict}
	victim, reason := s.take(slot)
	if victim != nil && victim.evict != nil {
		victim.evict()
	}
	if reason != "" {
		return nil, reason
	}
	return slot, ""
}

func (s *Slots) take(slot *Slot) (victim *Slot, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limits
	perSource := l.PerSource
	if slot.trusted {
		perSource = l.PerTrustedSource
	}
	mine := s.count(slot.source)
	if mine >= perSource {
		return nil, ReasonSource
	}
	if s.total >= l.Max || !slot.trusted && s.untrusted >= l.untrustedMax() {
		// Full: take the oldest slot of the largest holder among those
		// this newcomer may displace (anyone, for a trusted proxy; the
		// untrusted, for the untrusted), if it holds more than the
		// newcomer will.
		victim = s.largest(!slot.trusted)
		if victim == nil || victim.evict == nil || s.count(victim.source) <= mine+1 {
			return nil, ReasonTotal
		}
		s.release(victim)
	}
	s.total++
	if !slot.trusted {
		s.untrusted++
	}
	held := s.bySource[slot.source]
	if held == nil {
		held = list.New()
		s.bySource[slot.source] = held
	}
	slot.elem, slot.held = held.PushBack(slot), true
	return victim, ""
}

func (s *Slots) count(source netip.Prefix) int {
	if held := s.bySource[source]; held != nil {
		return held.Len()
	}
	return 0
}

// largest is the oldest slot of the source holding the most (only among
// untrusted sources if untrustedOnly), nil if none.
func (s *Slots) largest(untrustedOnly bool) *Slot {
	var most *list.List
	for _, held := range s.bySource {
		first := held.Front().Value.(*Slot)
		if untrustedOnly && first.trusted {
			continue
		}
		if most == nil || held.Len() > most.Len() {
			most = held
		}
	}
	if most == nil {
		return nil
	}
	return most.Front().Value.(*Slot)
}

// Release gives back a slot Take took (again: nothing happens).
func (s *Slots) Release(slot *Slot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.release(slot)
}

func (s *Slots) release(slot *Slot) {
	if !slot.held {
		return
	}
	slot.held = false
	s.total--
	if !slot.trusted {
		s.untrusted--
	}
	held := s.bySource[slot.source]
	held.Remove(slot.elem)
	if held.Len() == 0 {
		delete(s.bySource, slot.source)
	}
}

// Held is how many slots are held, in total and by source.
func (s *Slots) Held(source netip.Prefix) (total, bySource int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, s.count(source)
}

// Limits are the bounds, defaults completed.
func (s *Slots) Limits() Limits { return s.limits }

// Listener is a net.Listener with the bounds of Limits on its connections.
// A connection over a bound is closed at once, never left waiting in the
// backlog where it would queue behind the client holding the slots.
type Listener struct {
	net.Listener
	*Slots
	observer Observer
	refused  atomic.Uint64
}

// Wrap bounds ln.
func Wrap(ln net.Listener, l Limits, o Observer) *Listener {
	return &Listener{Listener: ln, Slots: NewSlots(l), observer: o}
}

// Listen listens on the TCP address addr, bounded by l.
func Listen(addr string, l Limits, o Observer) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return Wrap(ln, l, o), nil
}

// SourceOf is the source an address counts against: the IPv4 address, or the
// IPv6 /64 it is in. The auth endpoint's failure throttling counts by the
// same sources.
func SourceOf(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p
	}
	return netip.PrefixFrom(addr, addr.BitLen())
}

// Accept returns the next connection within the bounds, closing those over
// them.
func (ln *Listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		// Accept runs on one goroutine, so cc is set before any later
		// Accept could evict this connection.
		var cc *conn
		slot, reason := ln.Take(remoteAddr(c), func() {
			if ln.observer != nil {
				ln.observer.Refused(ln.limits.Name, ReasonEvicted)
			}
			_ = cc.Close()
		})
		if reason != "" {
			ln.refused.Add(1)
			if ln.observer != nil {
				ln.observer.Refused(ln.limits.Name, reason)
			}
			// Reset rather than linger: the slot is what we are protecting.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
			continue
		}
		if ln.observer != nil {
			ln.observer.Open(ln.limits.Name, 1)
		}
		cc = &conn{Conn: c, ln: ln, slot: slot, opened: time.Now()}
		return cc, nil
	}
}

// Refused is how many connections were refused since the listener started.
func (ln *Listener) Refused() uint64 { return ln.refused.Load() }

// conn gives its slot back once, when closed.
type conn struct {
	net.Conn
	ln     *Listener
	slot   *Slot
	opened time.Time
	closed atomic.Bool
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.ln.Release(c.slot)
		if c.ln.observer != nil {
			c.ln.observer.Open(c.ln.limits.Name, -1)
		}
	}
	return err
}

// Opened is when a connection accepted by a Listener was opened (zero for
// any other connection): servers close connections past their maximum age.
func Opened(c net.Conn) time.Time {
	for c != nil {
		switch v := c.(type) {
		case *conn:
			return v.opened
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = v.NetConn()
		default:
			return time.Time{}
		}
	}
	return time.Time{}
}

func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().WithZone("")
	}
	a, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return a.Addr().Unmap().WithZone("")
}

// IsTrusted reports whether a is in one of the trusted prefixes.
func IsTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
