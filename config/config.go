package config

import (
	"net/netip"
	"time"
)

// Role is the node's place in the pair. It fixes the VRRP priority of every
// instance: the form offers no per-VIP priority, so the pair can never split.
type Role string

// The two roles of the /ha form.
const (
	RoleMaster Role = "master"
	RoleBackup Role = "backup"
)

// AuthMode selects how VRRP adverts are authenticated.
type AuthMode string

const (
	// AuthAH is VRRPv3 inside IPsec AH (RFC 4302) with HMAC-SHA-256-128 keyed
	// from the password. The default.
	AuthAH AuthMode = "ah"
	// AuthKeepalivedAH is keepalived's VRRPv2 AH (HMAC-MD5-96, 8-byte key)
	// for pairing with a keepalived node during a migration. IPv4 only.
	AuthKeepalivedAH AuthMode = "keepalived-ah"
	// AuthNone is plain RFC 9568 VRRPv3 for interop with routers.
	AuthNone AuthMode = "none"
)

// ChecksumMode selects what the VRRPv3 checksum covers. RFC 9568 section
// 5.2.8 includes the IPv4 pseudo-header; some implementations (older
// keepalived, some routers) checksum the VRRP message only.
type ChecksumMode string

// Checksum modes accepted by checksum_mode.
const (
	ChecksumPseudoHeader ChecksumMode = "pseudo-header"
	ChecksumMessageOnly  ChecksumMode = "message-only"
)

// Config is one node's validated configuration. Every field is set: Parse
// fills defaults, so consumers never re-derive them.
type Config struct {
	// File is the name Parse was given, for messages.
	File string
	// ConfigDir is the absolute directory of File when known (Load, or an
	// absolute File): no replicated path may cover it. Not part of the file.
	ConfigDir string `json:"-"`

	Role Role
	// Password is the VRRP authentication secret (and the root of the
	// conntrack sync key). Never logged.
	Password string
	// SyncInterface carries VRRP adverts and conntrack sync.
	SyncInterface string
	// Peer is the peer's management address (DB sync and health).
	Peer netip.Addr
	// VIPs in file order; each has its VRID resolved.
	VIPs []VIP

	AdvertInterval time.Duration
	Auth           AuthMode
	Preempt        bool
	PreemptDelay   time.Duration
	GARP           GARP
	// VMAC gives each instance the RFC 9568 virtual MAC 00-00-5E-00-01-{VRID}
	// (IPv4) / 00-00-5E-00-02-{VRID} (IPv6) through a macvlan.
	VMAC         bool
	ChecksumMode ChecksumMode

	// StateDir holds persistent per-node state (TLS material, JWT secret).
	StateDir string
	// RunDir holds sockets and lock files; distinct per daemon on one host.
	RunDir string

	Status    Status
	Metrics   Metrics
	Conntrack Conntrack
	DBSync    DBSync
	Liveness  Liveness
	PeerCheck PeerCheck
	// Scheduling is the daemon's CPU scheduling policy.
	Scheduling Scheduling
	// Hooks are the programs run at each role transition (hooks.go).
	Hooks Hooks
	// Checks are the health checks, in file order (checks.go).
	Checks []Check

	// Warnings are problems that do not stop the node from running but that
	// the operator should read (check prints them).
	Warnings Problems
}

// VIP is one virtual IP and the VRRP instance that owns it.
type VIP struct {
	Interface string
	// Address is the VIP with its on-link prefix length, as added to Interface.
	Address netip.Prefix
	VRID    uint8
	// VRIDExplicit says the VRID came from the file rather than the default.
	VRIDExplicit bool
}

// GARP controls the gratuitous ARP / unsolicited NA burst a new master sends.
type GARP struct {
	// Repeat is how many announcements per VIP in the burst.
	Repeat int
	// Interval spaces announcements within the burst.
	Interval time.Duration
	// Refresh re-announces periodically while master; 0 disables.
	Refresh time.Duration
}

// Status is the local status listener used by `muros-had status`.
type Status struct {
	// Listen is an absolute path (unix socket) or host:port (TCP).
	Listen string
	// HTTP is IP:port of a TCP listener serving the read-only page (GET
	// /), the document (GET /status) and /metrics to a browser; empty:
	// off. It has no authentication: an address other than loopback is
	// refused unless HTTPAllowRemote.
	HTTP            string
	HTTPAllowRemote bool
}

