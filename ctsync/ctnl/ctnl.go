// Package ctnl is the kernel side of conntrack synchronisation: it converts
// kernel conntrack entries (dumped with github.com/ti-mo/conntrack, or
// events decoded allocation-free by ParseEvent) to wire records and
// injects wire records into the local kernel table with ctnetlink
// messages built here, because ti-mo/conntrack's Create cannot carry NAT
// bindings. The batch path appends them straight into one buffer
// (AppendCreate, AppendUpdate, AppendDelete; layout in encode.go); the
// one-by-one fallback builds the same bytes as github.com/ti-mo/netfilter
// attribute trees (CreateAttrs, UpdateAttrs, DeleteAttrs).
//
// Standards: Linux ctnetlink (include/uapi/linux/netfilter/
// nfnetlink_conntrack.h; net/netfilter/nf_conntrack_netlink.c). The facts
// this package relies on, read from the kernel source:
//
//   - IPCTNL_MSG_CT_NEW with NLM_F_CREATE|NLM_F_EXCL creates an entry
//     (ctnetlink_create_conntrack); without NLM_F_EXCL on an existing
//     entry it changes it (ctnetlink_change_conntrack), which refuses
//     CTA_NAT_SRC/CTA_NAT_DST with EOPNOTSUPP: NAT is set at creation only.
//   - NAT is recreated the way conntrackd does it (conntrack-tools
//     src/netlink.c, libnetfilter_conntrack NFCT_SOPT_SETUP_REPLY): the
//     reply tuple is sent as the inverted original tuple and the mappings
//     as CTA_NAT_DST then CTA_NAT_SRC, each {CTA_NAT_V4_MINIP = MAXIP (or
//     V6), CTA_NAT_PROTO {CTA_PROTONAT_PORT_MIN = MAX}}; ctnetlink_setup_nat
//     runs nf_nat_setup_info, which rewrites the reply tuple and sets
//     IPS_SRC_NAT / IPS_DST_NAT and the *_NAT_DONE bits. Status bits in
//     IPS_UNCHANGEABLE_MASK (NAT, CONFIRMED, EXPECTED ...) cannot be set
//     through CTA_STATUS, and a CTA_STATUS that differs from the entry in
//     CONFIRMED, EXPECTED or DYING is refused with EBUSY.
//   - Several ctnetlink requests may share one sendmsg: netlink_rcv_skb
//     processes them in order and, with NLM_F_ACK, answers each with an
//     NLMSG_ERROR carrying its sequence number (0 = success). ApplyBatch
//     injects a whole datagram that way.
//   - CTA_PROTOINFO_TCP_FLAGS_* are struct nf_ct_tcp_flags {flags, mask};
//     the kernel applies flags under mask. Injected TCP entries get
//     IP_CT_TCP_FLAG_BE_LIBERAL in both directions so window tracking,
//     which has not seen the stream's sequence numbers, does not mark the
//     first packets after a takeover INVALID.
package ctnl

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// ctnetlink attribute numbers (enum ctattr_type and friends).
const (
	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaStatus     = 3
	ctaProtoInfo  = 4
	ctaNATSrc     = 6
	ctaTimeout    = 7
	ctaMark       = 8
	ctaNATDst     = 13
	ctaZone       = 18
	ctaLabels     = 22

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum      = 1
	ctaProtoSrcPort  = 2
	ctaProtoDstPort  = 3
	ctaProtoICMPID   = 4
	ctaProtoICMPType = 5
	ctaProtoICMPCode = 6
	ctaProtoICMP6ID  = 7
	ctaProtoICMP6Typ = 8
	ctaProtoICMP6Cod = 9

	ctaProtoInfoTCP       = 1
	ctaTCPState           = 1
	ctaTCPWScaleOrig      = 2
	ctaTCPWScaleReply     = 3
	ctaTCPFlagsOrig       = 4
	ctaTCPFlagsReply      = 5
	ctaNATV4MinIP         = 1
	ctaNATV4MaxIP         = 2
	ctaNATProto           = 3
	ctaNATV6MinIP         = 4
	ctaNATV6MaxIP         = 5
	ctaProtoNATPortMin    = 1
	ctaProtoNATPortMax    = 2
	ipctnlMsgCTNew        = 0
	ipctnlMsgCTDelete     = 2
	ipProtoICMP           = 1
	ipProtoICMPv6         = 58
	ipProtoTCP            = 6
	tcpFlagBeLiberal      = 0x08
	tcpStateSynSent       = 1
	tcpStateEstablished   = 3
	StatusSeenReply       = 1 << 1
	StatusAssured         = 1 << 2
	StatusConfirmed       = 1 << 3
	statusSettable        = StatusSeenReply | StatusAssured
	labelsLen             = 16
	defaultInjectTimeout  = 120
	maxTCPConntrackStates = 10
)

