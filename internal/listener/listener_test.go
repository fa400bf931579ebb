package listener

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// dialFrom opens a TCP connection to addr from the loopback address src
// (nil if it is reset while connecting: refused).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// serve accepts on ln and echoes one byte per connection, so a client can
// tell an accepted connection (echo) from a refused one (EOF/reset).
func serve(t *testing.T, ln *Listener) {
	t.Helper()
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
					if _, err := c.Write(b); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// served reports whether the listener serves c: true if a byte comes back.
func served(c net.Conn) bool {
	if c == nil {
		return false
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err := io.ReadFull(c, b)
	return err == nil
}

func listen(t *testing.T, l Limits) *Listener {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", l, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln)
	return ln
}

func TestOneSourceCannotTakeEverySlot(t *testing.T) {
	ln := listen(t, Limits{Max: 8, PerSource: 3})
	addr := ln.Addr().String()
	var held []net.Conn
	for range 3 {
		c := dialFrom(t, "127.0.0.2", addr)
		if !served(c) {
			t.Fatal("a connection within the source's share was refused")
		}
		held = append(held, c)
	}
	if served(dialFrom(t, "127.0.0.2", addr)) {
		t.Fatal("the source's fourth connection was served: the per-source bound does not hold")
	}
	if !served(dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("another source was refused while one source held its share")
	}
	// A closed connection gives its slot back.
	_ = held[0].Close()
	waitOpen(t, ln, SourceOf(netip.MustParseAddr("127.0.0.2")), 2)
	if !served(dialFrom(t, "127.0.0.2", addr)) {
		t.Fatal("the slot of a closed connection was not given back")
	}
	if got := ln.Refused(); got != 1 {
		t.Fatalf("refused = %d, want 1", got)
	}
}

// TestANewcomerDisplacesTheLargestHolder: with every slot taken, a new
// source gets in by closing the oldest connection of the source holding the
// most, until every source holds about the same; only then is it refused.
func TestANewcomerDisplacesTheLargestHolder(t *testing.T) {
	ln := listen(t, Limits{Max: 6, PerSource: 6})
	addr := ln.Addr().String()
	var held []net.Conn
	for range 6 {
		c := dialFrom(t, "127.0.0.2", addr)
		if !served(c) {
			t.Fatal("refused within the bounds")
		}
		held = append(held, c)
	}
	for i := range 3 {
		if !served(dialFrom(t, "127.0.0.3", addr)) {
			t.Fatalf("newcomer refused at its connection %d while 127.0.0.2 held more", i+1)
		}
		if served(held[i]) {
			t.Fatalf("127.0.0.2's connection %d (its oldest) was not closed for the newcomer", i+1)
		}
	}
	if served(dialFrom(t, "127.0.0.3", addr)) {
		t.Fatal("the newcomer took a fourth slot although both sources hold three")
	}
	for i := 3; i < 6; i++ {
		if !served(held[i]) {
			t.Fatalf("127.0.0.2's connection %d was closed although it is within an equal share", i+1)
		}
	}
}

func TestTotalBoundAndTrustedReserve(t *testing.T) {
	trusted := netip.MustParsePrefix("127.0.0.9/32")
	// Max 8: untrusted sources together get 6, the trusted proxy the rest.
	ln := listen(t, Limits{Max: 8, PerSource: 3, PerTrustedSource: 8, Trusted: []netip.Prefix{trusted}})
	addr := ln.Addr().String()
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		for range 3 {
			dialFrom(t, src, addr)
		}
	}
	// Untrusted sources share their 6 slots equally, whatever arrived first.
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		waitOpen(t, ln, SourceOf(netip.MustParseAddr(src)), 2)
	}
	for i := range 2 {
		if !served(dialFrom(t, "127.0.0.9", addr)) {
			t.Fatalf("trusted proxy refused its connection %d although its reserve is free", i+1)
		}
	}
	if served(dialFrom(t, "127.0.0.9", addr)) {
		t.Fatal("a ninth connection was served: the total bound does not hold")
	}
	if total, _ := ln.Held(trusted); total != 8 {
		t.Fatalf("open = %d, want 8", total)
	}
}

