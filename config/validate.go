package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/muros/muros-had/replpath"
)

// finish fills the defaults that depend on other keys and runs the checks
// that involve more than one key. It only reports on keys that decoded
// cleanly, so one mistake yields one problem.
func (d *decoder) finish(c *Config) {
	d.checkVIPs(c)
	d.checkAuth(c)
	d.checkListeners(c)

	if _, ok := d.lines["password"]; ok && !d.failed["password"] && !d.client {
		d.checkPassword(c.Password)
	}
	if c.AdvertInterval%(10*time.Millisecond) != 0 && c.Auth != AuthKeepalivedAH {
		d.fail(d.lines["advert_interval"], "advert_interval", "%s is not a multiple of 10ms (VRRPv3 counts centiseconds)", c.AdvertInterval)
	}
	if c.Status.Listen == "" {
		c.Status.Listen = filepath.Join(c.RunDir, "status.sock")
	}
	if c.DBSync.TLS.Cert == "" {
		c.DBSync.TLS.Cert = filepath.Join(c.StateDir, "tls", "cert.pem")
	}
	if c.DBSync.TLS.Key == "" {
		c.DBSync.TLS.Key = filepath.Join(c.StateDir, "tls", "key.pem")
	}
	if c.DBSync.JWT.SecretFile == "" {
		c.DBSync.JWT.SecretFile = filepath.Join(c.StateDir, "jwt.secret")
	}
	if c.Role != "" {
		if c.DBSync.JWT.Issuer == "" {
			c.DBSync.JWT.Issuer = "muros-had-" + string(c.Role)
		}
		if c.DBSync.JWT.Audience == "" {
			c.DBSync.JWT.Audience = "muros-had-" + string(c.PeerRole())
		}
	}
	if _, ok := d.lines["dbsync.jwt.issuer"]; ok && c.DBSync.JWT.Issuer == c.DBSync.JWT.Audience {
		d.fail(d.lines["dbsync.jwt.issuer"], "dbsync.jwt.issuer", "%q equals the audience: a token this node mints would be accepted by itself", c.DBSync.JWT.Issuer)
	}
	d.checkPaths(c)
	d.checkLiveness(c)
}

// checkLiveness refuses a detection time that one late heartbeat would
// exhaust, a group and port that collide with the conntrack sync's, and
// defaults the second path to the peer's address.
func (d *decoder) checkLiveness(c *Config) {
	l := &c.Liveness
	if _, set := d.lines["liveness.peer_address"]; !set && !d.failed["liveness.peer_address"] {
		l.PeerAddress = c.Peer
	}
	if _, set := d.lines["liveness.group"]; !set && c.Conntrack.Group.Is6() {
		// A sync link the operator runs on IPv6 (the conntrack group
		// says so) may have no IPv4 address to send the IPv4 group from.
		l.Group = netip.MustParseAddr(DefaultLivenessGroup6)
	}
	if !l.Enabled {
		return
	}
	if l.Detect < 2*l.Interval && !d.failed["liveness.detect"] && !d.failed["liveness.interval"] {
		line, key := d.lines["liveness.detect"], "liveness.detect"
		if line == 0 {
			line, key = d.lines["liveness.interval"], "liveness.interval"
		}
		d.fail(line, key, "detect %s is under twice the interval %s: one late heartbeat would declare a live master dead", l.Detect, l.Interval)
	}
	// A quiet master's death is seen after one and a half quiet periods
	// and the probe's half of the detection time, or, where that is
	// later, a probe's wait after VRRP's Master_Down_Interval: the
	// adverts missing make the backup watch it as a fast master
	// (EventConfirm). So any quiet
	// period up to the protocol's limit (half its idle period) is no
	// slower than VRRP, with a backup of this release; one of an earlier
	// release does not confirm and waits out the quiet period (README,
	// "rolling upgrade").
	if _, set := d.lines["liveness.quiet_interval"]; !set {
		// The default: 50 ms, shorter if quiet_after is under ten of
		// them, never quiet where that is under two fast heartbeats.
		l.QuietInterval = 0
		if q := min(DefaultLivenessQuietInterval, l.QuietAfter/10); q >= 2*l.Interval {
			l.QuietInterval = q
		}
	} else if q := l.QuietInterval; q != 0 && !d.failed["liveness.quiet_interval"] && q < 2*l.Interval {
		d.fail(d.lines["liveness.quiet_interval"], "liveness.quiet_interval", "quiet_interval %s is under twice the interval %s: set 0s to stay fast, or a longer period", q, l.Interval)
	}
	if q := l.QuietInterval; q != 0 && l.QuietAfter < 10*q && !d.failed["liveness.quiet_after"] {
		d.fail(d.lines["liveness.quiet_after"], "liveness.quiet_after", "quiet_after %s is under ten quiet periods (%s)", l.QuietAfter, 10*q)
	}
	if c.Conntrack.Enabled && l.Group == c.Conntrack.Group && l.Port == c.Conntrack.Port {
		d.fail(d.lines["liveness.port"], "liveness.port", "%s port %d is the conntrack sync's group and port", l.Group, l.Port)
	}
}