// Metrics is the local Prometheus listener.
type Metrics struct {
	Enabled bool
	// Listen is host:port. Loopback by default: each namespace has its own.
	Listen string
}

// Conntrack configures connection-tracking replication over SyncInterface.
type Conntrack struct {
	Enabled bool
	// Group is the multicast group of the sync messages: IPv4, or IPv6 (a
	// link-local group such as ff02::3780 for a sync link without IPv4).
	Group netip.Addr
	Port  uint16
	// Filter selects the replicated flows.
	Filter ConntrackFilter
	Resync Resync
}

// Liveness configures the peer-liveness protocol (package liveness): the
// two daemons hear each other on the sync link and on a second path, so a
// backup takes over within milliseconds of its master's death and never
// while any path still hears it. It is negotiated: with a peer that does
// not speak it (keepalived, a router) plain VRRP applies.
type Liveness struct {
	Enabled bool
	// Group is the sync link's multicast group (IPv4, or an IPv6
	// link-local group such as ff02::3781); Port its UDP port, which the
	// second path uses too.
	Group netip.Addr
	Port  uint16
	// Interval is a master's heartbeat period on the sync link.
	Interval time.Duration
	// Detect is how long every path must be silent (the second path
	// probed for half of it) before the peer is dead.
	Detect time.Duration
	// QuietInterval is a master's heartbeat period while it receives
	// nothing on its VIP interfaces for QuietAfter (0: always Interval):
	// a pair that forwards nothing needs no millisecond takeover, and
	// fast heartbeats cost each node a thousand packets and wakeups a
	// second. A stream (more than 8 packets in a second) brings them back
	// within one quiet period. A backup watches a quiet master as a fast
	// one as soon as VRRP's Master_Down_Interval passes without its
	// adverts, so a quiet period longer than that costs a crashed master
	// no more than a probe's wait. Unset:
	// 50 ms (a tenth of QuietAfter if that is shorter), or 0 where that is
	// under twice Interval.
	QuietInterval time.Duration
	QuietAfter    time.Duration
	// PeerAddress is the second path: the peer's address off the sync
	// link (its management address, or its address on a VIP interface).
	// Defaults to Peer; invalid turns the second path off.
	PeerAddress netip.Addr
}

// ConntrackFilter selects which flows are replicated. A flow is replicated
// when its protocol is listed, no endpoint is excluded and, if Include is not
// empty, an endpoint is included.
type ConntrackFilter struct {
	// ExcludeLocal drops flows to or from the node's own addresses (including
	// the VIPs): they belong to the node, not to the traffic it forwards.
	ExcludeLocal bool
	Include      []netip.Prefix
	Exclude      []netip.Prefix
	// Protocols are lower-case names: tcp, udp, sctp, dccp, icmp, icmpv6.
	Protocols []string
}

// Resync controls bulk transfers of the whole table.
type Resync struct {
	// StartupTimeout bounds how long a node entering BACKUP waits for the
	// conntrack bulk sync before it may preempt anyway. It does not bound
	// the wait for the master's DB content: while the master is alive a
	// node whose DB sync cannot complete stays held (and says why).
	StartupTimeout time.Duration
	// Interval schedules periodic full resyncs; 0 disables.
	Interval time.Duration
}

// DBSync configures configuration and file replication over HTTPS.
type DBSync struct {
	Enabled bool
	// Listen is the peer-facing HTTPS listener, host:port.
	Listen string
	// PeerPort is the port of the peer's listener at Peer.
	PeerPort uint16
	// Paths are replicated from master to backup (absolute).
	Paths []string
	// Exclude lists globs of files under Paths that stay local to each
	// node, besides the default *.pid (package dbsync): without a slash a
	// glob matches a file's base name at any depth, with one the file's
	// path relative to its replicated directory or that of a directory
	// above it (path.Match: "*" does not cross a slash).
	Exclude []string
	TLS     TLS
	JWT     JWT
	// ClockSkewWarn: a clock offset from the peer (measured from its
	// answers) above this is warned about.
	ClockSkewWarn time.Duration
	// Limits bound what clients that have not proved to be the peer may
	// hold of the listener (it listens on every interface by default).
	Limits DBSyncLimits
}

