package main

// muros-had inspect decodes every VRRP (IP protocol 112) and IPsec AH
// (protocol 51) packet of a capture file and prints one JSON object per line.
//
// Input: classic pcap (either byte order, µs or ns timestamps) or pcapng
// (each interface with its own link type), either one gzip-compressed,
// with link type Ethernet (1, 802.1Q / 802.1ad tags skipped), Linux cooked
// v1 (113), Linux cooked v2 (276), raw IP (101, 228, 229) or BSD loopback
// (0, 108). Link headers, byte by byte:
//
//	Ethernet: dst MAC [0:6], src MAC [6:12], EtherType [12:14] (0x8100 /
//	          0x88a8: 4-byte tag, EtherType follows), payload.
//	SLL:      packet type [0:2], ARPHRD [2:4], addr len [4:6], addr [6:14],
//	          protocol (EtherType) [14:16], payload at 16.
//	SLL2:     protocol (EtherType) [0:2], reserved [2:4], ifindex [4:8],
//	          ARPHRD [8:10], packet type [10], addr len [11], addr [12:20],
//	          payload at 20.
//	Loopback: 4-byte address family in host order of the capturing machine
//	          (2 = IPv4; 10, 24, 28, 30 = IPv6), payload at 4.
//
// Output fields (SPEC "Operator surface"): src, dst, ttl, version, vrid,
// priority, advert_interval_ms, addresses, auth ("none" | "pass" | "ah"),
// checksum_ok, and auth_ok when --password is given. checksum_ok accepts
// either VRRPv3-over-IPv4 checksum form (pseudo-header or message-only). With
// a password, auth_ok is false for an advert that carries no authentication.
// A protocol 112 / 51 packet that does not decode yields {"src", "dst",
// "error"} where error names the rejection reason; other packets are ignored.
// A summary line on stderr counts decoded and undecodable packets by reason.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/muros/muros-had/internal/capfile"
	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/vrrp"
)

// advertRecord is the output line of a decoded advert, in the SPEC's
// field order.
type advertRecord struct {
	Src              string   `json:"src"`
	Dst              string   `json:"dst"`
	TTL              int      `json:"ttl"`
	Version          int      `json:"version"`
	VRID             int      `json:"vrid"`
	Priority         int      `json:"priority"`
	AdvertIntervalMS int64    `json:"advert_interval_ms"`
	Addresses        []string `json:"addresses"`
	Auth             string   `json:"auth"`
	ChecksumOK       bool     `json:"checksum_ok"`
	AuthOK           *bool    `json:"auth_ok,omitempty"` // only with --password
}

// errorRecord is the output line of a VRRP / AH packet that does not decode.
type errorRecord struct {
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	Error string `json:"error"`
}

func cmdInspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	password := fs.String("password", "", "VRRP password: check PASS / AH authentication and report auth_ok")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: muros-had inspect [--password P] FILE.pcap")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	in, err := newInspector(*password)
	if err != nil {
		fmt.Fprintf(stderr, "muros-had inspect: %v\n", err)
		return 1
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "muros-had inspect: %v\n", err)
		return 1
	}
	defer f.Close()
	out := bufio.NewWriter(stdout)
	err = in.run(f, out)
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		fmt.Fprintf(stderr, "muros-had inspect: %s: %v\n", fs.Arg(0), err)
		return 1
	}
	fmt.Fprintf(stderr, "muros-had inspect: %s: %s\n", fs.Arg(0), in.summary())
	return 0
}

// inspector decodes packets without enforcing anything: a capture is
// looked at, not acted on.
type inspector struct {
	withPassword bool
	// Both accept either VRRPv3-over-IPv4 checksum form; unicast differs
	// in keepalived's AH ICV (TTL zeroed).
	multicast, unicast *vrrp.Codec
	// password, stretched (package kdf, a quarter of a second) only once
	// an advert signed with AH key version 2 needs it.
	password  string
	stretched bool
	addrs     []netip.Addr // reused across packets
	decoded   int
	rejected  map[vrrp.Reason]int // undecodable packets by reason
}

func newInspector(password string) (*inspector, error) {
	in := &inspector{
		withPassword: password != "",
		password:     password,
		addrs:        make([]netip.Addr, 0, 255),
		rejected:     map[vrrp.Reason]int{},
	}
	if err := in.codecs(kdf.Master{}); err != nil {
		return nil, err
	}
	return in, nil
}

// codecs (re)builds the two codecs; master gives the AH key version 2.
func (in *inspector) codecs(master kdf.Master) error {
	cfg := vrrp.Config{Version: 3, Auth: vrrp.AuthNone, Password: in.password, Master: master, Checksum: vrrp.ChecksumModeEither}
	m, err := vrrp.NewCodec(cfg)
	if err != nil {
		return err
	}
	cfg.Unicast = true
	u, err := vrrp.NewCodec(cfg)
	if err != nil {
		return err
	}
	in.multicast, in.unicast = m, u
	return nil
}

// run reads the capture from r and writes JSON lines to w.
func (in *inspector) run(r io.Reader, w io.Writer) error {
	src, err := capfile.NewReader(r)
	if err != nil {
		return fmt.Errorf("read capture: %w", err)
	}
	enc := json.NewEncoder(w)
	for n := 1; ; n++ {
		data, link, err := src.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("packet %d: %w", n, err)
		}
		ip, ok := linkPayload(link, data)
		if !ok {
			continue
		}
		rec, ok := in.inspectIP(ip)
		if !ok {
			continue
		}
		if err := enc.Encode(rec); err != nil {
			return err
		}
	}
}