// Password strength. The password keys the HMAC of every advert (auth: ah,
// keepalived-ah) and, whatever auth says, the conntrack sync's MAC: one
// captured advert or datagram lets an attacker test guesses offline as
// fast as hardware computes HMACs, some 10^10 a second on GPUs. 12
// characters from as few as 36 symbols are 36^12 (about 4.7e18) guesses,
// years at that rate; 8 lower-case letters are 2e11, half a minute. 16 and
// more are advised (openssl rand -base64 24 gives 32), and a password of
// fewer than 8 different characters is a pattern, guessed long before its
// length suggests.
const (
	MinPasswordLen     = 12
	AdvisedPasswordLen = 16
	MinPasswordVariety = 8
)

// placeholders are the example values of documentation and of
// dist/muros-had.yaml, compared with the password lower-cased and reduced
// to letters and digits, so every spelling ("Change_Me", "CHANGE ME") and
// every value built on one ("change-me-2") is refused.
var placeholders = [...]struct{ folded, shown string }{
	{"changeme", "change-me"},
	{"replaceme", "replace-me"},
	{"generateme", "generate me"},
	{"opensslrand", "openssl rand"},
}

// checkPassword refuses placeholders and short passwords, and warns about
// ones short of advised or of low variety. The password is never quoted.
func (d *decoder) checkPassword(pw string) {
	const generate = "e.g. with openssl rand -base64 24"
	// Both nodes must change together: a node whose password differs
	// from its peer's rejects its adverts and takes the VIPs as well.
	const rotate = `to change it on a running pair without a split brain see README.md, "Changing the password"`
	line := d.lines["password"]
	if pw == "" {
		d.fail(line, "password", "empty: the VRRP and sync authentication need a shared secret")
		return
	}
	folded := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return -1
	}, pw)
	for _, p := range placeholders {
		if strings.Contains(folded, p.folded) {
			d.fail(line, "password", "is a placeholder (it contains %q): generate a shared secret, %s, the same on both nodes; %s", p.shown, generate, rotate)
			return
		}
	}
	n := utf8.RuneCountInString(pw)
	if n < MinPasswordLen {
		d.fail(line, "password", "%d characters, fewer than %d: one captured advert lets an attacker test passwords offline; generate one, %s; %s", n, MinPasswordLen, generate, rotate)
		return
	}
	if n < AdvisedPasswordLen {
		d.warn(line, "password", "%d characters: %d or more are advised (openssl rand -base64 24 gives 32)", n, AdvisedPasswordLen)
	}
	distinct := map[rune]bool{}
	for _, r := range pw {
		distinct[r] = true
	}
	if len(distinct) < MinPasswordVariety {
		d.warn(line, "password", "only %d different characters: a repeated pattern is guessed long before its length suggests; generate one, %s", len(distinct), generate)
	}
}

