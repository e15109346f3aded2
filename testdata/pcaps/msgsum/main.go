// Command msgsum derives a message-only-checksum capture from a real
// keepalived VRRPv3-over-IPv4 capture.
//
// keepalived 2.2.7 computes the VRRPv3 checksum over an IPv4 pseudo-header
// followed by the VRRP message (RFC 5798 section 5.2.8). Some routers compute
// it over the VRRP message alone. This program rewrites the 16-bit checksum
// (VRRP message bytes 6..7) of every VRRPv3 IPv4 packet to the one's
// complement sum of the message alone and copies every other packet
// unchanged, so replay tests cover both forms with otherwise real bytes.
//
// Usage: go run ./testdata/pcaps/msgsum IN.pcap OUT.pcap
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: msgsum IN.pcap OUT.pcap")
		os.Exit(2)
	}
	n, err := derive(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "msgsum:", err)
		os.Exit(1)
	}
	fmt.Printf("msgsum: rewrote %d VRRPv3 IPv4 checksums\n", n)
}

func derive(in, out string) (int, error) {
	f, err := os.Open(in)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", in, err)
	}
	o, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	w := pcapgo.NewWriter(o)
	if err := w.WriteFileHeader(r.Snaplen(), r.LinkType()); err != nil {
		o.Close()
		return 0, err
	}
	rewritten := 0
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			o.Close()
			return 0, fmt.Errorf("read %s: %w", in, err)
		}
		if rewrite(r.LinkType(), data) {
			rewritten++
		}
		if err := w.WritePacket(ci, data); err != nil {
			o.Close()
			return 0, err
		}
	}
	return rewritten, o.Close()
}

// rewrite replaces the checksum in place; it reports whether it did.
func rewrite(lt layers.LinkType, frame []byte) bool {
	var ethertype uint16
	var off int
	switch lt {
	case layers.LinkTypeEthernet:
		if len(frame) < 14 {
			return false
		}
		ethertype, off = binary.BigEndian.Uint16(frame[12:]), 14
	case layers.LinkTypeLinuxSLL:
		if len(frame) < 16 {
			return false
		}
		ethertype, off = binary.BigEndian.Uint16(frame[14:]), 16
	case 276: // LINKTYPE_LINUX_SLL2
		if len(frame) < 20 {
			return false
		}
		ethertype, off = binary.BigEndian.Uint16(frame[0:]), 20
	default:
		return false
	}
	if ethertype != 0x0800 {
		return false
	}
	ip := frame[off:]
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 112 {
		return false
	}
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if ihl < 20 || total > len(ip) || total < ihl+8 {
		return false
	}
	msg := ip[ihl:total]
	if msg[0]>>4 != 3 {
		return false
	}
	msg[6], msg[7] = 0, 0
	binary.BigEndian.PutUint16(msg[6:], ^sum(msg))
	return true
}

func sum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
