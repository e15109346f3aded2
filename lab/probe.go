package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Probe datagram, 20 bytes, echoed unchanged by the echo server:
//
//	offset 0..3   magic "MHPR"
//	offset 4..11  sequence number, uint64 big endian, 0 for the first
//	offset 12..19 send instant, int64 big endian nanoseconds since the
//	              start of the run (lets a reply's round trip be measured)
const (
	probeMagic = "MHPR"
	ProbeLen   = 20
)

// Reasons a reply is rejected by ParseProbe.
var (
	ErrProbeShort = errors.New("probe: shorter than 20 bytes")
	ErrProbeMagic = errors.New("probe: bad magic")
)

// AppendProbe appends a probe datagram to b.
func AppendProbe(b []byte, seq uint64, sent time.Duration) []byte {
	b = append(b, probeMagic...)
	b = binary.BigEndian.AppendUint64(b, seq)
	return binary.BigEndian.AppendUint64(b, uint64(sent))
}

// ParseProbe decodes a probe datagram. Trailing bytes are an error too
// (short or magic): a reply must be exactly what was sent.
func ParseProbe(b []byte) (seq uint64, sent time.Duration, err error) {
	if len(b) != ProbeLen {
		return 0, 0, fmt.Errorf("%w: %d bytes", ErrProbeShort, len(b))
	}
	if string(b[:4]) != probeMagic {
		return 0, 0, ErrProbeMagic
	}
	return binary.BigEndian.Uint64(b[4:12]), time.Duration(binary.BigEndian.Uint64(b[12:20])), nil
}

// DefaultProbePort is the UDP and TCP port of the lab echo servers.
const DefaultProbePort = 9000

// UDPEcho is a UDP echo server running in a namespace (a goroutine with a
// socket opened inside it).
type UDPEcho struct {
	conn *net.UDPConn
	wg   sync.WaitGroup
	mu   sync.Mutex
	n    int
}

// StartUDPEcho listens on port (all addresses) in ns and echoes every
// datagram back to its sender.
func StartUDPEcho(ns *Netns, port int) (*UDPEcho, error) {
	e := &UDPEcho{}
	if err := ns.Do(func() error {
		c, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
		e.conn = c
		return err
	}); err != nil {
		return nil, fmt.Errorf("lab: udp echo in %s: %w", ns.Name, err)
	}
	e.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := e.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			e.conn.WriteToUDPAddrPort(buf[:n], from)
			e.mu.Lock()
			e.n++
			e.mu.Unlock()
		}
	})
	return e, nil
}

// Echoed is the number of datagrams echoed so far.
func (e *UDPEcho) Echoed() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// Close stops the server and waits for its goroutine.
func (e *UDPEcho) Close() error {
	err := e.conn.Close()
	e.wg.Wait()
	return err
}

// UDPProbeOptions configure ProbeUDP. Zero values take the defaults.
type UDPProbeOptions struct {
	Interval time.Duration // between datagrams, default 1 ms
	Duration time.Duration // sending time, default 1 s (the run is bounded by it)
	Drain    time.Duration // wait for late replies after the last send, default 200 ms
	Port     int           // echo port, default DefaultProbePort
	// During, if set, is called once sending has started (e.g. to crash a
	// firewall mid-run); it runs in its own goroutine and ProbeUDP waits
	// for it before returning.
	During func()
}

// UDPProbeResult is what a client saw.
type UDPProbeResult struct {
	Sent, Received           int
	Lost                     int // sent and never answered
	Duplicates, Reordered    int
	RejectedShort, BadMagic  int // replies that were not our probes, by reason
	SendErrors, RecvErrors   int // e.g. ICMP unreachable reported on the socket
	MaxGap                   time.Duration
	MaxGapFrom               time.Duration // offset from the start where MaxGap began
	MaxRTT                   time.Duration
	Elapsed                  time.Duration // sending time
	Start                    time.Time     // wall clock of offset 0
	FirstReply, LastReplyAge time.Duration // offset of the first reply; silence at the end
	// MaxSendLag is how late the sender ran against its schedule: when
	// this process was starved of CPU the probe stopped probing, and a gap
	// up to this size says nothing about the path.
	MaxSendLag time.Duration
	// Arrivals are the offsets at which each unique reply arrived, in the
	// order read: the gap at a given instant (a failover of a few ms) can
	// be found even when the machine stalled longer elsewhere in the run.
	Arrivals Arrivals
}