// checkPaths applies the replicated-path rules (package replpath, which
// dbsync applies again at start) to dbsync.paths, one problem per path and
// rule, on the line of the path.
func (d *decoder) checkPaths(c *Config) {
	if !c.DBSync.Enabled || d.failed["dbsync.paths"] || d.client {
		return
	}
	for _, p := range replicatedPathProblems(c) {
		key, line := "dbsync.paths", d.lines["dbsync"]
		if p.Index < len(d.pathKeys) && len(d.pathKeys) == len(c.DBSync.Paths) {
			key = d.pathKeys[p.Index]
			line = d.lines[key]
		} else {
			p.Message = "default " + p.Message
		}
		d.fail(line, key, "%s", p.Message)
	}
}

// replicatedPathProblems checks c's replicated paths against each other and
// against the daemon's own files and directories.
func replicatedPathProblems(c *Config) []replpath.Problem {
	return replpath.Check(c.replicatedEntries(), c.guardedPaths())
}

func (c *Config) replicatedEntries() []replpath.Entry {
	entries := make([]replpath.Entry, len(c.DBSync.Paths))
	for i, p := range c.DBSync.Paths {
		entries[i] = replpath.Entry{Name: replpath.Name(p), Local: p}
	}
	return entries
}

// PackagedConfigDir is where the systemd unit reads the configuration
// (ConfigurationDirectory=); a replicated path never covers it, wherever
// this node's file is.
const PackagedConfigDir = "/etc/muros-had"

// guardedPaths are the daemon's own files and directories: replication
// must not carry the master's copy to the backup (its TLS key, JWT secret,
// role: master configuration and state), nor write into the daemon's
// directories. Nothing may lie inside the packaged configuration directory,
// the daemon's alone; another directory holding the file may be /etc or a
// lab node's directory, where replicated paths beside the file are fine:
// only the directory itself and the daemon's files in it (each named here)
// are guarded.
func (c *Config) guardedPaths() []replpath.Guarded {
	g := []replpath.Guarded{
		{Path: c.StateDir, What: "state_dir", Inside: true},
		{Path: c.RunDir, What: "run_dir", Inside: true},
		{Path: PackagedConfigDir, What: "the packaged configuration directory", Inside: true, InsideWhy: "which holds this node's own configuration"},
	}
	if c.ConfigDir != "" && c.ConfigDir != PackagedConfigDir {
		g = append(g, replpath.Guarded{Path: c.ConfigDir, What: "the directory of this configuration file"})
	}
	if c.ConfigDir != "" {
		g = append(g, replpath.Guarded{Path: filepath.Join(c.ConfigDir, filepath.Base(c.File)), What: "this configuration file"})
	}
	g = append(g,
		replpath.Guarded{Path: c.DBSync.TLS.Cert, What: "dbsync.tls.cert"},
		replpath.Guarded{Path: c.DBSync.TLS.Key, What: "dbsync.tls.key"},
		replpath.Guarded{Path: c.DBSync.JWT.SecretFile, What: "dbsync.jwt.secret_file"},
	)
	if filepath.IsAbs(c.Status.Listen) {
		g = append(g, replpath.Guarded{Path: c.Status.Listen, What: "status.listen"})
	}
	return g
}

// CheckReplicatedPaths is the check Parse makes of dbsync.paths, for the
// daemon to repeat before it touches the file system: a Config built or
// changed in code gets the same verdict as the file. It runs on this
// machine's file system, symlinks followed (replpath.CheckResolved): Parse
// only sees the text, and /var/lib/x, a link to /etc/muros-had, is refused
// here.
func (c *Config) CheckReplicatedPaths() error {
	ps := replpath.CheckResolved(c.replicatedEntries(), c.guardedPaths())
	if len(ps) == 0 {
		return nil
	}
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = fmt.Sprintf("dbsync.paths[%d]: %s", p.Index, p.Message)
	}
	return errors.New(strings.Join(lines, "\n"))
}

