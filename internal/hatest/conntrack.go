package hatest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
	"github.com/ti-mo/conntrack"
)

// CTStatusCompared are the conntrack status bits (IPS_*) a replica must
// reproduce: SEEN_REPLY, ASSURED, SRC_NAT and DST_NAT. CONFIRMED and the
// *_NAT_DONE bits are the kernel's bookkeeping of how the entry was made and
// legitimately differ between a flow the master saw and one injected into
// the backup.
const CTStatusCompared = uint32(conntrack.StatusSeenReply | conntrack.StatusAssured | conntrack.StatusSrcNAT | conntrack.StatusDstNAT)

// CTFlow is a conntrack entry reduced to what replication must carry over
// for a takeover to keep the flow: its tuples (the reply tuple encodes NAT),
// zone, mark, the compared status bits and the TCP state. Timeouts,
// counters and ids are left out on purpose: they differ between a master and
// its replica by design.
type CTFlow struct {
	Proto      uint8
	Zone       uint16
	OrigSrc    netip.AddrPort
	OrigDst    netip.AddrPort
	ReplySrc   netip.AddrPort
	ReplyDst   netip.AddrPort
	Mark       uint32
	Status     uint32 // masked with CTStatusCompared
	TCPState   uint8  // TCP_CONNTRACK_* (3 = ESTABLISHED); 0 for other protocols
	HasTCPInfo bool
}

func (f CTFlow) String() string {
	s := fmt.Sprintf("proto=%d %s->%s reply %s->%s status=%#x", f.Proto, f.OrigSrc, f.OrigDst, f.ReplySrc, f.ReplyDst, f.Status)
	if f.HasTCPInfo {
		s += fmt.Sprintf(" tcp_state=%d", f.TCPState)
	}
	if f.Zone != 0 || f.Mark != 0 {
		s += fmt.Sprintf(" zone=%d mark=%d", f.Zone, f.Mark)
	}
	return s
}

// SrcNATed reports whether the flow's reply goes to another address than
// the original source came from (source NAT applied).
func (f CTFlow) SrcNATed() bool { return f.ReplyDst.Addr() != f.OrigSrc.Addr() }

// TCPEstablished is conntrack's TCP_CONNTRACK_ESTABLISHED.
const TCPEstablished = 3

// ConntrackTable dumps the kernel conntrack table of ns over ctnetlink
// (from a thread switched into ns) and returns it normalised and sorted.
func ConntrackTable(ns *lab.Netns) ([]CTFlow, error) {
	var kf []conntrack.Flow
	err := ns.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		kf, err = c.Dump(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hatest: dumping conntrack in %s: %w", ns, err)
	}
	out := make([]CTFlow, 0, len(kf))
	for i := range kf {
		out = append(out, normalise(&kf[i]))
	}
	slices.SortFunc(out, compareCTFlow)
	return out, nil
}

func normalise(k *conntrack.Flow) CTFlow {
	ap := func(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }
	o, r := k.TupleOrig, k.TupleReply
	f := CTFlow{
		Proto:    o.Proto.Protocol,
		Zone:     k.Zone,
		OrigSrc:  ap(o.IP.SourceAddress, o.Proto.SourcePort),
		OrigDst:  ap(o.IP.DestinationAddress, o.Proto.DestinationPort),
		ReplySrc: ap(r.IP.SourceAddress, r.Proto.SourcePort),
		ReplyDst: ap(r.IP.DestinationAddress, r.Proto.DestinationPort),
		Mark:     k.Mark,
		Status:   uint32(k.Status) & CTStatusCompared,
	}
	// ICMP has no ports: the identifier and type<<8|code take their place
	// (as in ctwire), so echo flows stay distinct.
	if o.Proto.ICMPv4 || o.Proto.ICMPv6 {
		f.OrigSrc = ap(o.IP.SourceAddress, o.Proto.ICMPID)
		f.OrigDst = ap(o.IP.DestinationAddress, uint16(o.Proto.ICMPType)<<8|uint16(o.Proto.ICMPCode))
	}
	if r.Proto.ICMPv4 || r.Proto.ICMPv6 {
		f.ReplySrc = ap(r.IP.SourceAddress, r.Proto.ICMPID)
		f.ReplyDst = ap(r.IP.DestinationAddress, uint16(r.Proto.ICMPType)<<8|uint16(r.Proto.ICMPCode))
	}
	if k.ProtoInfo.TCP != nil {
		f.HasTCPInfo = true
		f.TCPState = k.ProtoInfo.TCP.State
	}
	return f
}

func compareCTFlow(a, b CTFlow) int {
	return cmp.Or(
		cmp.Compare(a.Proto, b.Proto),
		a.OrigSrc.Compare(b.OrigSrc),
		a.OrigDst.Compare(b.OrigDst),
		cmp.Compare(a.Zone, b.Zone),
	)
}

// ForwardedFlows is ConntrackTable of a pair firewall narrowed to the
// traffic it forwards between the pair's client and server (either
// direction): the firewall's own flows (VRRP, the sync multicast, anything
// to its addresses) are not what a takeover must keep.
func ForwardedFlows(p *lab.Pair, fw *lab.Netns) ([]CTFlow, error) {
	all, err := ConntrackTable(fw)
	if err != nil {
		return nil, err
	}
	hosts := []netip.Addr{p.ClientAddr.Addr(), p.ServerAddr.Addr()}
	if p.ClientAddr6.IsValid() {
		hosts = append(hosts, p.ClientAddr6.Addr(), p.ServerAddr6.Addr())
	}
	out := all[:0]
	for _, f := range all {
		if slices.Contains(hosts, f.OrigSrc.Addr()) && slices.Contains(hosts, f.OrigDst.Addr()) {
			out = append(out, f)
		}
	}
	return out, nil
}

// FlushConntrack empties the conntrack table of ns (`conntrack -F` inside
// it), as on a freshly booted box.
func FlushConntrack(ns *lab.Netns) error {
	if _, err := ns.Run("conntrack", "-F"); err != nil {
		return fmt.Errorf("hatest: flushing conntrack in %s: %w", ns, err)
	}
	return nil
}

// ConntrackStatus reads the "conntrack" part of the node's status; it is
// nil (no error) when the node runs without conntrack sync.
func (n *Node) ConntrackStatus(ctx context.Context) (*status.ConntrackStatus, error) {
	_, raw, err := status.Fetch(ctx, n.StatusSock)
	if err != nil {
		return nil, err
	}
	var st struct {
		Conntrack *status.ConntrackStatus `json:"conntrack"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("hatest: decoding the status of %s: %w", n.NS, err)
	}
	return st.Conntrack, nil
}
