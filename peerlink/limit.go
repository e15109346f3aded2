package peerlink

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/muros/muros-had/rawio"
)

// ListenerLimits bound what clients that have not proved to be the peer
// can hold of the peer listener, which listens on every interface by
// default: an unauthenticated flood must not starve the real peer.
//
// A connection is counted at accept time, before its TLS handshake, by its
// source address (an IPv6 source by its /64: one host holds a whole /64).
// It is refused, closed at once, when its source already holds
// MaxConnsPerSource connections, when its source has no token left for a
// new connection (RatePerSource per second, bursts of BurstPerSource),
// or when MaxConns connections that have not proved to be the peer are
// open. A connection proves to be the peer when it presented the pinned
// certificate (a TLS 1.3 handshake proves the key); from then on it no
// longer counts against MaxConns. Connections from the peer's own address
// (the host of Config.PeerURL) are never refused for MaxConns, only for
// their source's own limits, so a flood from other addresses cannot lock
// the peer out. Each request on a connection without the pinned
// certificate (an operator's GET /api/health) takes a token of its
// source's bucket too, answered 429 without one. The server speaks
// HTTP/1.1 only (no ALPN), so requests in flight without the peer's
// certificate are bounded by MaxConns plus the peer address's connections.
type ListenerLimits struct {
	// MaxConns bounds connections open together that have not proved to
	// be the peer, all sources together (default 64).
	MaxConns int
	// MaxConnsPerSource bounds connections open together from one source
	// address (default 8; the peer uses at most 2).
	MaxConnsPerSource int
	// RatePerSource is the sustained rate of new connections and
	// unauthenticated requests per second from one source (default 10),
	// BurstPerSource its burst (default 20).
	RatePerSource  float64
	BurstPerSource int
}

// Limits of ListenerLimits: anything above is as good as no limit.
const (
	maxListenerConns = 4096
	maxListenerRate  = 1000
	maxListenerBurst = 10000
)

// WithDefaults fills the zero fields with the defaults.
func (l ListenerLimits) WithDefaults() ListenerLimits {
	if l.MaxConns == 0 {
		l.MaxConns = 64
	}
	if l.MaxConnsPerSource == 0 {
		l.MaxConnsPerSource = 8
	}
	if l.RatePerSource == 0 {
		l.RatePerSource = 10
	}
	if l.BurstPerSource == 0 {
		l.BurstPerSource = 20
	}
	return l
}

// Validate refuses limits that do not limit.
func (l ListenerLimits) Validate() error {
	var errs []error
	if l.MaxConns < 1 || l.MaxConns > maxListenerConns {
		errs = append(errs, fmt.Errorf("listener max connections %d: want 1..%d", l.MaxConns, maxListenerConns))
	}
	if l.MaxConnsPerSource < 2 || l.MaxConnsPerSource > l.MaxConns {
		errs = append(errs, fmt.Errorf("listener max connections per source %d: want 2..%d (max connections; the peer keeps 2)", l.MaxConnsPerSource, l.MaxConns))
	}
	if !(l.RatePerSource > 0 && l.RatePerSource <= maxListenerRate) {
		errs = append(errs, fmt.Errorf("listener rate per source %v/s: want more than 0, at most %d", l.RatePerSource, maxListenerRate))
	}
	if l.BurstPerSource < 1 || l.BurstPerSource > maxListenerBurst {
		errs = append(errs, fmt.Errorf("listener burst per source %d: want 1..%d", l.BurstPerSource, maxListenerBurst))
	}
	return errors.Join(errs...)
}

// Listener rejection reasons (Link.Rejected, metric labels).
const (
	ReasonConnLimit   = "conn_limit"        // MaxConns unauthenticated connections open
	ReasonSourceConns = "source_conn_limit" // MaxConnsPerSource from this source open
	ReasonSourceRate  = "source_rate"       // the source's token bucket is empty
)

// maxSources bounds the per-source table; sources holding no connection
// and a full bucket are forgotten first.
const maxSources = 4096

// admission is the listener's accounting: pure, time given by the caller.
type admission struct {
	lim  ListenerLimits
	peer netip.Prefix // the peer's source key; invalid when unknown

	mu      sync.Mutex
	unauth  int // open connections that have not proved to be the peer
	sources map[netip.Prefix]*sourceState
}

type sourceState struct {
	conns  int
	tokens float64
	last   time.Time
}

// ticket is one admitted connection.
type ticket struct {
	src    netip.Prefix
	unauth bool // still counted in admission.unauth
}

func newAdmission(lim ListenerLimits, peer netip.Addr) *admission {
	a := &admission{lim: lim, sources: map[netip.Prefix]*sourceState{}}
	if peer.IsValid() {
		a.peer = sourceKey(peer)
	}
	return a
}

// sourceKey is what one client is counted by: its address, or its /64
// for IPv6. An unknown address (not IP) is the zero prefix: one source.
func sourceKey(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return netip.Prefix{}
	}
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p
	}
	return netip.PrefixFrom(addr, 32)
}

// source returns the state of src, making room for it if needed (nil when
// the table is full of sources that hold connections or spent tokens).
func (a *admission) source(src netip.Prefix, now time.Time) *sourceState {
	if s, ok := a.sources[src]; ok {
		a.refill(s, now)
		return s
	}
	if len(a.sources) >= maxSources {
		for k, s := range a.sources {
			a.refill(s, now)
			if s.conns == 0 && s.tokens >= float64(a.lim.BurstPerSource) {
				delete(a.sources, k)
			}
		}
		if len(a.sources) >= maxSources {
			return nil
		}
	}
	s := &sourceState{tokens: float64(a.lim.BurstPerSource), last: now}
	a.sources[src] = s
	return s
}