// checkVIPs resolves default VRIDs and reports collisions. A default VRID is
// 10 plus the entry's position in the list, whatever other entries set: an
// explicit vrid never shifts the others, so editing one entry never
// renumbers another VIP (which would re-elect it on a live pair).
func (d *decoder) checkVIPs(c *Config) {
	if _, ok := d.lines["vips"]; ok && !d.failed["vips"] && len(d.vipLines) == 0 {
		d.fail(d.lines["vips"], "vips", "empty: at least one VIP is required")
	}
	type owner struct {
		key      string
		line     int
		explicit bool
	}
	byVRID := map[uint8]owner{}
	byIface := map[string]owner{}
	byAddr := map[string]owner{}
	for i := range c.VIPs {
		v := &c.VIPs[i]
		key := fmt.Sprintf("vips[%d]", i)
		line := d.vipLines[i]
		if !v.VRIDExplicit {
			id := DefaultFirstVRID + i
			if id > 255 {
				d.fail(line, key, "default VRID %d is above 255: set vrid", id)
				continue
			}
			v.VRID = uint8(id)
		}
		vridKey, vridLine := key, line
		if v.VRIDExplicit {
			vridKey, vridLine = key+".vrid", d.lines[key+".vrid"]
		}
		if v.VRID != 0 {
			if prev, dup := byVRID[v.VRID]; dup {
				d.fail(vridLine, vridKey, "VRID %d is already used by %s (%s, line %d)", v.VRID, prev.key, vridOrigin(prev.explicit), prev.line)
			} else {
				byVRID[v.VRID] = owner{key, vridLine, v.VRIDExplicit}
			}
		}
		if v.Interface != "" {
			k := key + ".interface"
			// One VIP per interface and address family: a firewall LAN has
			// its IPv4 and its IPv6 gateway address on the same interface.
			fam := "IPv4"
			if v.Address.IsValid() && !v.Address.Addr().Is4() {
				fam = "IPv6"
			}
			if prev, dup := byIface[v.Interface+"/"+fam]; dup {
				d.fail(d.lines[k], k, "interface %s already has an %s VIP in %s (line %d): one VIP per interface and family", v.Interface, fam, prev.key, prev.line)
			} else {
				byIface[v.Interface+"/"+fam] = owner{key: key, line: d.lines[k]}
			}
			if v.Interface == c.SyncInterface {
				d.warn(d.lines[k], k, "%s is also the sync_interface: a VIP's LAN then carries VRRP adverts and conntrack sync", v.Interface)
			}
		}
		if v.Address.IsValid() {
			k := key + ".address"
			a := v.Address.Addr().String()
			if prev, dup := byAddr[a]; dup {
				d.fail(d.lines[k], k, "address %s is already used by %s (line %d)", a, prev.key, prev.line)
			} else {
				byAddr[a] = owner{key: key, line: d.lines[k]}
			}
			if reason := unusableHost(v.Address); reason != "" {
				d.fail(d.lines[k], k, "%s is %s, not a host address", v.Address, reason)
			}
			if c.Peer.IsValid() && c.Peer.WithZone("") == v.Address.Addr() {
				d.fail(d.lines["peer"], "peer", "%s is the address of %s: the peer needs its own management address", c.Peer, key)
			}
		}
	}
}

func vridOrigin(explicit bool) string {
	if explicit {
		return "explicit vrid"
	}
	return "default VRID"
}

