package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"
)

// finish fills the defaults that depend on other keys and runs the checks
// that involve more than one key. It only reports on keys that decoded
// cleanly, so one mistake yields one problem.
func (d *decoder) finish(c *Config) {
	d.checkVIPs(c)
	d.checkAuth(c)
	d.checkListeners(c)

	if _, ok := d.lines["password"]; ok && !d.failed["password"] && c.Password == "" {
		d.fail(d.lines["password"], "password", "empty: the VRRP and sync authentication need a shared secret")
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

// checkAuth enforces what keepalived's VRRPv2 AH can carry.
func (d *decoder) checkAuth(c *Config) {
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
		d.warn(d.lines["password"], "password", "keepalived-ah uses only the first %d bytes of the password", KeepalivedAHKeyLen)
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
