// Package liveness is muros-had's peer liveness protocol: the two daemons
// of a pair tell each other, over more than one path, that they are alive
// and in which role, so that a backup takes over within milliseconds when
// its master dies, and never while any path still hears the master. VRRP
// (RFC 9568) cannot do either: its backup learns of a dead master only from
// three missing adverts plus a skew, and it has one path, the link the
// adverts travel on.
//
// The protocol is our own. Its transport is UDP: on the sync link to a
// multicast group (RFC 1112; 225.0.0.51 by default, TTL 1, or an IPv6
// link-local group such as ff02::3781 with hop limit 1), and on the second
// path by unicast to the peer's address off the sync link (its management
// address, or its address on a VIP interface), never flooded to a LAN.
// Every message is authenticated with HMAC-SHA-256 (RFC 2104) truncated to
// 128 bits (RFC 4868 section 2.3), keyed with HKDF-Expand-SHA-256 (RFC 5869)
// of the Argon2id master secret (package kdf) under the label
// "muros-had liveness hmac-sha256-128 v1", so the key differs from the
// VRRP AH and conntrack sync keys.
//
// # Message
//
// Every message is 96 bytes; integers are big-endian.
//
//		 0                   1                   2                   3
//		 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//		+---------------+---------------+---------------+---------------+
//		|  version = 1  |     type      |     path      |     role      |
//		+---------------+---------------+---------------+---------------+
//		|   priority    |     flags     |           reserved (0)        |
//		+---------------+---------------+-------------------------------+
//		|                 epoch (sender incarnation, 64)                |
//		|                                                               |
//		+---------------------------------------------------------------+
//		|                 seq (sender sequence number, 64)              |
//		|                                                               |
//		+---------------------------------------------------------------+
//		|                 echo epoch (the receiver's, 64)               |
//		|                                                               |
//		+---------------------------------------------------------------+
//		|                 echo seq (the receiver's, 64)                 |
//		|                                                               |
//		+---------------------------------------------------------------+
//		|            interval (sender's heartbeat period, µs)           |
//		+---------------------------------------------------------------+
//		|                         reserved (0)                          |
//		+---------------------------------------------------------------+
//		|                                                               |
//		|     VRIDs the sender runs: bitmap of 256 bits (32 bytes),     |
//		|     bit v = byte v/8, mask 0x80 >> v%8                        |
//		|                                                               |
//		+---------------------------------------------------------------+
//		|                                                               |
//		|        HMAC-SHA-256-128 over bytes 0..79 (16 bytes)           |
//		|                                                               |
//		|                                                               |
//		+---------------------------------------------------------------+
//
//	  - type: 1 HEARTBEAT (periodic), 2 PROBE ("are you alive?", answered at
//	    once), 3 REPLY (the answer to a PROBE, or to a peer that has not yet
//	    heard us), 4 LEAVING (the sender stops gracefully: claim now).
//	  - path: the path the sender sent it on (1 sync link, 2 peer address);
//	    a message that arrives on another path is refused.
//	  - role: the sender's role (1 INIT, 2 BACKUP, 3 MASTER, 4 FAULT) and its
//	    effective priority.
//	  - flags: bit 0 SYNC_CARRIER, the sender's sync link has carrier;
//	    other bits are a later release's and are ignored, not refused.
//	  - epoch: random at every start of the sender (a random value needs no
//	    clock and no stable storage, and two starts never share one); seq
//	    counts every message the sender sends, on every path, from 1.
//	  - echo epoch and seq: the newest message the sender has received from
//	    the receiver. A message is fresh when it echoes a sequence number the
//	    receiver sent recently: only a live peer can write one, so a
//	    recorded message replayed later proves nothing.
//	  - interval: how often the sender sends HEARTBEATs on this path now
//	    (a master sends fast on the sync link, or at its quiet period while
//	    it receives nothing on its VIP interfaces; everything else is
//	    idle). The receiver probes after one and a half of these, or half
//	    the detection time if that is longer.
//	  - VRIDs: the VRRP instances the sender runs. A muros-had node is
//	    master of all of its instances or of none (one sync group), but two
//	    nodes may run different sets for a while (a rolling reload that
//	    adds a VIP): "the peer is alive as master" holds only for the
//	    VRIDs it runs.
//
// # Replay
//
// A receiver adopts a peer epoch only from a fresh message, and then
// accepts only a higher seq in it. A replayed or reordered message is
// refused (counted "replay"); a message of an epoch not yet adopted that is
// not fresh is answered (REPLY) but is not evidence of life: it is how a
// restarted peer and a restarted receiver meet.
//
// # Verdicts
//
// Monitor is the pure state machine of one node's view of its peer. The
// peer is alive while any path has brought an accepted message within the
// detection time; it is dead when every path has been silent for the
// detection time and the second path has been asked (a PROBE outstanding
// for at least half the detection time): a crash, or a hang with every
// packet dropped. A sync link without carrier is silent at once, so on a
// direct cable a dead master is declared after the probe's half only. A
// LEAVING peer has left. The verdicts are edges: "dead" is said once per
// death, which is what lets a peer that stops speaking the protocol (a
// downgrade) fall back to plain VRRP instead of flapping. A peer that never
// speaks it (keepalived, a router) gets no verdict at all: the protocol is
// negotiated, not assumed. Paths have alarms of their own: a path silent
// for three idle intervals (or a sync link without carrier) is down, and
// up again at its next message.
//
// # Quiet master
//
// Fast heartbeats cost each node a thousand packets and thread wakeups a
// second, and buy a takeover within milliseconds that nobody notices while
// no packet crosses the firewall. A master with a quiet period
// (Config.Quiet) that has seen no traffic for Config.QuietAfter heartbeats
// at that period instead, and is fast again within one quiet period of a
// stream (more than 8 packets in a second on its VIP interfaces, less the
// peer's own liveness messages, counted from the interfaces' statistics by
// RxCounter) or of a PROBE. The receiver reads the period from the
// interval field: its probe time follows, and a late quiet heartbeat
// teaches its adaptive detection what a late fast one would. A quiet
// period may be longer than VRRP's Master_Down_Interval: the backup's
// VRRP tells its monitor when the adverts have been missing that long
// (EventConfirm), and until the master speaks again it is watched as a
// fast one (probed after half the detection time of silence) instead of
// waiting for a quiet heartbeat to go missing. A receiver
// of an earlier release ignores the field and probes after half its
// detection time; the first probe makes the master fast, and it stays
// fast while the probes go on, as before quiet masters existed. BFD's
// demand mode (RFC 5880 section 6.6) trades the same way.
//
// A node's heartbeats on its two paths leave together when their periods
// allow: each costs a thread wake-up at both ends, and a quiet master's
// 50 ms and 100 ms beats would otherwise sit at whatever offset the quiet
// period began at, 30 send instants a second instead of 20. A heartbeat
// that is due takes the other path's along if that one is due within a
// quarter of its own period (and within the due one's); one that went
// alone moves its next beat, once and earlier, onto the other path's
// schedule when that period is a multiple of its own. No heartbeat goes
// later than due.
package liveness