// summary counts decoded and undecodable packets, the latter by reason.
func (in *inspector) summary() string {
	s := fmt.Sprintf("%d VRRP/AH packets decoded", in.decoded)
	reasons := slices.Sorted(maps.Keys(in.rejected))
	if len(reasons) == 0 {
		return s
	}
	total := 0
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		total += in.rejected[r]
		parts[i] = fmt.Sprintf("%s %d", r, in.rejected[r])
	}
	return fmt.Sprintf("%s, %d undecodable (%s)", s, total, strings.Join(parts, ", "))
}

// linkPayload returns the IPv4 / IPv6 packet inside a link-layer frame, or
// false for anything else.
func linkPayload(lt uint16, frame []byte) ([]byte, bool) {
	var ethertype uint16
	switch lt {
	case capfile.LinkEthernet:
		if len(frame) < 14 {
			return nil, false
		}
		ethertype, frame = binary.BigEndian.Uint16(frame[12:14]), frame[14:]
		for ethertype == 0x8100 || ethertype == 0x88a8 {
			if len(frame) < 4 {
				return nil, false
			}
			ethertype, frame = binary.BigEndian.Uint16(frame[2:4]), frame[4:]
		}
	case capfile.LinkLinuxSLL:
		if len(frame) < 16 {
			return nil, false
		}
		ethertype, frame = binary.BigEndian.Uint16(frame[14:16]), frame[16:]
	case capfile.LinkSLL2:
		if len(frame) < 20 {
			return nil, false
		}
		ethertype, frame = binary.BigEndian.Uint16(frame[0:2]), frame[20:]
	case capfile.LinkRaw, capfile.LinkIPv4, capfile.LinkIPv6:
		return frame, len(frame) > 0
	case capfile.LinkNull, capfile.LinkLoop:
		// The family is in the capturing host's byte order: accept either.
		if len(frame) < 4 {
			return nil, false
		}
		fam := binary.LittleEndian.Uint32(frame)
		if fam > 0xffff {
			fam = binary.BigEndian.Uint32(frame)
		}
		switch fam {
		case 2, 10, 24, 28, 30:
			return frame[4:], len(frame) > 4
		}
		return nil, false
	default:
		return nil, false
	}
	switch ethertype {
	case 0x0800, 0x86dd:
		return frame, true
	}
	return nil, false
}

// inspectIP decodes one IP packet. It reports false for packets that are
// neither VRRP nor AH. The record is an advertRecord or an errorRecord.
func (in *inspector) inspectIP(pkt []byte) (any, bool) {
	src, dst, proto, ok := peekIP(pkt)
	if !ok || (proto != vrrp.ProtocolVRRP && proto != vrrp.ProtocolAH) {
		return nil, false
	}
	rec, err := in.decode(pkt)
	if err != nil {
		r := vrrp.ReasonOf(err)
		if r == "" {
			r = "other"
		}
		in.rejected[r]++
		return errorRecord{Src: addrString(src), Dst: addrString(dst), Error: err.Error()}, true
	}
	in.decoded++
	return rec, true
}

// peekIP reads source, destination and protocol without validating anything
// else, so that an undecodable VRRP packet can still be reported by address.
func peekIP(pkt []byte) (src, dst netip.Addr, proto uint8, ok bool) {
	if len(pkt) < 1 {
		return src, dst, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < vrrp.IPv4HeaderLen {
			return src, dst, 0, false
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), pkt[9], true
	case 6:
		if len(pkt) < vrrp.IPv6HeaderLen {
			return src, dst, 0, false
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), pkt[6], true
	}
	return src, dst, 0, false
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// decode fully decodes a VRRP or AH packet with the codec of the packet's
// delivery: keepalived's AH leaves the TTL out of the ICV only for unicast.
func (in *inspector) decode(pkt []byte) (advertRecord, error) {
	_, dst, _, _ := peekIP(pkt)
	c := in.multicast
	if !dst.IsMulticast() {
		c = in.unicast
	}
	r, err := c.Inspect(pkt, in.addrs[:0])
	if err != nil {
		return advertRecord{}, err
	}
	if r.KeyVersion == vrrp.KeyV2 && r.AuthChecked && !in.stretched {
		master, err := kdf.Derive(in.password)
		if err != nil {
			return advertRecord{}, err
		}
		if err := in.codecs(master); err != nil {
			return advertRecord{}, err
		}
		in.stretched = true
		return in.decode(pkt)
	}
	rec := advertRecord{
		Src:              r.Src.String(),
		Dst:              r.Dst.String(),
		TTL:              int(r.TTL),
		Version:          int(r.Advert.Version),
		VRID:             int(r.Advert.VRID),
		Priority:         int(r.Advert.Priority),
		AdvertIntervalMS: r.Advert.Interval.Milliseconds(),
		Addresses:        make([]string, len(r.Advert.Addrs)),
		Auth:             "none",
		ChecksumOK:       r.ChecksumOK(),
	}
	for i, a := range r.Advert.Addrs {
		rec.Addresses[i] = a.String()
	}
	switch r.Auth {
	case vrrp.AuthPass:
		rec.Auth = "pass"
	case vrrp.AuthKeepalivedAH, vrrp.AuthAH:
		rec.Auth = "ah"
	}
	if in.withPassword {
		// An advert without authentication is not authenticated by the
		// password: auth_ok is false, not absent.
		ok := r.AuthChecked && r.AuthOK
		rec.AuthOK = &ok
	}
	return rec, nil
}