// FromKernel converts a kernel flow to a wire UPDATE record. ok is false
// for entries that cannot be replicated (no tuples).
func FromKernel(k *conntrack.Flow) (f ctwire.Flow, ok bool) {
	if !k.TupleOrig.IP.SourceAddress.IsValid() || !k.TupleOrig.IP.DestinationAddress.IsValid() {
		return f, false
	}
	f.Op = ctwire.OpUpdate
	f.Proto = k.TupleOrig.Proto.Protocol
	f.Zone = k.Zone
	f.Status = uint32(k.Status)
	f.Timeout = k.Timeout
	f.Mark = k.Mark
	f.Orig = tupleFromKernel(&k.TupleOrig)
	if k.TupleReply.IP.SourceAddress.IsValid() {
		f.Reply = tupleFromKernel(&k.TupleReply)
	} else {
		f.Reply = f.Orig.Invert()
	}
	if t := k.ProtoInfo.TCP; t != nil {
		f.HasTCP = true
		f.TCP = ctwire.TCPInfo{
			State: t.State, WScaleOrig: t.OriginalWindowScale, WScaleReply: t.ReplyWindowScale,
			// nf_ct_tcp_flags is {flags, mask}, decoded big-endian.
			FlagsOrig: uint8(t.OriginalFlags >> 8), FlagsReply: uint8(t.ReplyFlags >> 8),
		}
	}
	if len(k.Labels) == labelsLen {
		var zero [labelsLen]byte
		if [labelsLen]byte(k.Labels) != zero {
			f.HasLabels = true
			f.Labels = [labelsLen]byte(k.Labels)
		}
	}
	return f, true
}

func tupleFromKernel(t *conntrack.Tuple) ctwire.Tuple {
	w := ctwire.Tuple{Src: t.IP.SourceAddress.Unmap(), Dst: t.IP.DestinationAddress.Unmap()}
	switch t.Proto.Protocol {
	case ipProtoICMP, ipProtoICMPv6:
		w.SrcPort = t.Proto.ICMPID
		w.DstPort = uint16(t.Proto.ICMPType)<<8 | uint16(t.Proto.ICMPCode)
	default:
		w.SrcPort, w.DstPort = t.Proto.SourcePort, t.Proto.DestinationPort
	}
	return w
}

// KeyFromKernel returns the wire key of a kernel flow (DESTROY events).
func KeyFromKernel(k *conntrack.Flow) ctwire.Key {
	return ctwire.Key{Orig: tupleFromKernel(&k.TupleOrig), Proto: k.TupleOrig.Proto.Protocol, Zone: k.Zone}
}

func addrAttr(typ uint16, a netip.Addr) netfilter.Attribute {
	return netfilter.Attribute{Type: typ, Data: a.AsSlice()}
}

