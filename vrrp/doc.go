// Package vrrp implements the Virtual Router Redundancy Protocol wire
// format and its authentication for muros-had: VRRPv3 (RFC 9568, which
// obsoletes RFC 5798; packet format in section 5) over IPv4 and IPv6,
// VRRPv2 (RFC 3768, section 5) over IPv4, and the IP Authentication Header
// (RFC 4302) in two schemes: keepalived's, byte for byte, and muros-had's
// own HMAC-SHA-256-128 with a restart-safe anti-replay counter. The state
// machine lives in fsm*.go / group*.go of this package.
//
// The codec is a functional core: ParseAdvert / AppendAdvert, ParseIPv4 /
// AppendIPv4, ParseIPv6 / AppendIPv6, ParseAH, and the Codec that ties them
// together (Codec.Decode, Codec.DecodeIPv6Payload, Codec.Inspect,
// Codec.AppendPacket). Decoding into a caller-reused address slice and
// appending into a caller-reused buffer allocate nothing (benchmarks and
// TestHotPathAllocs). Every rejected input is an *Error whose Reason is a
// counter label (ReasonOf); nothing panics on network input (fuzzed).
// A Codec holds HMAC state, so it is not safe for concurrent use.
//
// # VRRP advertisement (RFC 9568 section 5.2, RFC 3768 section 5.3)
//
// All fields big-endian. Bytes 0..7 are common to both versions:
//
//	byte 0     version (high nibble: 2 or 3) | type (low nibble: 1 = ADVERTISEMENT)
//	byte 1     VRID (1..255)
//	byte 2     priority (0 = master leaving, 255 = address owner)
//	byte 3     count of addresses (n)
//	bytes 4-5  v3: 4 reserved bits (0 on send, ignored on receive) + 12-bit
//	           max advertisement interval in centiseconds (1..4095)
//	           v2: byte 4 auth type (0 none, 1 simple password, 2 IPsec AH),
//	           byte 5 advertisement interval in whole seconds (1..255)
//	bytes 6-7  checksum
//	bytes 8..  n addresses: 4 bytes each over IPv4, 16 bytes each over IPv6
//	v2 only:   8 bytes of authentication data after the addresses: the
//	           password zero-padded for type 1, zeros otherwise
//
// Length is exactly 8 + 4n (+8 for v2) or 8 + 16n; anything else is
// ReasonLengthMismatch. v2 over IPv6 is ReasonV2IPv6; an interval of zero
// is ReasonBadInterval.
//
// Checksum: the 16-bit one's complement of the one's complement sum of the
// message with the checksum field zeroed (RFC 1071). VRRPv3 prefixes the
// pseudo-header (RFC 9568 section 5.2.8): for IPv4 source (4), destination
// (4), zero (1), protocol 112 (1), VRRP length (2); for IPv6 (RFC 8200
// section 8.1) source (16), destination (16), VRRP length (4), zero (3),
// next header 112 (1). VRRPv2 sums the message alone, and so does
// keepalived's v3_checksum_as_v2 option for VRRPv3 over IPv4 (what some
// routers send): ChecksumModeMessageOnly selects it, ChecksumModeEither
// accepts both and Received.Checksum says which matched. IPv6 always uses
// the pseudo-header. With AH the pseudo-header protocol is still 112.
//
// # IP headers
//
// Adverts are sent with full headers (IP_HDRINCL) because AH signs the
// IPv4 header. AppendPacket writes, IPv4 (RFC 791):
//
//	byte 0 0x45 (version 4, IHL 5)   byte 1 TOS 0xc0     bytes 2-3 total length
//	bytes 4-5 ID (low 16 bits of the AH sequence; never 0 with AH, because
//	the kernel replaces a zero ID under IP_HDRINCL and the ICV would break)
//	bytes 6-7 flags/fragment 0       byte 8 TTL 255      byte 9 protocol 112 or 51
//	bytes 10-11 header checksum      bytes 12-15 source  bytes 16-19 destination
//
// and IPv6 (RFC 8200): version 6, traffic class 0xc0, flow label 0, payload
// length, next header 112 or 51, hop limit 255, source, destination. An
// IPv6 raw socket sends and receives only the payload (bytes 40..): use
// DecodeIPv6Payload with the source address, IPV6_PKTINFO destination and
// IPV6_HOPLIMIT from the control messages; do not set IPV6_CHECKSUM, the
// codec fills the checksum. ParseIPv4 drops link-layer padding beyond the
// total length and rejects fragments and bad header checksums.
//
// # IPsec AH (RFC 4302 section 2)
//
//	byte 0      next header: 112 (VRRP)
//	byte 1      payload length: AH length in 32-bit words minus 2
//	bytes 2-3   reserved: 0 (AHKeepalived); AHSHA256: the key version
//	            (0 or 1: version-1 key, 2: version-2 key; see below)
//	bytes 4-7   SPI
//	bytes 8-11  sequence number
//	bytes 12..  ICV (+ padding)
//
// AHKeepalived (auth: keepalived-ah, VRRPv2 over IPv4 only): 24-byte AH,
// payload length 4, SPI = the sender's IPv4 source address, 12-byte ICV =
// HMAC-MD5 (RFC 2104) truncated to 96 bits, keyed with the password cut or
// zero-padded to 8 bytes, over: the IPv4 header (with options) with TOS,
// flags/fragment offset and header checksum zeroed and the TTL zeroed only
// for unicast peers (kept, i.e. 255, for multicast), then the AH header
// with a zero ICV, then the VRRPv2 advert (auth type 2, zero auth data).
// The receiver also requires SPI == source address. These are the rules of
// keepalived 2.2.7 vrrp.c (vrrp_build_ip4, vrrp_build_ipsecah,
// vrrp_update_pkt, vrrp_in_chk_ipsecah); TestKeepalivedCaptures re-encodes
// keepalived's own packets byte for byte, the captures in testdata/pcaps
// verify (multicast and unicast), and TestLabKeepalivedAcceptsOurAH shows
// a running keepalived accepting ours.
//
// AHSHA256 (auth: ah, the default, VRRPv3 over IPv4 and IPv6): 32-byte AH,
// payload length 6 (16-byte ICV then 4 zero bytes, so that the header is a
// multiple of 8 bytes as IPv6 requires; the padding must be zero),
// SPI = the sender epoch (>= 256; 1..255 are reserved by RFC 4302), ICV =
// HMAC-SHA-256 truncated to 128 bits, keyed with the key the reserved
// field names, computed over the IP header with the mutable fields zeroed
// (IPv4: TOS, flags/fragment, TTL, header checksum; IPv6: traffic class,
// flow label, hop limit), the AH header (reserved field included) with a
// zero ICV field, then the VRRPv3 advert. Comparison is constant time
// (hmac.Equal).
//
// # Key versions (AHSHA256)
//
// Version 2 (Config.Master): HKDF-Expand-SHA-256 of the Argon2id master
// secret (package kdf: t=3, 64 MiB, p=4, derived once per process), info
// "muros-had vrrp ah hmac-sha256-128 v2", 32 bytes. A captured advert then
// costs an attacker one Argon2id run per password guess. Version 1 (what
// muros-had sent before): HKDF-SHA-256 of the password, salt "muros-had",
// info "muros-had vrrp ah hmac-sha256-128 v1", no stretching.
//
// The AH reserved field (bytes 2-3, inside the ICV) carries the version:
//
//	0  version-1 key; the sender knows only version 1 (older muros-had,
//	   which always sent 0 and ignores the field on receive)
//	1  version-1 key; the sender also speaks version 2 (fallback)
//	2  version-2 key
//	3+ refused (ReasonAuthFailed)
//
// A receiver checks the ICV with the key the field names, so it accepts
// both versions; Received.KeyVersion and PeerSpeaksV2 report what it saw.
// A sender signs with version 2 unless PeerKeys says the peer's latest
// accepted advert (after the replay check) carried 0; it then signs with
// version 1 and sets 1, which an older node accepts (it ignores the field)
// and which tells an upgraded peer that it may use version 2. Because the
// field is inside the ICV, moving a packet to another version needs the
// key; the only way to force the fallback is an authentic version-0 advert,
// i.e. the password or a replay the replay check lets through (see
// Anti-replay: only while the peer is silent, from an epoch never
// accepted), and a fallback exposes nothing the attacker's captured
// version-1 advert did not already.
//
// Upgrading a pair one node at a time: an upgraded node hears its old
// peer's 0 and falls back, so every advert either node sends is accepted
// by the other throughout. Once both are upgraded, the first advert an
// upgraded node hears from the other (1 or 2) ends the fallback. A backup
// sends no adverts, so a master that fell back keeps version 1 until it
// hears its peer again: at the next failover or preemption, or when it
// restarts (a node starts at version 2). A freshly started upgraded node
// that becomes master before hearing an old peer (e.g. priority 255, or a
// peer that is not running) sends version 2, which an old peer cannot
// check: it takes over after its Master_Down_Interval, its first advert
// reaches the upgraded node, which falls back and, as the higher priority,
// is master again one interval later.
//
// VRRPv2 simple password (auth type 1, keepalived's PASS) is decoded and
// checked in constant time against the password cut / zero-padded to 8
// bytes; it is interop and inspection only, not security.
//
// # Anti-replay
//
// keepalived 2.2.7 (vrrp.c): one counter per instance, ipsecah_counter,
// serves both directions. It starts at 0 when keepalived starts (it is kept
// across a reload only); the sender increments it before every advert, so
// a fresh process sends 1, 2, 3, ... The receiver accepts an AH advert
// only if its sequence is strictly greater than that same counter and then
// stores it; a master receiving a lower-priority advert sets the counter to
// that sequence + 1. The SPI never changes (the source address), so
// nothing tells a restart from a replay. The bug: a node restarted while
// its peer still holds the counter (crash or quick restart of a master;
// with "state MASTER" keepalived goes master about one interval after
// start, before the peer's Master_Down_Interval expires) sends 1, 2, 3, ...,
// all at or below the peer's counter, so the peer drops them as replays,
// declares the master down and takes over: both nodes are master and the
// VIPs move, until the peer's own higher sequence numbers reach the
// restarted node, which adopts them (lower-priority advert rule) and whose
// next adverts pass again; then the VIPs move back. A needless double
// failover after every such restart. TestLabKeepalivedAcceptsOurAH
// reproduces the drop against the real keepalived ("sequence number 1
// already processed").
//
// AHSHA256 closes it with an epoch in the SPI. The sender keeps an
// AHCounter: NewAHCounter sets Epoch = max(unix seconds, persisted epoch + 1)
// (the caller persists Epoch under its state directory), sequence numbers
// restart at 1 within an epoch, and when 2^32-1 adverts are used up (497
// days at 10 ms) Next moves to a new, larger epoch. The receiver keeps one
// ReplayState per peer and accepts iff epoch > last epoch, or same epoch and
// sequence > last sequence. A restarted sender is accepted from its first
// advert (its epoch is larger), and nothing sent under an older epoch is
// ever accepted again. Limits: a receiver that itself restarts accepts the
// first authenticated advert it sees (persist ReplayState to close that);
// epochs are uint32 seconds, valid until 2106.
//
// A sender whose persisted epoch is lost (or a corrupt file the daemon then
// refuses to start with, until removed) starts from its clock alone; with
// the clock behind, its epoch is below what the receiver remembers, and a
// receiver that refused it for ever would leave both nodes MASTER. So
// ReplayState.AcceptAt takes the receiver's time and a silence window (the
// daemon passes the instance's Master_Down_Interval): an epoch at or below
// the largest one accepted, and not one the peer has left, is accepted once
// nothing from that peer was accepted for the window; before that it is
// ReasonAHEpochBehind. Replays stay excluded within the window (an epoch
// above the maximum cannot have been captured, since every advert sent was
// delivered and raised the maximum), and epochs left before (the last
// ReplaySeenEpochs) are never accepted again; what remains is a capture of
// an epoch this receiver never accepted, replayed while the real peer is
// silent, i.e. already declared down. A restart with the clock behind costs
// at most one Master_Down_Interval of double MASTER (vrrpsim
// TestAHEpochStepBackNoSplitBrain), instead of lasting until the peer
// restarts.
//
// keepalived-ah cannot change the SPI, so AHCounter.NextKeepalived seeds
// every sequence number with a time floor: seq = max(previous + 1,
// half-seconds since 2024-01-01), capped at 0xFFFFFFFD (keepalived treats
// larger values as a wrapped counter). A keepalived peer's counter can only
// hold numbers we sent (each at most the floor at that time as long as we
// send no more than 2 adverts per second on average, true for VRRPv2's
// whole-second intervals) plus at most one per second it sent itself while
// master. A restart that takes longer than half a second therefore starts
// above everything the peer can hold, without any persisted state, and the
// floor lasts until 2092. Receiving from a keepalived peer we use
// ReplayState with its fixed SPI, i.e. keepalived's own rule; a restarted
// keepalived peer is then dropped until it resynchronises as described
// above, exactly as between two keepalived nodes.
package vrrp
