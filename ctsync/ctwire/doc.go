// Package ctwire is the muros-had conntrack synchronisation wire protocol,
// version 2: the datagrams one node multicasts to its peer on the sync link
// so that the peer's kernel connection-tracking table mirrors its own.
//
// Standards: the transport is UDP over IPv4 multicast (RFC 1112; group
// 225.0.0.50 by default, TTL 1 so datagrams never leave the sync link) or
// over IPv6 multicast (RFC 4291 section 2.7; a link-local group such as
// ff02::3780 with hop limit 1, sent from the sync interface's link-local
// address). The datagrams are the same on both. Every
// datagram is authenticated with HMAC-SHA-256 (RFC 2104, FIPS 180-4)
// truncated to 128 bits (the truncation rule of RFC 4868 section 2.3), keyed
// as described under Keys. The protocol itself is our own; conntrackd's
// (which is not authenticated) is not spoken.
//
// # Keys
//
// Version 2 of the protocol is keyed with KeyFrom(master): HKDF-Expand-
// SHA-256 (RFC 5869 section 2.3) of the Argon2id master secret that
// package kdf stretches from the cluster password once per process (RFC
// 9106 second option: t=3, 64 MiB, p=4), info "muros-had ctsync
// hmac-sha256-128 v2", 32 bytes. The VRRP AH key is expanded from the same
// secret with its own label, so the keys differ; a captured datagram costs
// an offline guesser one Argon2id run per password tried. DeriveKey is the
// same key from the password (it stretches it itself).
//
// Version 1 was keyed with HKDF-SHA-256 of the password itself (salt
// "muros-had", info "muros-had ctsync hmac-sha256-128 v1", no stretching:
// LegacyKey). The key changed together with the protocol version: a
// version-1 node accepts no version-2 datagram whatever the key (it
// refuses the version byte; with the new key it already fails the MAC and
// counts "mac"), so a pair upgraded one node at a time has no conntrack
// sync until both run version 2, and there is nothing to fall back to. A receiver with Auth.WithLegacy counts a
// version-1 node's authentic datagrams as "version" (not "mac": the peer
// is not a forger); none is accepted and version 2 never sends with the
// version-1 key.
//
// All integers are big-endian (network byte order).
//
// # Datagram
//
//	offset size field
//	0      1    version      = 2 (version 1 had no handshake; each
//	                         side counts the other's datagrams as
//	                         rejected "version")
//	1      1    type         1 DATA, 2 HEARTBEAT, 3 NACK, 4 RESYNC (request),
//	                         5 ECHO (answer to a RESYNC)
//	2      2    flags        bit 0 BULK_BEGIN, bit 1 BULK_END, bit 2 BULK
//	                         (record belongs to a bulk resync), bit 3 REPAIR
//	                         (retransmission; aux names the repaired seq)
//	4      8    epoch        sender incarnation: max(start time in Unix
//	                         nanoseconds, the node's last epoch + 1),
//	                         the last one persisted, so it only grows
//	                         across restarts even with the clock behind;
//	                         "last" also covers a floor the peer reported
//	                         (see Handshake)
//	12     4    seq          per-sender datagram sequence number, +1 for
//	                         every datagram of any type, starting at 1
//	16     4    aux          REPAIR: the seq this datagram repairs; else 0
//	20     8    sent         sender's wall clock at send, Unix nanoseconds
//	                         (lag estimate only; never used for ordering)
//	28     2    count        number of records in the payload
//	30     2    length       payload length in bytes
//	32     len  payload      DATA: count flow records;
//	                         NACK: count ranges of 8 bytes (first seq u32,
//	                         last seq u32, inclusive);
//	                         RESYNC, ECHO: a handshake (count = 0,
//	                         length = 24, below);
//	                         HEARTBEAT: empty (count = length = 0)
//	32+len 16   mac          HMAC-SHA-256-128 over bytes [0, 32+len)
//
// A datagram is never larger than the sync link's MTU minus the IP and UDP
// headers (28 bytes over IPv4, 48 over IPv6); the sender packs as many
// records as fit.
//
// # Flow record (in DATA payloads)
//
//	offset size field
//	0      2    length       record length in bytes, this field included
//	                         (lets later versions append fields)
//	2      1    op           1 UPDATE (create or update), 2 DESTROY
//	3      1    family       4 (IPv4) or 6 (IPv6)
//	4      1    protocol     IP protocol number (6 TCP, 17 UDP, 1 ICMP ...)
//	5      1    present      bit 0 TCP block present, bit 1 labels present
//	6      2    zone         conntrack zone (CTA_ZONE)
//	8      4    status       conntrack status bits (CTA_STATUS, IPS_*)
//	12     4    timeout      seconds the receiver installs (CTA_TIMEOUT)
//	16     4    mark         connmark (CTA_MARK)
//	20     A    orig src     A = 4 (IPv4) or 16 (IPv6)
//	20+A   A    orig dst
//	20+2A  2    orig sport   ICMP: identifier
//	22+2A  2    orig dport   ICMP: type << 8 | code
//	24+2A  A    reply src    the reply tuple encodes NAT: reply dst differs
//	24+3A  A    reply dst    from orig src after source NAT, reply src from
//	24+4A  2    reply sport  orig dst after destination NAT
//	26+4A  2    reply dport
//	28+4A       optional blocks, in this order:
//	  TCP (8 bytes, present bit 0):
//	      state u8 (TCP_CONNTRACK_*), wscale orig u8, wscale reply u8,
//	      flags orig u8, flags reply u8 (IP_CT_TCP_FLAG_*), 3 zero bytes
//	  labels (16 bytes, present bit 1): the 128-bit connlabel set
//
// An IPv4 UDP record is 44 bytes, an IPv4 TCP record 52 bytes.
//
// # Handshake (RESYNC and ECHO payloads)
//
//	offset size field
//	0      16   nonce        RESYNC: random, drawn by the backup each time
//	                         it stops trusting what it hears (start, switch
//	                         to backup, a new or an older epoch after
//	                         silence); ECHO: the nonce of the RESYNC it
//	                         answers
//	16     8    floor        the highest epoch the writer has accepted
//	                         from the reader's node (0: none); the reader's
//	                         next epochs start above it
//
// The backup applies records only from the incarnation (epoch) that sent
// the ECHO of its current nonce: a captured datagram replayed later cannot
// answer a nonce drawn after it. Rules and recovery: package ctrel.
//
// # Key
//
// A flow is identified by its original tuple, protocol and zone (Key): the
// sender coalesces queued updates of one flow by key and the receiver looks
// flows up by it. Rejected input is reported as a Reason so callers count it.
package ctwire
