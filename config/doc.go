// Package config is the muros-had configuration: the YAML file behind the
// MurOS /ha form (SPEC.md, "What the operator configures"), decoded
// strictly, filled with defaults and validated, plus Render, which writes
// the keepalived.conf / conntrackd.conf fallback.
//
// Standards: YAML 1.2 as implemented by go.yaml.in/yaml/v3; VRRP limits from
// RFC 9568 (VRRPv3: VRID 1..255, 12-bit advert interval in centiseconds, so
// 10ms..40.95s) and RFC 3768 (VRRPv2: 8-bit whole seconds, used by
// auth: keepalived-ah); the rendered files follow keepalived.conf(5) of
// keepalived 2.2.7 and conntrackd.conf(5) of conntrack-tools 1.4.7.
//
// # Render
//
// Render needs one fact the file does not hold: this node's IPv4 address on
// the sync link (conntrackd's IPv4_interface; without it conntrackd joins
// the group on the default route's interface). keepalived has no VRRPv3
// authentication, so auth: ah renders unauthenticated VRRPv3 and says so in
// the file and in Rendered.Notes; keepalived-ah renders auth_type AH with the
// first 8 bytes of the password, the only bytes keepalived uses.
//
// # File format
//
// Required keys (exactly the form's fields):
//
//	role: master|backup          priority 150|100 on every instance
//	password: STRING             shared secret, 12+ characters (16+ advised)
//	sync_interface: IFNAME       VRRP adverts and conntrack sync
//	peer: IP                     peer management address
//	vips:                        at least one
//	  - interface: IFNAME        one VIP per interface and address family
//	    address: IP/LEN          IPv4 or IPv6 (IPv6 needs VRRPv3)
//	    vrid: 1..255             optional
//
// Optional keys and defaults:
//
//	advert_interval: 1s          10ms..40.95s, multiple of 10ms; whole 1s..255s with keepalived-ah
//	auth: ah                     ah | keepalived-ah | none
//	preempt: true
//	preempt_delay: 0s            0..1000s
//	garp: {repeat: 5, interval: 10ms, refresh: 0s}
//	vmac: false
//	checksum_mode: pseudo-header pseudo-header | message-only
//	state_dir: /var/lib/muros-had
//	run_dir: /run/muros-had
//	status: {listen: <run_dir>/status.sock}     absolute socket path or IP:port
//	  http: (off)                 IP:port of the read-only page (GET /, GET
//	                              /status, /metrics) for a browser; no
//	                              authentication: loopback only unless
//	  http_allow_remote: false    is true
//	metrics: {enabled: true, listen: 127.0.0.1:9732}
//	conntrack:
//	  enabled: true
//	  group: 225.0.0.50          IPv4 multicast, or IPv6 (e.g. ff02::3780)
//	  port: 3780
//	  filter: {exclude_local: true, include: [], exclude: [], protocols: [tcp, udp]}
//	  resync: {startup_timeout: 30s, interval: 0s}
//	                             startup_timeout bounds the preemption hold's
//	                             wait for conntrack only; the wait for the live
//	                             master's DB content (dbsync) is not bounded
//	dbsync:
//	  enabled: true
//	  listen: ":7443"
//	  peer_port: 7443
//	  paths: [/var/lib/muros/db, /var/lib/kea]
//	  exclude: []                globs of files under paths that stay on each
//	                             node, besides *.pid: without a slash a base
//	                             name at any depth, with one the path under the
//	                             replicated directory or a directory above the
//	                             file (path.Match; "*" does not cross a slash);
//	                             absolute, "..", empty elements and bad syntax
//	                             refused (Kea: the lease file replicates,
//	                             kea-dhcp4-*.conf carrying a node's name not)
//	  tls: {cert: <state_dir>/tls/cert.pem, key: <state_dir>/tls/key.pem, peer_sha256: ""}
//	                             cert/key: the peer listener's identity (PEM; RSA of
//	                             2048+ bits, ECDSA P-256/P-384/P-521 or Ed25519,
//	                             refused otherwise); at the defaults generated (or
//	                             taken from <state_dir>/dbsync of older versions,
//	                             pin kept) when absent, elsewhere they must exist;
//	                             `muros-had fingerprint` prints the pin;
//	                             peer_sha256 absent: Load reads the pin from
//	                             <state_dir>/tls/peer.sha256 (`muros-had pair`
//	                             writes it) when that file exists
//	  jwt: {secret_file: <state_dir>/jwt.secret, algorithm: HS256, ttl: 60s,
//	        issuer: muros-had-<role>, audience: muros-had-<peer role>,
//	        leeway: 5s}          1s..1m: clock skew a token check tolerates;
//	                             the pair needs NTP (beyond it one node
//	                             refuses the other's tokens)
//	  clock_skew_warn: 1s        10ms..1m: the peer's clock offset, measured
//	                             from its answers (status, metrics), is
//	                             warned about above this
//	  limits:                    clients not proved to be the peer (its pinned
//	                             certificate; its address is never refused for
//	                             connections), counted at accept by source
//	                             address (IPv6: per /64); refusals counted by reason
//	    connections: 64          1..4096 open together, all such clients
//	    connections_per_source: 8  2..connections, from one address
//	    rate_per_source: 10      1..1000 new connections and requests per second
//	    burst_per_source: 20     1..10000
//	peer_check:
//	  interval: 2s               200ms..1m: poll of the peer's GET /api/health
//	                             (role, readiness, ruleset fingerprint; needs dbsync)
//	  ruleset_interval: 10s      0 (off) or 200ms..1h: nft ruleset fingerprint
//	scheduling:
//	  policy: rr                 rr | fifo (real-time) | other (time-sharing)
//	  priority: 40               rr, fifo: 1..99 (below threaded IRQs at 50)
//	  nice: 0                    other: -20..19
//	checks:                      health checks, none by default (checks.go)
//	  - name: NAME               a-z 0-9 _ -, 1..32, unique: a metric label
//	    command: [/ABS/PROG, ARG...]  exit 0 is OK; or
//	    ping: {address: IP, interface: IFNAME}  an ICMP echo through IFNAME; or
//	    process: NAME            /proc/PID/comm, 1..15 bytes; or
//	    file: {path: /ABS, exists: true}  present (true) or absent (false)
//	    interval: 2s             200ms..1h
//	    timeout: 1s              default min(1s, interval/2); below interval
//	    rise: 2                  1..100 successes in a row to turn OK
//	    fall: 2                  1..100 failures in a row to turn failing
//	    effect: fault            required: fault | {weight: N}, N in -253..253, not 0
//	hooks:                       none by default; each list at most 16 entries
//	  master: []                 after the VIPs are claimed
//	  backup: []                 after the release (or before: before_release)
//	  fault: []                  entering FAULT, same order as backup
//	  stop: []                   the daemon stops, same order as backup
//	  # an entry:
//	  - command: [/ABS/PROG, ARG...]  argv, no shell; or
//	    unit: NAME.service       systemctl start (master) | stop (other lists)
//	    timeout: 30s             100ms..10m; then SIGTERM, SIGKILL 5s later
//	    before_release: false    not in master; the release waits for it
//
// Durations are Go duration strings with a unit ("1s", "100ms"); a bare
// number is rejected rather than guessed. Nothing is hard-wired: sockets,
// locks and key files derive from run_dir and state_dir, so several daemons
// can share a host in separate network namespaces.
//
// # VRID defaults
//
// An entry without vrid gets 10 + its position in the list (10, 11, 12 ...),
// regardless of explicit vrid values elsewhere: editing one entry never
// renumbers another VIP. A collision between an explicit and a defaulted VRID
// is an error naming both entries; the fix is an explicit vrid.
//
// # Problems
//
// Besides types and ranges, Parse checks across keys: one VIP per interface and family,
// unique VIP addresses and VRIDs, VIPs that are host addresses (not network,
// broadcast, multicast, loopback), a peer that is not a VIP, keepalived-ah
// limits (whole-second interval, IPv4 only), TCP listeners (status,
// metrics, dbsync) that would bind the same port, the password and the
// replicated paths.
//
// The password keys every advert's HMAC and, whatever auth says, the
// conntrack sync's, so one captured packet lets an attacker test guesses
// offline: a placeholder (anything containing "change-me", "replace-me",
// "generate me" or "openssl rand", however spelled) and fewer than 12
// characters are refused; fewer than 16, or fewer than 8 different
// characters, are warned about.
//
// dbsync.paths follow the rules of package replpath, which dbsync
// applies again at start: absolute, not "/", distinct last components (the
// wire name), none inside another, and none covering the daemon's own
// files: state_dir, run_dir and /etc/muros-had (nor inside them), the
// configuration file and its directory, the TLS certificate and key, the
// JWT secret and the status socket. Copied to the backup, those would give
// it the master's keys and role: master configuration. Paths beside the
// file in a directory other than /etc/muros-had are allowed (it may be /etc
// or a lab node's directory). Parse compares text; the daemon's start
// follows symlinks first (Config.CheckReplicatedPaths), and check warns
// about what that start would refuse on the machine it runs on.
//
// LoadForClient skips the password and replicated-path checks, which only
// guard a daemon's start: status, token and fingerprint work with a file a
// running daemon predates.
//
// Parse reports every problem, not the first, as Problems (an error): one
// line each, "FILE:LINE: KEY: message", sorted by line. Decoding is by hand
// over yaml.Node so unknown keys, keys set twice, wrong types and bad values
// all carry their line. Some findings are warnings (Config.Warnings) rather
// than errors:
//   - a VIP on the sync interface (allowed: the sync link may be a VLAN of
//     the LAN, but adverts and sync then share that LAN);
//   - auth: none (any host on the sync link can take the VIPs with a
//     forged advert; the conntrack sync stays authenticated);
//   - keepalived-ah, whose VRRP key is the first 8 bytes of the password
//     only (keepalived's HMAC-MD5-96 scheme; ours does the same to
//     interoperate): at most 64 bits however long the password, while the
//     conntrack sync still uses all of it;
//   - a password shorter than 16 characters or of fewer than 8 different ones.
package config