func tupleAttr(typ uint16, proto uint8, t ctwire.Tuple) netfilter.Attribute {
	ip := netfilter.Attribute{Type: ctaTupleIP, Nested: true}
	if t.Src.Is4() {
		ip.Children = []netfilter.Attribute{addrAttr(ctaIPv4Src, t.Src), addrAttr(ctaIPv4Dst, t.Dst)}
	} else {
		ip.Children = []netfilter.Attribute{addrAttr(ctaIPv6Src, t.Src), addrAttr(ctaIPv6Dst, t.Dst)}
	}
	pr := netfilter.Attribute{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{{Type: ctaProtoNum, Data: []byte{proto}}}}
	switch proto {
	case ipProtoICMP:
		pr.Children = append(pr.Children,
			netfilter.Attribute{Type: ctaProtoICMPID, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoICMPType, Data: []byte{byte(t.DstPort >> 8)}},
			netfilter.Attribute{Type: ctaProtoICMPCode, Data: []byte{byte(t.DstPort)}})
	case ipProtoICMPv6:
		pr.Children = append(pr.Children,
			netfilter.Attribute{Type: ctaProtoICMP6ID, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoICMP6Typ, Data: []byte{byte(t.DstPort >> 8)}},
			netfilter.Attribute{Type: ctaProtoICMP6Cod, Data: []byte{byte(t.DstPort)}})
	default:
		pr.Children = append(pr.Children,
			netfilter.Attribute{Type: ctaProtoSrcPort, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoDstPort, Data: netfilter.Uint16Bytes(t.DstPort)})
	}
	return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{ip, pr}}
}

func isICMP(proto uint8) bool { return proto == ipProtoICMP || proto == ipProtoICMPv6 }

// NAT describes the bindings encoded by a flow's reply tuple.
type NAT struct {
	SrcNAT, DstNAT   bool
	SrcAddr, DstAddr netip.Addr
	SrcPort, DstPort uint16
}

// NATOf derives the NAT bindings from the tuples: source NAT shows as a
// reply destination that differs from the original source, destination
// NAT as a reply source that differs from the original destination.
func NATOf(f *ctwire.Flow) NAT {
	var n NAT
	o, r := f.Orig, f.Reply
	if isICMP(f.Proto) {
		// ICMP keeps its identifier in the source half of both tuples.
		n.SrcNAT = r.Dst != o.Src || r.SrcPort != o.SrcPort
		n.SrcAddr, n.SrcPort = r.Dst, r.SrcPort
		n.DstNAT = r.Src != o.Dst
		n.DstAddr = r.Src
		return n
	}
	n.SrcNAT = r.Dst != o.Src || r.DstPort != o.SrcPort
	n.SrcAddr, n.SrcPort = r.Dst, r.DstPort
	n.DstNAT = r.Src != o.Dst || r.SrcPort != o.DstPort
	n.DstAddr, n.DstPort = r.Src, r.SrcPort
	return n
}

func natAttr(typ uint16, a netip.Addr, port uint16, withPort bool) netfilter.Attribute {
	minT, maxT := uint16(ctaNATV4MinIP), uint16(ctaNATV4MaxIP)
	if !a.Is4() {
		minT, maxT = ctaNATV6MinIP, ctaNATV6MaxIP
	}
	n := netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{addrAttr(minT, a), addrAttr(maxT, a)}}
	if withPort {
		n.Children = append(n.Children, netfilter.Attribute{Type: ctaNATProto, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaProtoNATPortMin, Data: netfilter.Uint16Bytes(port)},
			{Type: ctaProtoNATPortMax, Data: netfilter.Uint16Bytes(port)},
		}})
	}
	return n
}

func tcpAttr(t ctwire.TCPInfo) netfilter.Attribute {
	state := t.State
	if state >= maxTCPConntrackStates {
		state = 3 // ESTABLISHED; the kernel rejects unknown states
	}
	fo := []byte{t.FlagsOrig | tcpFlagBeLiberal, 0xff}
	fr := []byte{t.FlagsReply | tcpFlagBeLiberal, 0xff}
	return netfilter.Attribute{Type: ctaProtoInfo, Nested: true, Children: []netfilter.Attribute{{
		Type: ctaProtoInfoTCP, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaTCPState, Data: []byte{state}},
			{Type: ctaTCPWScaleOrig, Data: []byte{t.WScaleOrig}},
			{Type: ctaTCPWScaleReply, Data: []byte{t.WScaleReply}},
			{Type: ctaTCPFlagsOrig, Data: fo},
			{Type: ctaTCPFlagsReply, Data: fr},
		},
	}}}
}

