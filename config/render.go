package config

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultNotifyScript is where Debian's conntrackd package documents the
// primary-backup.sh script keepalived calls on transitions.
const DefaultNotifyScript = "/etc/conntrackd/primary-backup.sh"

// RenderOptions are the facts the fallback files need that the muros-had
// configuration does not hold.
type RenderOptions struct {
	// NotifyScript is conntrackd's primary-backup.sh; keepalived's sync group
	// calls it with primary, backup or fault. Empty means DefaultNotifyScript.
	NotifyScript string
	// SyncAddress is this node's IPv4 address on the sync interface,
	// conntrackd's IPv4_interface (multicast join and source). Required.
	SyncAddress netip.Addr
}

// Rendered is the fallback keepalived + conntrackd configuration.
type Rendered struct {
	Keepalived []byte
	Conntrackd []byte
	// Notes are the places where keepalived or conntrackd cannot express
	// this configuration exactly; each is also a comment in the file.
	Notes []string
}

// Render writes keepalived.conf and conntrackd.conf equivalents of c: one
// vrrp_instance per VIP (adverts on the sync interface, the VIP on its own
// dev, every VIP interface tracked) in one vrrp_sync_group whose notify hooks
// call conntrackd's primary-backup.sh, and conntrackd in FTFW mode over
// multicast on the sync interface.
//
// keepalived has no VRRPv3 authentication, so auth: ah (our VRRPv3 inside
// IPsec AH) renders as unauthenticated VRRPv3 with a note: the fallback then
// runs without authentication rather than not at all, and says so at the top
// of the file and on the command line. auth: keepalived-ah renders keepalived's
// own VRRPv2 "auth_type AH", which is what it interoperates with.
func Render(c *Config, opt RenderOptions) (Rendered, error) {
	if opt.NotifyScript == "" {
		opt.NotifyScript = DefaultNotifyScript
	}
	if !filepath.IsAbs(opt.NotifyScript) || strings.ContainsAny(opt.NotifyScript, " \t\n\"'\\#!") {
		return Rendered{}, fmt.Errorf("render: notify script %q must be an absolute path without spaces, quotes or comment characters", opt.NotifyScript)
	}
	if !opt.SyncAddress.IsValid() {
		// Without IPv4_interface conntrackd joins and sends by route lookup:
		// on a firewall that is the default route's interface, not the sync
		// link (and with no route at all it cannot start).
		return Rendered{}, errors.New("render: this node's IPv4 address on the sync interface is required (conntrackd's IPv4_interface)")
	}
	if !opt.SyncAddress.Is4() {
		return Rendered{}, fmt.Errorf("render: sync address %s is not IPv4: conntrackd multicast sync is IPv4", opt.SyncAddress)
	}
	if c.Conntrack.Group.Is6() {
		return Rendered{}, fmt.Errorf("render: conntrack.group %s is IPv6: the conntrackd fallback is rendered for IPv4 groups only", c.Conntrack.Group)
	}
	var r Rendered
	ka, err := renderKeepalived(c, opt, &r.Notes)
	if err != nil {
		return Rendered{}, err
	}
	r.Keepalived = ka
	r.Conntrackd = renderConntrackd(c, opt, &r.Notes)
	return r, nil
}

// InstanceName is the keepalived vrrp_instance name of a VIP.
func InstanceName(v VIP) string { return "VI_" + strconv.Itoa(int(v.VRID)) }

