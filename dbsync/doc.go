// Package dbsync replicates the MurOS configuration DB and other configured
// paths from the VRRP master to the backup over HTTPS (TLS 1.3, RFC 8446)
// with JSON Web Tokens (RFC 7519, signed per RFC 7515/7518: HS256, HS384 or
// HS512 with a shared cluster secret of at least 32 bytes, or EdDSA/Ed25519
// per RFC 8037 with one key pair per node).
// It replaces the MurOS DB sync agent ("muros-watcher").
//
// # What is replicated
//
// Config.Paths lists files and whole directory trees, each with a Name that
// identifies it on the wire (default: "muros-db" = /var/lib/muros and
// "kea-leases" = /var/lib/kea). Only regular files are replicated; symlinks,
// devices, SQLite sidecars (-wal, -shm, -journal), this package's staging
// files (".muros-had-*") and Config.Exclude globs (default "*.pid"; a glob
// without a slash matches a base name, one with a slash the path relative to
// the replicated directory or a directory above the file) are not. Permission bits
// (0o777), the owner and the modification time travel with the content;
// xattrs, ACLs and the attributes of directories do not (a directory the
// backup creates for a file takes the owner, group and permission bits of
// the directory it is made in, whatever the daemon's umask; not setgid,
// which the unit's RestrictSUIDSGID forbids setting).
// Empty directories are not replicated. Each file is shipped one of three ways:
//
//   - SQLite database (first 16 bytes "SQLite format 3\0"): a consistent
//     snapshot taken with SQLite's online backup API (the sqlite3 CLI's
//     ".backup", read-only, in one read transaction), correct in rollback
//     and WAL mode; never a torn copy of a file in mid-transaction. The
//     backup removes stale -wal/-shm/-journal sidecars when it installs it.
//   - Append-only growth (Kea's memfile lease CSV): when the file is longer
//     than what the peer holds and its first peer-size bytes still hash to
//     the peer's SHA-256, only the appended bytes are sent (OpAppend). The
//     peer re-checks size and prefix hash before applying.
//   - Anything else: the whole file when its content changes (OpPut).
//
// # Ownership
//
// A service on the backup must find its files as it left them on the
// master after a takeover: Kea runs as _kea and must be able to write its
// lease file. Each put and append carries the owner as the master sees it:
// numeric uid and gid and the user and group names its account database
// (os/user: /etc/passwd, /etc/group) gives them, empty when it has none.
// The backup maps a name it knows to its own id and otherwise uses the
// numeric id: the two nodes are identical installs, but a system account's
// id may still differ between them. The staged file is chowned before the
// rename, so the install still swaps in one complete file with the right
// owner; an append is staged the same way (a copy of the current file plus
// the new bytes), so it also repairs a wrong owner. The mtime (nanoseconds)
// is set on the staged file as a courtesy for operators and services that
// look at it; it is not compared. Setting another user as owner needs
// CAP_CHOWN, and reading and writing files and directories of other users
// needs CAP_DAC_OVERRIDE (dist/muros-had.service grants both); mode and
// mtime are set while the daemon still owns the staged file, so no
// CAP_FOWNER is needed. A refused chown does not fail the batch (content
// matters more): the file is installed owned by the daemon, counted
// (Status.Stats "owner_errors") and logged as an error, and anti-entropy
// keeps finding the difference.
//
// # Direction
//
// The daemon calls SetRole with the VRRP role. The master watches the roots
// with fsnotify (recursively, new subdirectories added as they appear; a
// commit that only touches a -wal or -journal file marks its database),
// debounces for Config.Debounce (20 ms; a steady stream of writes is pushed
// at least every 10 debounce periods) and pushes to the peer. The backup
// only accepts pushes; a node that believes it is master answers a push
// with 409 so a split brain never overwrites either side. After a takeover
// the new master starts with a full anti-entropy pass, which brings the
// returning node, now backup, up to date. The master's content wins only
// where it is newer: a master pushes nothing before it holds the newest
// content of the pair (see Reconciliation).
//
// # Reconciliation (version stamps)
//
// Each node keeps StateDir/stamps: for every wire path the revision that
// made its copy (a Lamport clock of the pair, independent of wall clocks;
// stamps.go). The master stamps each change it sees with a revision above
// every revision it has held or seen, even while the peer is unreachable;
// a receiver stamps what it applies with the batch's revision; a copy made
// outside the pair (a hand edit on the backup, a change while the daemon
// was stopped) is adopted at the node's revision and marked adopted. The
// manifest carries the stamps, and every full comparison decides per file:
// the peer's copy with a higher stamp (or a file this node never knew of)
// is pulled first (POST /api/sync/pull) and applied here like a push,
// keeping the peer's stamp; this node's newer copy is pushed; an adopted
// copy on the peer loses; equal stamps on different content mean both
// nodes changed the file independently (a split brain): neither copy is
// pushed, Status.Conflicts names it and the error is logged until an
// operator changes it on the master (which stamps it anew); the synced
// notice is still sent, as neither node overwrites it whoever is master. If a pull fails, nothing is pushed in that round
// (pushes_refused_peer_newer) and the error says why. A peer that serves
// no stamps (an older release) gets every difference pushed, as before.
// A returning node thus never overwrites the edits made on its peer while
// it was away, whatever its readiness hold did: taking over from a dead
// peer, it keeps its content and pushes nothing until the peer answers and
// the two are reconciled.
//
// # Anti-entropy
//
// The master compares manifests (wire path, size, SHA-256, mode, owner)
// when it
// becomes master, after any failed push (retried with exponential backoff
// from RetryMin to RetryMax; the peer being down is routine), when its
// probe (GET /api/sync/hello every ProbeInterval) sees the peer's boot ID or
// revision change (a restart), and every AntiEntropyInterval. It sends what
// differs. Hashes are cached by (size, mtime, ctime, inode), SQLite
// snapshot hashes by the stat of the database and its -wal. An owner
// matches when the peer reports the master's user (group) name, or else
// the master's numeric id: exactly what the backup's mapping produces, so
// a file whose account has different ids on the two nodes is not sent
// again at every pass. A chown or chmod on the master is an attribute
// change that fsnotify reports (Chmod); the file is sent whole. A peer
// whose manifest has no "batch_version" (an older release) is sent version
// 1 batches and compared without owners.
//
// # Readiness (takeover ordering)
//
// A node that returns as backup while its peer is master may hold older
// content: had it preempted at once, its master loop would push that stale
// content over the operator's newer edits on the peer. Node.Ready is closed
// when preemption is safe, and the daemon holds VRRP preemption until then
// (takeover from a dead master is never held): when the master's full
// comparison against this node's current boot ID completed and it said so
// with POST /api/sync/synced (sent once per peer boot, after every
// difference was pushed); when the peer answers GET /api/sync/hello and is
// not master; when the peer stayed unreachable for ReadyPeerTimeout (never
// while Config.PeerAlive reports it alive: its DB sync is unreachable, not
// gone); or when this node becomes master. Status.ReadyReason tells which,
// and Status.Waiting why a node still waits. Node.Rearm opens
// a new wait when the node returns to backup without restarting (the daemon
// calls it when VRRP re-enters BACKUP from MASTER or FAULT): the node takes a
// new boot ID, so the master's probe compares everything again and sends a
// synced notice for the new incarnation.
//
// # HTTP API (peer listener, HTTPS, TLS 1.3 only)
//
// Each node has a TLS identity (package peerlink, Config.Identity): the
// operator's certificate and key, or a self-signed ECDSA P-256 pair
// generated on first start; the peer's is pinned by the SHA-256 of its DER
// (Config.PeerCertSHA256; Node.Fingerprint prints one's own). The client
// presents its certificate; the /api/sync endpoints require it to match the
// pin, /api/health does not (so an operator's curl works). Every request
// carries "Authorization: Bearer <JWT>". A missing or bad token or
// certificate gets 401 with body {"error":"Unauthorized"} and nothing else;
// the reason is logged and counted (Status.Rejected). Every error body is
// {"error":"<HTTP status text>"} plus "revision" (the receiver's, number) on
// 409 answers to a push. The master refuses a hello or manifest answer no
// node sends (not JSON, a role other than master or backup, a path that is
// not a clean relative wire path or is listed twice, a negative size, a
// malformed sha256, a mode beyond 0o777): that comparison stops, counted in
// Status.Rejected as answer_decode, answer_role, answer_path or answer_file
// (ParseHello, ParseManifest).
//
//	POST /api/sync/push      body: a batch (binary, below). 200 answer:
//	                         {"revision":N,"applied":entries,"bytes":payload,"noop":bool}
//	                         400 undecodable/truncated/unsafe path/checksum,
//	                         409 stale revision, append prefix mismatch or
//	                         receiver is master, 413 over MaxBodyBytes.
//	GET  /api/sync/manifest  {"node":id,"boot_id":hex,"revision":N,"role":"master"|"backup",
//	                          "batch_version":2,
//	                          "files":[{"path":wire,"size":N,"sha256":hex,"mode":N,
//	                                    "uid":N,"gid":N,"user":name,"group":name},...]}
//	                         batch_version: the highest push body version the node
//	                         reads (absent: 1); user/group absent when the node's
//	                         account database has no name for the id.
//	                         "stamps":true, each file's "rev" (its version stamp)
//	                         and "adopted":true for an adopted copy, and
//	                         "deleted":[{"path","rev","adopted"}] (deletions known).
//	POST /api/sync/pull      {"paths":[wire,...]} (at most 65535, 4 MiB): 200 answer
//	                         a batch (the push body format, version 2) of the
//	                         receiver's copies: a put per file it holds, a delete
//	                         per file it does not, its revision in the header,
//	                         cut at MaxBodyBytes (the rest is asked again). 400
//	                         undecodable or unsafe path, 503 nothing readable.
//	                         The asker takes only entries it asked for whose
//	                         SHA-256 is what the manifest announced.
//	GET  /api/sync/hello     {"node":id,"boot_id":hex,"revision":N,"role":...,"time":RFC 3339}
//	POST /api/sync/synced    {"boot_id":hex,"revision":N}: the master compared the
//	                         manifest the receiver served under boot_id and pushed
//	                         every difference. 200 {}; 409 receiver is master or
//	                         boot_id is not its current one; 400 undecodable;
//	                         413 over 1 KiB. A 404 (an older peer) counts as sent.
//	GET  /api/health         mounted on the same link by the daemon (the
//	                          typed document status.Health: node, role, peer,
//	                          db, time, vrrp, ruleset, conntrack); Node.PeerHealth
//	                          fetches the peer's and measures clock skew from its
//	                          "time".
//
// A wire path is "<root name>" for a file root or "<root name>/<relative
// path>" for a directory root: slash-separated, clean (no "", "." or ".."
// elements, no trailing slash), no NUL, not absolute, not naming a staging
// file or an SQLite sidecar (-wal, -shm, -journal: never sent, and one
// installed next to a database would be replayed into it). Anything else
// is refused with 400 before any write (path_unsafe, path_sidecar), and so
// is a batch that names a path twice or puts a file at a path and another
// under it (path_conflict: one of the two would be lost). Writes go
// through an os.Root per root, so a symlink on the backup cannot lead a
// write outside the root.
//
// # Listener limits
//
// The listener serves the peer, and anyone who can reach it (every
// interface by default) can connect. Config.Limits (ListenerLimits;
// dbsync.limits in the configuration) bound clients that have not proved
// to be the peer, so a flood cannot starve the real peer: connections are
// admitted at accept, before TLS, by source address (IPv6 by /64), at most
// MaxConnsPerSource open per source, new ones paced by a token bucket per
// source (RatePerSource, BurstPerSource), and at most MaxConns open that
// have not presented the pinned certificate; the peer's own address (the
// host of PeerURL) is never refused for that cap. Requests without the
// pinned certificate take a token of their source too (429 without one).
// A refused connection is closed at once. Refusals are counted by reason
// (conn_limit, source_conn_limit, source_rate) and logged once per 10 s.
//
// # JWT claims
//
// iss = sender's node ID, aud = [receiver's node ID], iat, nbf = iat, exp =
// iat + TokenTTL (60 s), jti = 96 random bits (hex), scope = "sync" (node to
// node) or "health" (operator tokens from MintOperatorToken, at most 1 h).
// The receiver accepts only the configured alg (jwt.WithValidMethods: "none",
// another HMAC size, or an HS256 token under an EdDSA config are refused), its own ID as
// audience, the peer's ID as issuer (a node's own token reflected back
// fails), requires exp and iat, allows Leeway (default 5 s, at most 1 min)
// of clock skew, refuses
// sync tokens living longer than 2×TokenTTL, and health-scoped tokens on the
// sync endpoints. A sync token is single-use: its jti is required and
// remembered until exp + Leeway, and a second presentation is refused as
// token_replayed (a node mints one per request; a captured request sent
// again changes nothing). Operator tokens are reusable for their lifetime:
// they open only GET /api/health.
//
// # Clock skew
//
// The pair needs NTP: beyond Leeway one node refuses the other's tokens
// (token_not_yet_valid, token_expired). "time" in the answers to hello and
// health is the answering node's clock; the asker measures the offset
// against the midpoint of its request (Status.ClockSkew, within half the
// round trip) and warns above Config.ClockSkewWarn (default 1 s), with an
// error once the offset exceeds Leeway. Clock skew never decides which copy
// of a file is newer (Reconciliation).
//
// # Batch wire format (POST /api/sync/push body; integers big-endian)
//
// Header, 16 bytes:
//
//	0..3   magic "MHSB"
//	4      version: 2 (1 = no owner blocks, still read, and written to a peer
//	       whose manifest does not announce version 2; anything else refused)
//	5      flags, 0 (anything else is refused)
//	6..7   entry count, 1..65535
//	8..15  revision (uint64)
//
// Then each entry:
//
//	0      op: 1 put, 2 append, 3 delete
//	1      flags: bit 0 = SQLite snapshot (receiver drops -wal/-shm/-journal); others refused
//	2..5   mode: permission bits, at most 0o7777
//	6..7   path length L, 1..4096
//	8..    path, L bytes (wire path, above)
//	owner block, version 2 put and append only (o = first byte after the path):
//	  o+0..o+3    uid on the master (uint32)
//	  o+4..o+7    gid on the master (uint32)
//	  o+8..o+15   mtime, nanoseconds since the Unix epoch (int64; 0 = not set)
//	  o+16        user name length U, 0..255 (0: the master has no name for uid)
//	  o+17..      user name, U bytes
//	  then        group name length G (1 byte), group name, G bytes
//	  Names hold no byte <= 0x20, no 0x7f and no ':'; anything else is refused.
//	then:
//	put:    32 bytes SHA-256 of the data, 8 bytes data length D, D bytes data
//	append: 8 bytes offset (the receiver's current size), 32 bytes SHA-256 of
//	        the receiver's current content (the prefix), 32 bytes SHA-256 of
//	        the whole file after the append, 8 bytes length D, D bytes appended
//	delete: nothing
//
// No bytes may follow the last entry. A batch names each path at most once
// and never puts (or appends to) both a path and a path under it.
// The digest below covers a version 2 batch's owner blocks; a version 1
// batch digests as it did before version 2 existed.
// ParseBatch never panics on any input (FuzzParseBatch) and does not
// allocate; paths and data alias the body.
//
// # Revisions, retries and the journal
//
// Each applied batch carries a revision larger than any the receiver has
// applied: the master uses max(own, peer's) + 1 (never wrapping: at
// 2^64-1 it pushes nothing and reports ErrRevisionExhausted, where a
// wrapped 0 would be refused at every push), and persists it in its own
// StateDir/revision too, so revisions keep increasing across role changes
// and restarts. The receiver persists {revision, digest} (digest =
// BatchDigest: SHA-256 over the batch's wire form without the data bytes,
// which still covers the content through each entry's SHA-256). A retried push with the same revision and digest is
// a no-op success; any other push at or below the current revision is 409.
//
// Apply on the backup, per batch:
//
//  1. stage: each put/append is written to ".muros-had-stage-<rev>-<i>" in
//     the target's own directory (same filesystem), verified against its
//     SHA-256 (for append: after copying the current file, whose size and
//     prefix hash must match), given its mode, mtime and owner (see
//     Ownership), fsynced, and its directory (with any parent
//     created for it) fsynced, so a staged file is durable before commit;
//  2. commit: StateDir/journal (revision, digest, the list of renames and
//     deletes) is written to a temp file, fsynced, renamed into place and
//     the directory fsynced. This is the commit point;
//  3. install: each staged file is renamed over its target (SQLite sidecars
//     removed first), deletions done, every touched directory fsynced;
//  4. StateDir/revision is replaced atomically, then the journal removed.
//
// On start (New) a journal left by a crash is replayed (renames whose
// staged file is gone were done already; deletes are idempotent), and any
// staging file without a journal is removed. So after a crash at any point
// the backup restarts with either every file of the batch at its old
// version (crash before step 2) or every file at its new version (after):
// never a mix within a batch, and never a half-written file, since a file
// is only ever replaced by rename. While a batch is being installed (step 3,
// milliseconds) a concurrent reader on the backup may see some files of the
// batch new and others still old; each single file is always whole.
// Directories created for staging remain if a batch is rolled back.
//
// One path never holds back the others. A step that fails for a reason of
// the path's own, which every retry would meet again (a directory on the
// backup that is a symlink leaving the root: "path escapes from parent";
// an immutable file: EPERM; a mount point: EBUSY; EROFS, ENOTDIR, ...),
// skips that entry: at staging it is left out of the journal, at install
// its staged file is removed, and the batch completes. The 200 answer
// lists it ("failed": [{"path","op","reason"}]), Status.FailedPaths holds
// it until an apply of the path succeeds, Status.PathFailures and
// muros_had_dbsync_path_failures_total count it by reason, and the first
// failure of a path is logged as an error; the master's next anti-entropy
// pass sends it again. A journal replayed at start (New) skips such paths
// the same way, so recovery never turns DB sync off because of one path.
// Errors that concern every path (ENOSPC, EDQUOT, EIO, out of memory or
// descriptors) roll a batch back before its commit point (the master
// retries it whole); after it, only a failure to write the state directory
// (revision, journal removal) leaves the journal for the next push to
// complete.
// A single file larger than MaxBodyBytes (64 MiB) is not replicated; it is
// logged and counted ("too_large").
package dbsync