func (a *admission) refill(s *sourceState, now time.Time) {
	if dt := now.Sub(s.last).Seconds(); dt > 0 {
		s.tokens = min(float64(a.lim.BurstPerSource), s.tokens+dt*a.lim.RatePerSource)
		s.last = now
	}
}

// admit decides on a new connection from addr at now: a ticket, or the
// reason it is refused.
func (a *admission) admit(addr netip.Addr, now time.Time) (ticket, string) {
	src := sourceKey(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	isPeer := a.peer.IsValid() && src == a.peer
	if !isPeer && a.unauth >= a.lim.MaxConns {
		return ticket{}, ReasonConnLimit
	}
	s := a.source(src, now)
	if s == nil {
		return ticket{}, ReasonConnLimit
	}
	if s.conns >= a.lim.MaxConnsPerSource {
		return ticket{}, ReasonSourceConns
	}
	if s.tokens < 1 {
		return ticket{}, ReasonSourceRate
	}
	s.tokens--
	s.conns++
	a.unauth++
	return ticket{src: src, unauth: true}, ""
}

// authenticated moves t out of the unauthenticated count.
func (a *admission) authenticated(t *ticket) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.unauth {
		t.unauth = false
		a.unauth--
	}
}

// release ends t's connection.
func (a *admission) release(t *ticket) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.unauth {
		t.unauth = false
		a.unauth--
	}
	if s, ok := a.sources[t.src]; ok && s.conns > 0 {
		s.conns--
	}
}

// request takes a token for a request without the peer's certificate.
func (a *admission) request(addr netip.Addr, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.source(sourceKey(addr), now)
	if s == nil || s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

// peerAddr is the host of the peer URL when it is an IP address.
func peerAddr(peerURL string) netip.Addr {
	u, err := url.Parse(peerURL)
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return netip.Addr{}
	}
	return a
}

// remoteAddr is the IP address of a net.Addr or "host:port" string; the
// zero Addr when it has none (a pipe).
func remoteAddr(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// limitListener admits connections (admission) and adds TLS.
type limitListener struct {
	net.Listener
	adm    *admission
	tls    *tls.Config
	now    func() time.Time
	refuse func(reason string, remote net.Addr)
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		t, reason := l.adm.admit(remoteAddr(c.RemoteAddr().String()), l.now())
		if reason != "" {
			c.Close()
			l.refuse(reason, c.RemoteAddr())
			continue
		}
		// Raw reads and writes: see package rawio.
		return tls.Server(&admittedConn{Conn: rawio.NewStream(c), adm: l.adm, t: t}, l.tls), nil
	}
}

// admittedConn releases its ticket when closed.
type admittedConn struct {
	net.Conn
	adm  *admission
	once sync.Once
	mu   sync.Mutex
	t    ticket
}

func (c *admittedConn) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.adm.release(&c.t)
	})
	return c.Conn.Close()
}

func (c *admittedConn) authenticated() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.adm.authenticated(&c.t)
}

// connState marks a connection whose client presented the pinned
// certificate as the peer's (http.Server.ConnState: StateActive comes
// after the handshake, at its first request).
func (l *Link) connState(c net.Conn, st http.ConnState) {
	if st != http.StateActive {
		return
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return
	}
	ac, ok := tc.NetConn().(*admittedConn)
	if !ok {
		return
	}
	if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 && FingerprintMatches(cs.PeerCertificates[0].Raw, l.pin) {
		ac.authenticated()
	}
}

// limitRequests answers 429 to a request without the peer's certificate
// when its source has no token left.
func (l *Link) limitRequests(adm *admission, now func() time.Time, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.fromPeer(r) && !adm.request(remoteAddr(r.RemoteAddr), now()) {
			l.refused(ReasonSourceRate, r.RemoteAddr)
			WriteJSON(w, http.StatusTooManyRequests, ErrorBody{Error: http.StatusText(http.StatusTooManyRequests)})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refusedLogEvery spaces the log lines about refused connections and
// requests: a flood is counted in full but logged once in a while.
const refusedLogEvery = 10 * time.Second

// refused counts a connection or request the limits refused and logs it
// at most once per refusedLogEvery and reason.
func (l *Link) refused(reason, remote string) {
	l.rejected.add(reason, 1)
	now := time.Now()
	l.refusedLog.Lock()
	defer l.refusedLog.Unlock()
	if l.refusedLog.last == nil {
		l.refusedLog.last = map[string]time.Time{}
	}
	if last, ok := l.refusedLog.last[reason]; ok && now.Sub(last) < refusedLogEvery {
		return
	}
	l.refusedLog.last[reason] = now
	l.log.Warn("peer link: listener refusing clients over its limits (logged once per 10 s; the rejections count each)", "reason", reason, "remote", remote)
}

// listenerLog is the refusal log's rate state.
type listenerLog struct {
	sync.Mutex
	last map[string]time.Time
}

// limited wraps the peer listener ln: admission at accept, TLS, the
// request limit around the router, and the hook that recognises the peer.
// now is the limits' clock (nil: time.Now).
func (l *Link) limited(ln net.Listener, now func() time.Time) (net.Listener, http.Handler, func(net.Conn, http.ConnState)) {
	if now == nil {
		now = time.Now
	}
	adm := newAdmission(l.cfg.Limits, peerAddr(l.cfg.PeerURL))
	ll := &limitListener{Listener: ln, adm: adm, tls: l.TLSConfig(), now: now,
		refuse: func(reason string, remote net.Addr) { l.refused(reason, remote.String()) }}
	return ll, l.limitRequests(adm, now, l.mux), l.connState
}