// CreateAttrs builds the attributes of an IPCTNL_MSG_CT_NEW that creates f
// with its NAT bindings. confirmed adds IPS_CONFIRMED to CTA_STATUS (kernels
// before 6.3 set it before applying CTA_STATUS; later ones after).
func CreateAttrs(f *ctwire.Flow, confirmed bool) []netfilter.Attribute {
	n := NATOf(f)
	reply := f.Reply
	if n.SrcNAT || n.DstNAT {
		reply = f.Orig.Invert()
	}
	attrs := []netfilter.Attribute{
		tupleAttr(ctaTupleOrig, f.Proto, f.Orig),
		tupleAttr(ctaTupleReply, f.Proto, reply),
	}
	attrs = append(attrs, common(f, confirmed, true)...)
	icmp := isICMP(f.Proto)
	if n.DstNAT {
		attrs = append(attrs, natAttr(ctaNATDst, n.DstAddr, n.DstPort, !icmp))
	}
	if n.SrcNAT {
		attrs = append(attrs, natAttr(ctaNATSrc, n.SrcAddr, n.SrcPort, true))
	}
	return attrs
}

// UpdateAttrs builds the attributes of an IPCTNL_MSG_CT_NEW that changes
// the existing entry for f (no NAT: immutable after creation).
func UpdateAttrs(f *ctwire.Flow) []netfilter.Attribute {
	return append([]netfilter.Attribute{tupleAttr(ctaTupleOrig, f.Proto, f.Orig)}, common(f, true, false)...)
}

func common(f *ctwire.Flow, confirmed, create bool) []netfilter.Attribute {
	timeout := f.Timeout
	if timeout == 0 {
		timeout = defaultInjectTimeout
	}
	status := f.Status & statusSettable
	if confirmed {
		status |= StatusConfirmed
	}
	attrs := []netfilter.Attribute{
		{Type: ctaTimeout, Data: netfilter.Uint32Bytes(timeout)},
		{Type: ctaStatus, Data: netfilter.Uint32Bytes(status)},
		{Type: ctaMark, Data: netfilter.Uint32Bytes(f.Mark)},
	}
	if f.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: netfilter.Uint16Bytes(f.Zone)})
	}
	if f.Proto == ipProtoTCP && (f.HasTCP || create) {
		t := f.TCP
		if !f.HasTCP {
			// No state known: a flow that has seen a reply is taken as
			// established (be-liberal follows), else as opening.
			t = ctwire.TCPInfo{State: tcpStateSynSent}
			if f.Status&StatusSeenReply != 0 {
				t.State = tcpStateEstablished
			}
		}
		attrs = append(attrs, tcpAttr(t))
	}
	if f.HasLabels {
		attrs = append(attrs, netfilter.Attribute{Type: ctaLabels, Data: append([]byte(nil), f.Labels[:]...)})
	}
	return attrs
}

// DeleteAttrs builds the attributes of an IPCTNL_MSG_CT_DELETE for k.
func DeleteAttrs(k ctwire.Key) []netfilter.Attribute {
	attrs := []netfilter.Attribute{tupleAttr(ctaTupleOrig, k.Proto, k.Orig)}
	if k.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: netfilter.Uint16Bytes(k.Zone)})
	}
	return attrs
}

// Injector writes wire records into the kernel table of the network
// namespace it was dialled in.
type Injector struct {
	c       *netfilter.Conn
	known   map[ctwire.ID]struct{} // flows this injector put in the kernel
	confirm bool                   // this kernel wants IPS_CONFIRMED in a create's CTA_STATUS
	stats   InjectStats
	b       *batchConn // nil after a failed exchange until the next ApplyBatch redials
	ns      netns.NsHandle
	kinds   []opKind
	res     []unix.Errno           // ApplyBatch's per-record errno, reused
	inChunk map[ctwire.ID]struct{} // ApplyBatch's IDs of the chunk being cut, reused
}

// InjectStats counts kernel operations.
type InjectStats struct {
	Created, Updated, Deleted, Errors uint64
	LabelsDropped                     uint64 // created without their labels
	// BatchRedials counts batch sockets replaced after a failed exchange
	// (the chunk then went one record at a time).
	BatchRedials uint64
}

// DialInjector opens a ctnetlink socket in the calling thread's namespace.
func DialInjector() (*Injector, error) {
	c, err := netfilter.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("ctnl: dial ctnetlink: %w", err)
	}
	b, err := dialBatch()
	if err != nil {
		c.Close()
		return nil, err
	}
	ns, err := netns.Get()
	if err != nil {
		b.close()
		c.Close()
		return nil, fmt.Errorf("ctnl: namespace handle: %w", err)
	}
	return &Injector{c: c, b: b, ns: ns, known: make(map[ctwire.ID]struct{}), inChunk: make(map[ctwire.ID]struct{})}, nil
}