// DBSyncLimits bound the DB sync listener for clients other than the
// peer (package dbsync, ListenerLimits): connections are counted at
// accept, by source address (IPv6: per /64), before any TLS handshake;
// a connection that presents the pinned peer certificate stops counting
// against Connections, and the peer's own address is never refused for
// it. Refusals are counted by reason (muros_had_dbsync_rejected_total).
type DBSyncLimits struct {
	// Connections open together that have not proved to be the peer.
	Connections int
	// ConnectionsPerSource open together from one source address.
	ConnectionsPerSource int
	// RatePerSource new connections and unauthenticated requests per
	// second from one source, in bursts of up to BurstPerSource.
	RatePerSource  int
	BurstPerSource int
}

// PeerCheck configures what each node checks of the other besides VRRP:
// the peer's GET /api/health (its role, readiness and ruleset fingerprint;
// needs DB sync, whose HTTPS listener serves it) and this node's nftables
// ruleset fingerprint. A reload (SIGHUP) applies changes in place.
type PeerCheck struct {
	// Interval between polls of the peer's GET /api/health.
	Interval time.Duration
	// RulesetInterval between fingerprints of the local ruleset (also
	// recomputed on SIGHUP); 0 turns the ruleset check off.
	RulesetInterval time.Duration
}

// Scheduling is the daemon's CPU scheduling policy (package
// internal/sched): real-time by default, so adverts leave on time and
// conntrack events are replicated as they happen while time-sharing work
// keeps the CPUs busy. Programs the daemon runs (nft, sqlite3) run
// time-sharing whatever this says. A reload applies changes in place.
type Scheduling struct {
	// Policy: rr (SCHED_RR, default) | fifo (SCHED_FIFO) | other
	// (SCHED_OTHER, time-sharing).
	Policy string
	// Priority is the real-time priority of rr and fifo, 1..99. The
	// default, 40, is below the kernel's threaded interrupt handlers (50),
	// so packet processing keeps precedence over the daemon; softirq work
	// the kernel defers to ksoftirqd (time-sharing) does not, and a
	// real-time daemon busy with a conntrack storm delays it (the kernel's
	// real-time throttling keeps 5 % of each CPU for time-sharing tasks).
	// Where that matters more than adverts on time under load, use other
	// with nice -10 (bench/README.md has the figures of both).
	Priority int
	// Nice is the nice value of other, -20..19.
	Nice int
}

// TLS is the peer HTTPS listener's material.
type TLS struct {
	Cert string
	Key  string
	// PeerSHA256 pins the peer's certificate (SHA-256 of its DER); nil means
	// the certificate is not pinned and JWT alone authenticates the peer.
	PeerSHA256 []byte
	// PeerSHA256File is the pin file (Config.PeerPinFile, written by
	// `muros-had pair`) PeerSHA256 was read from when the file names no
	// peer_sha256; empty otherwise. Not a key of the file.
	PeerSHA256File string `json:"-"`
}

// JWT configures the bearer tokens both directions present.
type JWT struct {
	// SecretFile holds the shared HMAC secret (same file content on both nodes).
	SecretFile string
	// Algorithm is HS256, HS384 or HS512.
	Algorithm string
	TTL       time.Duration
	// Issuer names this node in tokens it mints; Audience names the peer.
	Issuer   string
	Audience string
	// Leeway is the clock skew between the nodes a token check tolerates
	// (iat, nbf, exp); the pair needs NTP, this only absorbs its error.
	Leeway time.Duration
}

// Priority is the VRRP priority of every instance on this node.
func (c *Config) Priority() uint8 {
	if c.Role == RoleMaster {
		return 150
	}
	return 100
}

// Version is the VRRP version spoken: 2 for keepalived-ah (keepalived's AH
// exists only for VRRPv2), otherwise 3.
func (c *Config) Version() int {
	if c.Auth == AuthKeepalivedAH {
		return 2
	}
	return 3
}

// PeerRole is the role the peer is expected to have.
func (c *Config) PeerRole() Role {
	if c.Role == RoleMaster {
		return RoleBackup
	}
	return RoleMaster
}