// keepalivedString quotes s for keepalived's parser. keepalived 2.2.7
// treats '#' and '!' as comments and rejects escaped quotes and backslashes
// ("Unmatched quote"), so those cannot be carried at all.
func keepalivedString(s string) (string, error) {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`#!"'\`, r) {
			return "", fmt.Errorf("render: the password contains %q, which keepalived.conf cannot carry", r)
		}
	}
	return `"` + s + `"`, nil
}

// seconds renders a duration as keepalived's decimal seconds.
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

func renderKeepalived(c *Config, opt RenderOptions, notes *[]string) ([]byte, error) {
	var b strings.Builder
	var fileNotes []string
	note := func(s string) { fileNotes = append(fileNotes, s); *notes = append(*notes, "keepalived.conf: "+s) }
	if c.Auth == AuthAH {
		note("auth: ah (VRRPv3 in IPsec AH) has no keepalived equivalent; instances run VRRPv3 WITHOUT authentication")
	}
	if c.ChecksumMode == ChecksumMessageOnly {
		note("checksum_mode: message-only has no keepalived equivalent for multicast adverts; keepalived checksums with the pseudo-header")
	}
	if c.VMAC {
		note("vmac: keepalived's use_vmac puts the virtual MAC on the advert interface, not on each VIP's interface; not rendered")
	}
	if len(c.Checks) > 0 {
		note(fmt.Sprintf("checks: not rendered (%d): the keepalived fallback runs without the health checks (FAULT comes from tracked interfaces only, no weights)", len(c.Checks)))
	}
	if c.Auth == AuthKeepalivedAH && len(c.Password) > KeepalivedAHKeyLen {
		note(fmt.Sprintf("auth_pass holds the first %d bytes of the password: keepalived uses no more", KeepalivedAHKeyLen))
	}

	fmt.Fprintf(&b, "# keepalived.conf rendered by `muros-had render` from %s.\n", c.File)
	b.WriteString("# Fallback only: muros-had replaces keepalived, conntrackd and the DB sync agent.\n")
	for _, n := range fileNotes {
		fmt.Fprintf(&b, "# NOTE: %s\n", n)
	}
	b.WriteString("\nglobal_defs {\n")
	fmt.Fprintf(&b, "    router_id muros-had-%s\n", c.Role)
	b.WriteString("    script_user root\n    enable_script_security\n")
	fmt.Fprintf(&b, "    vrrp_garp_master_repeat %d\n", c.GARP.Repeat)
	if c.GARP.Interval > 0 {
		fmt.Fprintf(&b, "    vrrp_garp_interval %s\n    vrrp_gna_interval %s\n", seconds(c.GARP.Interval), seconds(c.GARP.Interval))
	}
	if c.GARP.Refresh > 0 {
		// keepalived's refresh has a resolution of whole seconds.
		fmt.Fprintf(&b, "    vrrp_garp_master_refresh %d\n", int((c.GARP.Refresh+time.Second-1)/time.Second))
	}
	b.WriteString("}\n\n")

	b.WriteString("# One sync group: all VIPs move together.\nvrrp_sync_group MUROS {\n    group {\n")
	for _, v := range c.VIPs {
		fmt.Fprintf(&b, "        %s\n", InstanceName(v))
	}
	b.WriteString("    }\n")
	for _, hook := range []struct{ event, arg string }{{"master", "primary"}, {"backup", "backup"}, {"fault", "fault"}} {
		fmt.Fprintf(&b, "    notify_%s \"%s %s\"\n", hook.event, opt.NotifyScript, hook.arg)
	}
	b.WriteString("}\n")

	var pass string
	if c.Auth == AuthKeepalivedAH {
		var err error
		// keepalived keys AH with the first 8 bytes and fails its config
		// test on a longer auth_pass; cut it here, as the note says.
		p := c.Password
		if len(p) > KeepalivedAHKeyLen {
			p = p[:KeepalivedAHKeyLen]
		}
		if pass, err = keepalivedString(p); err != nil {
			return nil, err
		}
	}
	// keepalived ignores preempt_delay and nopreempt unless the initial state
	// is BACKUP, and refuses an initial MASTER state with AH ("incompatible
	// with AH authentication"); priority still makes the master win.
	state := "BACKUP"
	if c.Role == RoleMaster && c.Preempt && c.PreemptDelay == 0 && c.Auth != AuthKeepalivedAH {
		state = "MASTER"
	}
	advert := seconds(c.AdvertInterval)
	for _, v := range c.VIPs {
		fmt.Fprintf(&b, "\nvrrp_instance %s {\n", InstanceName(v))
		fmt.Fprintf(&b, "    state %s\n", state)
		fmt.Fprintf(&b, "    interface %s\n", c.SyncInterface)
		// On a direct sync cable the carrier drops when the peer dies: the
		// survivor must take over, not go FAULT on its own advert link.
		b.WriteString("    dont_track_primary\n")
		fmt.Fprintf(&b, "    virtual_router_id %d\n", v.VRID)
		fmt.Fprintf(&b, "    version %d\n", c.Version())
		fmt.Fprintf(&b, "    priority %d\n", c.Priority())
		fmt.Fprintf(&b, "    advert_int %s\n", advert)
		if !c.Preempt {
			b.WriteString("    nopreempt\n")
		} else if c.PreemptDelay > 0 {
			fmt.Fprintf(&b, "    preempt_delay %s\n", seconds(c.PreemptDelay))
		}
		b.WriteString("    track_interface {\n")
		for _, t := range c.VIPs {
			fmt.Fprintf(&b, "        %s\n", t.Interface)
		}
		b.WriteString("    }\n")
		if c.Auth == AuthKeepalivedAH {
			fmt.Fprintf(&b, "    authentication {\n        auth_type AH\n        auth_pass %s\n    }\n", pass)
		}
		fmt.Fprintf(&b, "    virtual_ipaddress {\n        %s dev %s\n    }\n}\n", v.Address, v.Interface)
	}
	return []byte(b.String()), nil
}

// conntrackdProtocol maps our protocol names to conntrackd's (which it
// resolves through /etc/protocols).
var conntrackdProtocol = map[string]string{
	"tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "dccp": "DCCP", "icmp": "ICMP", "icmpv6": "IPv6-ICMP",
}

func renderConntrackd(c *Config, opt RenderOptions, notes *[]string) []byte {
	var b strings.Builder
	var fileNotes []string
	note := func(s string) { fileNotes = append(fileNotes, s); *notes = append(*notes, "conntrackd.conf: "+s) }
	note("conntrackd sync messages are not authenticated (muros-had's are)")
	if !c.Conntrack.Enabled {
		note("conntrack.enabled is false; rendered anyway so the fallback can be turned on")
	}
	if c.Conntrack.Filter.ExcludeLocal {
		note("exclude_local: only loopback, the VIPs, the peer and the sync address are listed; add this node's own addresses to Address Ignore")
	}
	if len(c.Conntrack.Filter.Include) > 0 {
		note("conntrackd takes either Address Accept or Address Ignore: the include list is rendered, the exclusions are not")
	}
	if c.Conntrack.Resync.Interval > 0 {
		note("conntrack.resync.interval has no conntrackd equivalent; not rendered")
	}

	fmt.Fprintf(&b, "# conntrackd.conf rendered by `muros-had render` from %s.\n", c.File)
	b.WriteString("# Fallback only: muros-had replaces keepalived, conntrackd and the DB sync agent.\n")
	for _, n := range fileNotes {
		fmt.Fprintf(&b, "# NOTE: %s\n", n)
	}
	b.WriteString("\nSync {\n    Mode FTFW {\n    }\n    Multicast {\n")
	fmt.Fprintf(&b, "        IPv4_address %s\n", c.Conntrack.Group)
	fmt.Fprintf(&b, "        Group %d\n", c.Conntrack.Port)
	fmt.Fprintf(&b, "        IPv4_interface %s\n", opt.SyncAddress)
	fmt.Fprintf(&b, "        Interface %s\n", c.SyncInterface)
	b.WriteString("        SndSocketBuffer 1249280\n        RcvSocketBuffer 1249280\n        Checksum on\n    }\n}\n\n")

	b.WriteString("General {\n    HashSize 32768\n    HashLimit 131072\n    Syslog on\n    LogFile off\n")
	fmt.Fprintf(&b, "    LockFile %s\n", filepath.Join(c.RunDir, "conntrackd.lock"))
	fmt.Fprintf(&b, "    UNIX {\n        Path %s\n    }\n", filepath.Join(c.RunDir, "conntrackd.ctl"))
	b.WriteString("    NetlinkBufferSize 2097152\n    NetlinkBufferSizeMaxGrowth 8388608\n")
	b.WriteString("    Filter From Userspace {\n        Protocol Accept {\n")
	for _, p := range c.Conntrack.Filter.Protocols {
		fmt.Fprintf(&b, "            %s\n", conntrackdProtocol[p])
	}
	b.WriteString("        }\n")
	if len(c.Conntrack.Filter.Include) > 0 {
		b.WriteString("        Address Accept {\n")
		for _, p := range c.Conntrack.Filter.Include {
			writeConntrackdAddr(&b, p, "")
		}
		b.WriteString("        }\n")
	} else {
		var ignore []netip.Prefix
		var why []string
		add := func(p netip.Prefix, comment string) {
			for _, have := range ignore {
				if have == p {
					return
				}
			}
			ignore = append(ignore, p)
			why = append(why, comment)
		}
		if c.Conntrack.Filter.ExcludeLocal {
			add(netip.MustParsePrefix("127.0.0.1/32"), "loopback")
			add(netip.MustParsePrefix("::1/128"), "loopback")
			for _, v := range c.VIPs {
				a := v.Address.Addr()
				add(netip.PrefixFrom(a, a.BitLen()), "VIP "+InstanceName(v))
			}
			add(netip.PrefixFrom(c.Peer.WithZone(""), c.Peer.BitLen()), "peer")
			add(netip.PrefixFrom(opt.SyncAddress, 32), "sync link")
		}
		for _, p := range c.Conntrack.Filter.Exclude {
			add(p, "conntrack.filter.exclude")
		}
		if len(ignore) > 0 {
			b.WriteString("        Address Ignore {\n")
			for i, p := range ignore {
				writeConntrackdAddr(&b, p, why[i])
			}
			b.WriteString("        }\n")
		}
	}
	b.WriteString("    }\n}\n")
	return []byte(b.String())
}

func writeConntrackdAddr(b *strings.Builder, p netip.Prefix, comment string) {
	kind := "IPv4_address"
	if p.Addr().Is6() {
		kind = "IPv6_address"
	}
	s := p.String()
	if p.IsSingleIP() {
		s = p.Addr().String()
	}
	if comment != "" {
		fmt.Fprintf(b, "            %s %s # %s\n", kind, s, comment)
		return
	}
	fmt.Fprintf(b, "            %s %s\n", kind, s)
}
