package ctrel

import "github.com/muros/muros-had/ctsync/ctwire"

// flowRecord is a ctwire.Flow as the sender's table keeps it: without a
// pointer. A netip.Addr holds one, so a table of Flows is memory the
// garbage collector must walk at every cycle: while a new master filled a
// 250,000-flow table, marking took about 16 ms of CPU in a 20 ms window
// (one profile), at the daemon's real-time priority, ahead of everything
// of time-sharing priority on that CPU (the forwarding path's deferred
// softirqs, the firewall's own processes). A table of
// flowRecords in a map of indexes is never walked (bench/README.md,
// session 8). The conversion is exact as ctwire.RawTuple says.
type flowRecord struct {
	id        ctwire.ID // original tuple, protocol, zone
	reply     ctwire.RawTuple
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
		id: f.ID(), reply: f.Reply.Raw(),
		op: f.Op, status: f.Status, timeout: f.Timeout, mark: f.Mark,
		hasTCP: f.HasTCP, tcp: f.TCP, hasLabels: f.HasLabels, labels: f.Labels,
	}
}

// flow is the record as a ctwire.Flow.
func (r *flowRecord) flow() ctwire.Flow {
	return ctwire.Flow{
		Op: r.op, Proto: r.id.Proto, Zone: r.id.Zone, Status: r.status, Timeout: r.timeout, Mark: r.mark,
		Orig: r.id.Orig.Tuple(), Reply: r.reply.Tuple(),
		HasTCP: r.hasTCP, TCP: r.tcp, HasLabels: r.hasLabels, Labels: r.labels,
	}
}