// checkAuth warns about unauthenticated adverts and enforces what
// keepalived's VRRPv2 AH can carry.
func (d *decoder) checkAuth(c *Config) {
	if c.Auth == AuthNone {
		d.warn(d.lines["auth"], "auth", "none: VRRP adverts are not authenticated: anyone on %s's link can send adverts that take the VIPs (priority 255) or make the backup take them while the master keeps them (priority 0, split brain), and replayed adverts go unnoticed; the conntrack sync stays authenticated with the password. Use it only on a link no one else reaches, to pair with a router without AH", c.SyncInterface)
	}
	if c.Auth != AuthKeepalivedAH {
		return
	}
	if _, ok := d.lines["advert_interval"]; ok {
		if c.AdvertInterval%time.Second != 0 || c.AdvertInterval > MaxAdvertIntervalV2 {
			d.fail(d.lines["advert_interval"], "advert_interval", "%s must be whole seconds 1s..255s with auth: keepalived-ah (VRRPv2)", c.AdvertInterval)
		}
	}
	for i, v := range c.VIPs {
		if v.Address.IsValid() && v.Address.Addr().Is6() {
			k := fmt.Sprintf("vips[%d].address", i)
			d.fail(d.lines[k], k, "%s is IPv6, which needs VRRPv3: auth: keepalived-ah is VRRPv2 (IPv4 only)", v.Address)
		}
	}
	if len(c.Password) > KeepalivedAHKeyLen {
		d.warn(d.lines["password"], "password", "auth: keepalived-ah keys the VRRP adverts (HMAC-MD5-96, keepalived's scheme) with only the first %d bytes of the password: at most 64 bits, which one captured advert lets an attacker search offline; the conntrack sync still uses all of it. Use keepalived-ah only while migrating from keepalived", KeepalivedAHKeyLen)
	}
}

// checkListeners reports two TCP listeners of this node on one port and
// overlapping addresses: the daemon would fail to start on the second bind.
func (d *decoder) checkListeners(c *Config) {
	type listener struct{ key, addr string }
	var ls []listener
	if !filepath.IsAbs(c.Status.Listen) {
		ls = append(ls, listener{"status.listen", c.Status.Listen})
	}
	if c.Metrics.Enabled {
		ls = append(ls, listener{"metrics.listen", c.Metrics.Listen})
	}
	if c.Status.HTTP != "" {
		ls = append(ls, listener{"status.http", c.Status.HTTP})
		d.checkStatusHTTP(c.Status)
	}
	if c.DBSync.Enabled {
		ls = append(ls, listener{"dbsync.listen", c.DBSync.Listen})
	}
	for i, a := range ls {
		for _, b := range ls[:i] {
			if d.failed[a.key] || d.failed[b.key] || !listenersOverlap(a.addr, b.addr) {
				continue
			}
			// Report on a key the operator wrote, not on a default.
			at, other := a, b
			if _, ok := d.lines[at.key]; !ok {
				at, other = b, a
			}
			d.fail(d.lines[at.key], at.key, "%s binds the same port as %s (%s)", at.addr, other.key, other.addr)
		}
	}
}

// checkStatusHTTP refuses the status page on an address other hosts reach
// unless the operator opted in: the page has no authentication and shows
// the pair's addresses, state and errors (it changes nothing).
func (d *decoder) checkStatusHTTP(s Status) {
	if d.failed["status.http"] || s.HTTPAllowRemote {
		return
	}
	host, _, err := net.SplitHostPort(s.HTTP)
	if err != nil {
		return
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
		return
	}
	d.fail(d.lines["status.http"], "status.http", "%s is not a loopback address: the status page has no authentication; set status.http_allow_remote: true to serve it to other hosts (read-only), or put a proxy with authentication in front", s.HTTP)
}

func listenersOverlap(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wildcard(ha) || wildcard(hb)
}

// unusableHost says why p's address cannot be a VIP on its subnet, or "".
func unusableHost(p netip.Prefix) string {
	a := p.Addr()
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsMulticast():
		return "a multicast address"
	case a.IsLoopback():
		return "a loopback address"
	case !a.Is4() || p.Bits() >= 31:
		return "" // IPv6 has no broadcast; /31 and /32 use every address
	case a == p.Masked().Addr():
		return "the network address of its subnet"
	}
	b := a.As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	if (uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))&host == host {
		return "the broadcast address of its subnet"
	}
	return ""
}