// Arrivals are reply arrival offsets. They print as their count: a probe
// result in a log or an error would otherwise list a thousand per second.
type Arrivals []time.Duration

func (a Arrivals) String() string { return fmt.Sprintf("%d arrivals", len(a)) }

func (o *UDPProbeOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = time.Millisecond
	}
	if o.Duration <= 0 {
		o.Duration = time.Second
	}
	if o.Drain <= 0 {
		o.Drain = 200 * time.Millisecond
	}
	if o.Port == 0 {
		o.Port = DefaultProbePort
	}
}

// ProbeUDP starts a UDP echo server in server, then sends a numbered
// datagram from client to dst every Interval for Duration and reports the
// largest client-visible gap between replies and the losses. It stops by
// itself (Duration + Drain) or when ctx ends, and leaves no goroutine.
func ProbeUDP(ctx context.Context, client, server *Netns, dst netip.Addr, opts UDPProbeOptions) (UDPProbeResult, error) {
	opts.defaults()
	echo, err := StartUDPEcho(server, opts.Port)
	if err != nil {
		return UDPProbeResult{}, err
	}
	defer echo.Close()
	var conn *net.UDPConn
	if err := client.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(opts.Port))))
		conn = c
		return err
	}); err != nil {
		return UDPProbeResult{}, fmt.Errorf("lab: udp probe socket in %s: %w", client.Name, err)
	}
	if err := enableRxTimestamps(conn); err != nil {
		conn.Close()
		return UDPProbeResult{}, err
	}

	capacity := int(opts.Duration/opts.Interval) + 1
	seqs := NewSeqTracker(capacity)
	res := UDPProbeResult{Arrivals: make(Arrivals, 0, capacity)}
	var gaps GapMeter
	start := time.Now()

	var recv sync.WaitGroup
	recv.Go(func() {
		buf := make([]byte, 2048)
		oob := make([]byte, 128)
		first := true
		for {
			n, oobn, _, _, err := conn.ReadMsgUDP(buf, oob)
			at := arrival(oob[:oobn], start)
			if err != nil {
				var ne net.Error
				if errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
					return // drained: see the deadline set after Drain
				}
				res.RecvErrors++
				continue
			}
			seq, sent, err := ParseProbe(buf[:n])
			switch {
			case errors.Is(err, ErrProbeShort):
				res.RejectedShort++
				continue
			case err != nil:
				res.BadMagic++
				continue
			}
			if !seqs.Add(seq) {
				continue
			}
			if first {
				res.FirstReply, first = at, false
			}
			if rtt := at - sent; rtt > res.MaxRTT {
				res.MaxRTT = rtt
			}
			gaps.Observe(at)
			res.Arrivals = append(res.Arrivals, at)
		}
	})

	var during sync.WaitGroup
	if opts.During != nil {
		during.Go(opts.During)
	}
	// Paced by schedule, not by ticks: a loaded machine delays ticks, and
	// the sender catches up (at most 10 at once) instead of silently
	// lowering the rate.
	ticker := time.NewTicker(opts.Interval)
	msg := make([]byte, 0, ProbeLen)
