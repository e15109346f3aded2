package peerlink

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestAdmission(t *testing.T) {
	t0 := time.Unix(1000, 0)
	lim := ListenerLimits{MaxConns: 5, MaxConnsPerSource: 2, RatePerSource: 2, BurstPerSource: 3}
	peer := netip.MustParseAddr("192.0.2.1")
	a := newAdmission(lim, peer)
	type step struct {
		addr string
		at   time.Duration
		want string // reason, "" = admitted
	}
	ip := netip.MustParseAddr
	var tickets []ticket
	for i, s := range []step{
		{"198.51.100.1", 0, ""},
		{"198.51.100.1", 0, ""},
		{"198.51.100.1", 0, ReasonSourceConns},
		{"2001:db8::1", 0, ""},
		{"2001:db8::2", 0, ""},
		{"2001:db8::3", 0, ReasonSourceConns},         // same /64
		{"::ffff:198.51.100.1", 0, ReasonSourceConns}, // same IPv4 address
		{"198.51.100.2", 0, ""},
		{"198.51.100.3", 0, ReasonConnLimit},
		{"192.0.2.1", 0, ""}, // the peer's address: not held to MaxConns
		{"192.0.2.1", 0, ""},
		{"192.0.2.1", 0, ReasonSourceConns},
	} {
		tk, got := a.admit(ip(s.addr), t0.Add(s.at))
		if got != s.want {
			t.Fatalf("step %d %s: %q, want %q", i, s.addr, got, s.want)
		}
		if got == "" {
			tickets = append(tickets, tk)
		}
	}
	// The peer's connections prove themselves; one flood connection ends:
	// one new connection fits again.
	a.authenticated(&tickets[5])
	a.authenticated(&tickets[6])
	a.release(&tickets[0])
	a.release(&tickets[0]) // twice: counted once
	if _, got := a.admit(ip("198.51.100.4"), t0); got != "" {
		t.Fatalf("after a release: %q", got)
	}
	if _, got := a.admit(ip("198.51.100.5"), t0); got != ReasonConnLimit {
		t.Fatalf("over the cap again: %q", got)
	}
	// Rate: source .1 spent 2 of 3 tokens; one request left, then none
	// until 0.5 s later (2/s).
	src := ip("198.51.100.1")
	if !a.request(src, t0) || a.request(src, t0) {
		t.Fatal("burst not enforced")
	}
	if !a.request(src, t0.Add(500*time.Millisecond)) || a.request(src, t0.Add(500*time.Millisecond)) {
		t.Fatal("refill not 2/s")
	}
}

func TestListenerLimitsValidate(t *testing.T) {
	def := ListenerLimits{}.WithDefaults()
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, weak := range []ListenerLimits{
		{MaxConns: 100000, MaxConnsPerSource: 8, RatePerSource: 10, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 65, RatePerSource: 10, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 1, RatePerSource: 10, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 8, RatePerSource: -1, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 8, RatePerSource: 1e6, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 8, RatePerSource: 10, BurstPerSource: 1e6},
	} {
		if weak.Validate() == nil {
			t.Errorf("%+v accepted", weak)
		}
	}
}

// Whatever the order of connections, proofs, closes and requests, the
// accounting holds: no source above its limit, no more unauthenticated
// connections than MaxConns except the peer address's own, counts never
// negative, and every refusal names the limit that was reached.
func TestAdmissionProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		lim := ListenerLimits{
			MaxConns:          rapid.IntRange(2, 6).Draw(t, "max"),
			RatePerSource:     float64(rapid.IntRange(1, 5).Draw(t, "rate")),
			BurstPerSource:    rapid.IntRange(1, 6).Draw(t, "burst"),
			MaxConnsPerSource: 2,
		}
		lim.MaxConnsPerSource = rapid.IntRange(2, lim.MaxConns).Draw(t, "per source")
		addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1"),
			netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")}
		peer := addrs[0]
		a := newAdmission(lim, peer)
		type open struct {
			t    ticket
			addr netip.Addr
		}
		var conns []*open
		now := time.Unix(0, 0)
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			now = now.Add(time.Duration(rapid.IntRange(0, 700).Draw(t, "ms")) * time.Millisecond)
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0:
				addr := rapid.SampledFrom(addrs).Draw(t, "addr")
				before := *a.source(sourceKey(addr), now)
				unauth := a.unauth
				tk, reason := a.admit(addr, now)
				switch reason {
				case "":
					conns = append(conns, &open{tk, addr})
				case ReasonConnLimit:
					if addr == peer || unauth < lim.MaxConns {
						t.Fatalf("conn_limit for %s with %d unauthenticated open", addr, unauth)
					}
				case ReasonSourceConns:
					if before.conns < lim.MaxConnsPerSource {
						t.Fatalf("source_conn_limit with %d open", before.conns)
					}
				case ReasonSourceRate:
					if before.tokens >= 1 {
						t.Fatalf("source_rate with %v tokens", before.tokens)
					}
				default:
					t.Fatalf("reason %q", reason)
				}
			case 1:
				if len(conns) > 0 {
					a.authenticated(&conns[rapid.IntRange(0, len(conns)-1).Draw(t, "proved")].t)
				}
			case 2:
				if len(conns) > 0 {
					i := rapid.IntRange(0, len(conns)-1).Draw(t, "closed")
					a.release(&conns[i].t)
					conns = append(conns[:i], conns[i+1:]...)
				}
			case 3:
				a.request(rapid.SampledFrom(addrs).Draw(t, "requester"), now)
			}
			perSource := map[netip.Prefix]int{}
			unauth, peerUnauth := 0, 0
			for _, c := range conns {
				perSource[sourceKey(c.addr)]++
				if c.t.unauth {
					unauth++
					if c.addr == peer {
						peerUnauth++
					}
				}
			}
			if unauth != a.unauth {
				t.Fatalf("unauthenticated count %d, %d such connections open", a.unauth, unauth)
			}
			if unauth-peerUnauth > lim.MaxConns {
				t.Fatalf("%d unauthenticated connections from other addresses, max %d", unauth-peerUnauth, lim.MaxConns)
			}
			for src, s := range a.sources {
				if s.conns != perSource[src] || s.conns > lim.MaxConnsPerSource || s.tokens < 0 || s.tokens > float64(lim.BurstPerSource) {
					t.Fatalf("source %s: %+v, %d open", src, *s, perSource[src])
				}
			}
		}
	})
}

func TestSourceKeys(t *testing.T) {
	key := func(s string) string {
		if p := sourceKey(remoteAddr(s)); p.IsValid() {
			return p.String()
		}
		return "none"
	}
	got := map[string]string{}
	for _, s := range []string{"192.0.2.1:7443", "[::ffff:192.0.2.1]:40000", "[2001:db8:0:1:2::9]:1", "[fe80::1%eth0]:1", "pipe", ""} {
		got[s] = key(s)
	}
	want := map[string]string{
		"192.0.2.1:7443": "192.0.2.1/32", "[::ffff:192.0.2.1]:40000": "192.0.2.1/32",
		"[2001:db8:0:1:2::9]:1": "2001:db8:0:1::/64", "[fe80::1%eth0]:1": "fe80::/64", "pipe": "none", "": "none",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("source keys (-want +got):\n%s", d)
	}
	for u, want := range map[string]string{"https://192.0.2.1:7443": "192.0.2.1", "https://[2001:db8::1]:7443": "2001:db8::1", "https://peer.example:7443": "invalid IP"} {
		if got := peerAddr(u).String(); got != want {
			t.Errorf("peerAddr(%s) = %s, want %s", u, got, want)
		}
	}
}
