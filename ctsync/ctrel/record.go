package ctrel

import "github.com/muros/muros-had/ctsync/ctwire"

// flowRecord is a ctwire.Flow as the sender's table keeps it: without a
// pointer. A netip.Addr holds one, so a table of Flows is memory the
// garbage collector must walk at every cycle: with 250,000 flows a cycle's
// marking took 10-20 ms of CPU, at the daemon's real-time priority, in
// which nothing of time-sharing priority ran on that CPU (the forwarding
// path's deferred softirqs, the firewall's own processes). A table of
// flowRecords in a map of indexes is never walked (bench/README.md,
// session 8). The conversion is exact for valid addresses without an
// IPv6 zone (ctwire.ID.Key); each address keeps its own family, since ctnl
// unmaps them one by one.
type flowRecord struct {
	id        ctwire.ID // original tuple, protocol, zone
	replySrc  [16]byte
	replyDst  [16]byte
	replySrcP uint16
	replyDstP uint16
	replySrc4 bool
	replyDst4 bool
	op        ctwire.Op
	status    uint32
	timeout   uint32
	mark      uint32
	hasTCP    bool
	tcp       ctwire.TCPInfo
	hasLabels bool
	labels    [16]byte
}

// recordOf is f as the table keeps it.
func recordOf(f *ctwire.Flow) flowRecord {
	return flowRecord{
		id:       f.ID(),
		replySrc: f.Reply.Src.As16(), replyDst: f.Reply.Dst.As16(),
		replySrcP: f.Reply.SrcPort, replyDstP: f.Reply.DstPort,
		replySrc4: f.Reply.Src.Is4(), replyDst4: f.Reply.Dst.Is4(),
		op: f.Op, status: f.Status, timeout: f.Timeout, mark: f.Mark,
		hasTCP: f.HasTCP, tcp: f.TCP, hasLabels: f.HasLabels, labels: f.Labels,
	}
}

// flow is the record as a ctwire.Flow.
func (r *flowRecord) flow() ctwire.Flow {
	k := r.id.Key()
	return ctwire.Flow{
		Op: r.op, Proto: k.Proto, Zone: k.Zone, Status: r.status, Timeout: r.timeout, Mark: r.mark,
		Orig: k.Orig, Reply: r.reply(),
		HasTCP: r.hasTCP, TCP: r.tcp, HasLabels: r.hasLabels, Labels: r.labels,
	}
}

// reply is the record's reply tuple.
func (r *flowRecord) reply() ctwire.Tuple {
	return ctwire.Tuple{Src: ctwire.Addr16(r.replySrc, r.replySrc4), Dst: ctwire.Addr16(r.replyDst, r.replyDst4), SrcPort: r.replySrcP, DstPort: r.replyDstP}
}