send:
	for seq := 0; seq < capacity; {
		now := time.Since(start)
		due := min(int(now/opts.Interval)+1, capacity, seq+10)
		for ; seq < due; seq++ {
			at := time.Since(start)
			res.MaxSendLag = max(res.MaxSendLag, at-time.Duration(seq)*opts.Interval)
			msg = AppendProbe(msg[:0], uint64(seq), at)
			if _, err := conn.Write(msg); err != nil {
				res.SendErrors++
			}
			res.Sent++
		}
		if now >= opts.Duration {
			break
		}
		select {
		case <-ctx.Done():
			break send
		case <-ticker.C:
		}
	}
	ticker.Stop()
	sendDone := time.Since(start)
	drain := time.NewTimer(opts.Drain)
	select {
	case <-ctx.Done():
	case <-drain.C:
	}
	drain.Stop()
	// Replies already queued on the socket are read at once; only an empty
	// queue waits for the deadline. Closing instead would drop them (a
	// starved receiver goroutine is not a lost reply).
	conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	recv.Wait()
	conn.Close()
	during.Wait()

	gaps.Finish(sendDone)
	res.MaxGap, res.MaxGapFrom = gaps.Max()
	res.Received = seqs.Unique
	res.Lost = res.Sent - seqs.Unique
	res.Duplicates, res.Reordered = seqs.Duplicates, seqs.Reordered
	res.Elapsed, res.Start = sendDone, start
	if last := gaps.last; sendDone > last {
		res.LastReplyAge = sendDone - last
	}
	return res, ctx.Err()
}

// TCPEcho is a TCP echo server running in a namespace.
type TCPEcho struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

// StartTCPEcho listens on port (all addresses) in ns and echoes every
// connection's bytes back.
func StartTCPEcho(ns *Netns, port int) (*TCPEcho, error) {
	e := &TCPEcho{conns: map[net.Conn]struct{}{}}
	if err := ns.Do(func() error {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		e.ln = ln
		return err
	}); err != nil {
		return nil, fmt.Errorf("lab: tcp echo in %s: %w", ns.Name, err)
	}
	e.wg.Go(func() {
		for {
			c, err := e.ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			if e.done {
				e.mu.Unlock()
				c.Close()
				return
			}
			e.conns[c] = struct{}{}
			e.mu.Unlock()
			e.wg.Go(func() {
				io.Copy(c, c)
				c.Close()
				e.mu.Lock()
				delete(e.conns, c)
				e.mu.Unlock()
			})
		}
	})
	return e, nil
}

// Close stops the server, closes its connections and waits.
func (e *TCPEcho) Close() error {
	err := e.ln.Close()
	e.mu.Lock()
	e.done = true
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return err
}

// TCPStreamOptions configure StartTCPStream. Zero values take defaults.
type TCPStreamOptions struct {
	Port     int           // default DefaultProbePort
	Chunk    int           // bytes written per Interval, default 1024
	Interval time.Duration // default 1 ms
	Duration time.Duration // hard bound on the stream, default 10 s
}

// TCPStreamResult is what the client of a long-lived stream saw.
type TCPStreamResult struct {
	Sent, Echoed int64
	// MaxStall is the longest time without echoed bytes (from the start,
	// between reads, and from the last read to the end).
	MaxStall, MaxStallFrom time.Duration
	LastEchoAge            time.Duration // silence at the end: a dead flow
	Reset                  bool          // ECONNRESET or EPIPE
	Corrupt                bool          // echoed bytes differ from what was sent
	Err                    error         // first error that is not our own Stop
	Elapsed                time.Duration
}

// TCPStream is a paced TCP flow from a client through the firewalls to an
// echo server: the failover demo's and tests' "established connection".
type TCPStream struct {
	conn   net.Conn
	echo   *TCPEcho
	start  time.Time
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	result TCPStreamResult
	gaps   GapMeter
	ended  time.Duration
	errMu  sync.Mutex
	err    error
	reset  bool
}

// streamByte is the pattern byte at stream offset i (251 is prime, so the
// pattern does not line up with chunk sizes).
func streamByte(i int64) byte { return byte(i % 251) }