func TestTrustedProxyGetsALargerShare(t *testing.T) {
	ln := listen(t, Limits{Max: 16, PerSource: 1, PerTrustedSource: 5, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}})
	addr := ln.Addr().String()
	for i := range 5 {
		if !served(dialFrom(t, "127.0.0.9", addr)) {
			t.Fatalf("trusted proxy refused at connection %d of its share of 5", i+1)
		}
	}
	if served(dialFrom(t, "127.0.0.9", addr)) {
		t.Fatal("trusted proxy served past its own share")
	}
}

func TestDefaults(t *testing.T) {
	l := Limits{Max: 2048}.shares()
	if l.PerSource != 256 || l.PerTrustedSource != 1024 {
		t.Fatalf("shares of 2048 = %d per source, %d per trusted proxy; want 256 and 1024", l.PerSource, l.PerTrustedSource)
	}
	if l.untrustedMax() != 2048 {
		t.Fatalf("without trusted proxies untrusted sources may hold %d, want all 2048", l.untrustedMax())
	}
	l.Trusted = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if l.untrustedMax() != 1536 {
		t.Fatalf("with trusted proxies untrusted sources may hold %d, want 1536", l.untrustedMax())
	}
	if s := (Limits{}).shares(); s.Max != 1 || s.PerSource != 1 || s.PerTrustedSource != 1 {
		t.Fatalf("zero limits = %+v, want 1 each", s)
	}
}

func TestSourceOf(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"10.1.2.3", "10.1.2.3/32"},
		{"::ffff:10.1.2.3", "10.1.2.3/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		if got := SourceOf(netip.MustParseAddr(c.addr)); got.String() != c.want {
			t.Errorf("SourceOf(%s) = %s, want %s", c.addr, got, c.want)
		}
	}
}

func TestOpenedSeesThroughWrappers(t *testing.T) {
	ln := listen(t, Limits{Max: 4})
	if !Opened(nil).IsZero() {
		t.Fatal("Opened(nil) is not zero")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if !Opened(a).IsZero() {
		t.Fatal("Opened of a connection no Listener accepted is not zero")
	}
	c := &conn{Conn: a, ln: ln, opened: time.Unix(42, 0)}
	if got := Opened(wrapped{c}); !got.Equal(time.Unix(42, 0)) {
		t.Fatalf("Opened through a wrapper = %v, want the accepted connection's time", got)
	}
}

// wrapped stands for *tls.Conn: a connection exposing the one beneath.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

func waitOpen(t *testing.T, ln *Listener, source netip.Prefix, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, n := ln.Held(source); n == want {
			return
		}
		if time.Now().After(deadline) {
			_, n := ln.Held(source)
			t.Fatalf("open from %s = %d, want %d", source, n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHoldersThatCannotBeEndedAreNotDisplaced: a slot taken without an
// evict function (a request that cannot be cut short) is never given to a
// newcomer, so the bound holds.
func TestHoldersThatCannotBeEndedAreNotDisplaced(t *testing.T) {
	s := NewSlots(Limits{Max: 2, PerSource: 2})
	a := netip.MustParseAddr("10.0.0.1")
	for range 2 {
		if _, reason := s.Take(a, nil); reason != "" {
			t.Fatalf("refused within the bound: %s", reason)
		}
	}
	if _, reason := s.Take(netip.MustParseAddr("10.0.0.2"), nil); reason != ReasonTotal {
		t.Fatalf("a newcomer got %q, want %q: a holder that cannot be ended was displaced", reason, ReasonTotal)
	}
	if total, _ := s.Held(netip.Prefix{}); total != 2 {
		t.Fatalf("held %d, want 2", total)
	}
}