// Close closes the sockets.
func (in *Injector) Close() error {
	if in.b != nil {
		in.b.close()
	}
	in.ns.Close()
	return in.c.Close()
}

// Stats returns the counters.
func (in *Injector) Stats() InjectStats { return in.stats }

func family(f *ctwire.Flow) netfilter.ProtoFamily {
	if f.Orig.Src.Is4() {
		return netfilter.ProtoIPv4
	}
	return netfilter.ProtoIPv6
}

func (in *Injector) query(msgType uint8, flags netlink.HeaderFlags, fam netfilter.ProtoFamily, attrs []netfilter.Attribute) error {
	m, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: netfilter.MessageType(msgType),
		Family:      fam,
		Flags:       netlink.Request | netlink.Acknowledge | flags,
	}, attrs)
	if err != nil {
		return fmt.Errorf("ctnl: marshal: %w", err)
	}
	_, err = in.c.Query(m)
	return err
}

func (in *Injector) create(f *ctwire.Flow) error {
	err := in.query(ipctnlMsgCTNew, netlink.Create|netlink.Excl, family(f), CreateAttrs(f, in.confirm))
	if errors.Is(err, unix.EBUSY) {
		// The other kernel generation: retry with the CONFIRMED bit flipped.
		in.confirm = !in.confirm
		err = in.query(ipctnlMsgCTNew, netlink.Create|netlink.Excl, family(f), CreateAttrs(f, in.confirm))
	}
	return err
}

func (in *Injector) update(f *ctwire.Flow) error {
	err := in.query(ipctnlMsgCTNew, 0, family(f), UpdateAttrs(f))
	if err != nil && f.HasLabels && !errors.Is(err, unix.ENOENT) {
		nl := *f
		nl.HasLabels = false
		if err = in.query(ipctnlMsgCTNew, 0, family(f), UpdateAttrs(&nl)); err == nil {
			in.stats.LabelsDropped++
		}
	}
	return err
}

// Apply creates, updates or deletes the kernel entry for f.
func (in *Injector) Apply(f *ctwire.Flow) error {
	k := f.ID()
	if f.Op == ctwire.OpDestroy {
		delete(in.known, k)
		err := in.query(ipctnlMsgCTDelete, 0, family(f), DeleteAttrs(f.Key()))
		if err != nil && !errors.Is(err, unix.ENOENT) {
			in.stats.Errors++
			return fmt.Errorf("ctnl: delete %v: %w", f.Orig, err)
		}
		in.stats.Deleted++
		return nil
	}
	if _, ok := in.known[k]; ok {
		err := in.update(f)
		if err == nil {
			in.stats.Updated++
			return nil
		}
		if !errors.Is(err, unix.ENOENT) {
			in.stats.Errors++
			return fmt.Errorf("ctnl: update %v: %w", f.Orig, err)
		}
		delete(in.known, k) // expired or deleted locally: create again
	}
	err := in.create(f)
	if err != nil && f.HasLabels && !errors.Is(err, unix.EEXIST) {
		// No connlabel extension here (no rule uses ct label): keep the
		// flow, lose the labels.
		nl := *f
		nl.HasLabels = false
		if err = in.create(&nl); err == nil {
			in.stats.LabelsDropped++
		}
	}
	if errors.Is(err, unix.EEXIST) {
		in.known[k] = struct{}{}
		if err = in.update(f); err == nil {
			in.stats.Updated++
			return nil
		}
	}
	if err != nil {
		in.stats.Errors++
		return fmt.Errorf("ctnl: create %v: %w", f.Orig, err)
	}
	in.known[k] = struct{}{}
	in.stats.Created++
	return nil
}

// Known is the number of flows the injector believes exist.
func (in *Injector) Known() int { return len(in.known) }

// Forget drops the injector's memory of which flows exist (after a purge
// or a role change).
func (in *Injector) Forget() { clear(in.known) }
