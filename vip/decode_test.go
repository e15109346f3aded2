package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The tests check frames with gopacket's decoders, an implementation
// independent of the builders under test.

// arpView is a decoded Ethernet + ARP frame.
type arpView struct {
	EthDst, EthSrc string
	Op             uint16
	SenderMAC      string
	SenderIP       netip.Addr
	TargetMAC      string
	TargetIP       netip.Addr
}

func decodeARPFrame(frame []byte) (arpView, error) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		return arpView{}, fmt.Errorf("decode: %w", el.Error())
	}
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	arp, _ := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if eth == nil || arp == nil {
		return arpView{}, errors.New("not an Ethernet ARP frame")
	}
	if arp.AddrType != layers.LinkTypeEthernet || arp.Protocol != layers.EthernetTypeIPv4 ||
		arp.HwAddressSize != 6 || arp.ProtAddressSize != 4 {
		return arpView{}, fmt.Errorf("unexpected ARP header %+v", arp)
	}
	sip, _ := netip.AddrFromSlice(arp.SourceProtAddress)
	tip, _ := netip.AddrFromSlice(arp.DstProtAddress)
	return arpView{
		EthDst: eth.DstMAC.String(), EthSrc: eth.SrcMAC.String(),
		Op:        arp.Operation,
		SenderMAC: net.HardwareAddr(arp.SourceHwAddress).String(), SenderIP: sip,
		TargetMAC: net.HardwareAddr(arp.DstHwAddress).String(), TargetIP: tip,
	}, nil
}

// naView is a decoded neighbour advertisement.
type naView struct {
	Target                      netip.Addr
	Router, Solicited, Override bool
	TargetLL                    string
	Options                     int
}

func naViewOf(na *layers.ICMPv6NeighborAdvertisement) naView {
	t, _ := netip.AddrFromSlice(na.TargetAddress)
	v := naView{Target: t, Router: na.Router(), Solicited: na.Solicited(), Override: na.Override(), Options: len(na.Options)}
	for _, o := range na.Options {
		if o.Type == layers.ICMPv6OptTargetAddress {
			v.TargetLL = net.HardwareAddr(o.Data).String()
		}
	}
	return v
}

// decodeNAMessage decodes a bare ICMPv6 message.
func decodeNAMessage(msg []byte) (naView, error) {
	p := gopacket.NewPacket(msg, layers.LayerTypeICMPv6, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		return naView{}, fmt.Errorf("decode: %w", el.Error())
	}
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	na, _ := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if icmp == nil || na == nil {
		return naView{}, errors.New("not a neighbour advertisement")
	}
	if icmp.TypeCode.Code() != 0 {
		return naView{}, fmt.Errorf("code %d", icmp.TypeCode.Code())
	}
	return naViewOf(na), nil
}

// naPacket is a neighbour advertisement captured on the wire.
type naPacket struct {
	EthSrc, EthDst string
	Src, Dst       netip.Addr
	HopLimit       uint8
	ChecksumOK     bool
	NA             naView
}

func decodeNAFrame(frame []byte) (naPacket, bool) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip6, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	na, _ := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if eth == nil || ip6 == nil || icmp == nil || na == nil {
		return naPacket{}, false
	}
	src, _ := netip.AddrFromSlice(ip6.SrcIP)
	dst, _ := netip.AddrFromSlice(ip6.DstIP)
	return naPacket{
		EthSrc: eth.SrcMAC.String(), EthDst: eth.DstMAC.String(),
		Src: src, Dst: dst, HopLimit: ip6.HopLimit,
		ChecksumOK: icmpv6ChecksumOK(ip6, frame[len(frame)-len(ip6.Payload):]),
		NA:         naViewOf(na),
	}, true
}

// icmpv6ChecksumOK verifies the ICMPv6 checksum over the pseudo-header
// (RFC 8200 section 8.1); the kernel writes it, the test checks it.
func icmpv6ChecksumOK(ip6 *layers.IPv6, msg []byte) bool {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip6.SrcIP.To16())
	add(ip6.DstIP.To16())
	n := uint32(len(msg))
	sum += n>>16 + n&0xffff
	sum += 58
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}