// StartTCPStream starts a TCP echo server in server, connects from client
// to dst (through the firewalls) and keeps Chunk bytes per Interval
// flowing until Stop or Duration.
func StartTCPStream(client, server *Netns, dst netip.Addr, opts TCPStreamOptions) (*TCPStream, error) {
	if opts.Port == 0 {
		opts.Port = DefaultProbePort
	}
	if opts.Chunk <= 0 {
		opts.Chunk = 1024
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Millisecond
	}
	if opts.Duration <= 0 {
		opts.Duration = 10 * time.Second
	}
	echo, err := StartTCPEcho(server, opts.Port)
	if err != nil {
		return nil, err
	}
	s := &TCPStream{echo: echo, stop: make(chan struct{})}
	if err := client.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, uint16(opts.Port)).String(), 5*time.Second)
		s.conn = c
		return err
	}); err != nil {
		echo.Close()
		return nil, fmt.Errorf("lab: tcp stream from %s to %s: %w", client.Name, dst, err)
	}
	s.start = time.Now()

	s.wg.Go(func() { s.write(opts) })
	s.wg.Go(s.read)
	s.wg.Go(func() {
		t := time.NewTimer(opts.Duration)
		defer t.Stop()
		select {
		case <-t.C:
			s.halt()
		case <-s.stop:
		}
	})
	return s, nil
}

func (s *TCPStream) fail(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	select {
	case <-s.stop:
		return // our own close
	default:
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		s.reset = true
	}
	if s.err == nil {
		s.err = err
	}
}

func (s *TCPStream) write(opts TCPStreamOptions) {
	ticker := time.NewTicker(opts.Interval)
	defer ticker.Stop()
	buf := make([]byte, opts.Chunk)
	var off int64
	for {
		for i := range buf {
			buf[i] = streamByte(off + int64(i))
		}
		n, err := s.conn.Write(buf)
		off += int64(n)
		s.errMu.Lock()
		s.result.Sent = off
		s.errMu.Unlock()
		if err != nil {
			s.fail(err)
			return
		}
		select {
		case <-s.stop:
			return
		case <-ticker.C:
		}
	}
}

func (s *TCPStream) read() {
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := s.conn.Read(buf)
		if n > 0 {
			s.gaps.Observe(time.Since(s.start))
			for i, b := range buf[:n] {
				if b != streamByte(off+int64(i)) {
					s.result.Corrupt = true
				}
			}
			off += int64(n)
			s.result.Echoed = off
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.fail(err)
			}
			return
		}
	}
}

// halt ends the stream once: marks it stopped (later errors are ours) and
// closes the client connection, which ends the writer and reader.
func (s *TCPStream) halt() {
	s.once.Do(func() {
		s.errMu.Lock()
		s.ended = time.Since(s.start)
		close(s.stop)
		s.errMu.Unlock()
		s.conn.Close()
	})
}

// Stop ends the stream now (if Duration has not already) and returns the
// result. It may be called more than once.
func (s *TCPStream) Stop() TCPStreamResult {
	s.halt()
	return s.Wait()
}

// Wait waits for the stream to end (Duration or Stop) and returns the
// result.
func (s *TCPStream) Wait() TCPStreamResult {
	s.wg.Wait()
	s.echo.Close()
	r := s.result
	g := s.gaps
	g.Finish(s.ended)
	r.MaxStall, r.MaxStallFrom = g.Max()
	if s.ended > g.last {
		r.LastEchoAge = s.ended - g.last
	}
	r.Elapsed = s.ended
	s.errMu.Lock()
	r.Err, r.Reset = s.err, s.reset
	s.errMu.Unlock()
	return r
}

// Done is closed when the stream has been stopped (by Stop or Duration).
func (s *TCPStream) Done() <-chan struct{} { return s.stop }

// enableRxTimestamps asks the kernel to stamp every datagram on arrival
// (SO_TIMESTAMPNS): gaps are then measured when replies reached the
// client, not when a possibly starved goroutine got to read them.
func enableRxTimestamps(conn *net.UDPConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("lab: probe socket: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return fmt.Errorf("lab: probe socket: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("lab: SO_TIMESTAMPNS: %w", serr)
	}
	return nil
}

// arrival returns the kernel receive instant from an SCM_TIMESTAMPNS
// control message (struct timespec: int64 seconds, int64 nanoseconds, in
// native byte order) as an offset from start, or the time now if there is
// none.
func arrival(oob []byte, start time.Time) time.Duration {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		data := oob[unix.CmsgLen(0):l]
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(data[8:16]))
			return time.Unix(sec, nsec).Sub(start)
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return time.Since(start)
}
