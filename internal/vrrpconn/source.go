package vrrpconn

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/muros/muros-had/vrrp"
	"github.com/vishvananda/netlink"
)

// WaitSource finds the address adverts are sent from: the first global
// IPv4 address of the sync interface, or its IPv6 link-local address (RFC
// 9568 section 5.1.2.1) once duplicate address detection has finished;
// with it the interface index. It retries for 10 s (the link may be coming
// up).
func WaitSource(ctx context.Context, nl *netlink.Handle, ifname string, fam vrrp.Family) (netip.Addr, int, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, index, err := source(nl, ifname, fam)
		if err == nil {
			return a, index, nil
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, 0, fmt.Errorf("vrrpconn: sync interface %s: %w", ifname, err)
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func source(nl *netlink.Handle, ifname string, fam vrrp.Family) (netip.Addr, int, error) {
	link, err := nl.LinkByName(ifname)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	nf := netlink.FAMILY_V4
	if fam == vrrp.IPv6 {
		nf = netlink.FAMILY_V6
	}
	addrs, err := nl.AddrList(link, nf)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if fam == vrrp.IPv6 {
			if ip.IsLinkLocalUnicast() && a.Flags&(0x40 /*IFA_F_TENTATIVE*/) == 0 {
				return ip, link.Attrs().Index, nil
			}
			continue
		}
		return ip, link.Attrs().Index, nil
	}
	return netip.Addr{}, 0, fmt.Errorf("no usable IPv%d address", fam)
}
