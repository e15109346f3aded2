package status

import (
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/vrrp"
)

// PeerSource gives the peer's part of the document, derived at the time of
// the read (package peerview: how recent adverts and health answers are
// decides the peer's role).
type PeerSource interface {
	Report(now time.Time) PeerReport
}

// PeerReport is the peer's part of the document.
type PeerReport struct {
	Peer       PeerStatus
	SplitBrain Alarm
	Ruleset    RulesetCompare
}

// Book holds the status fields the event loop reports; readers take a
// snapshot under the lock. It records what it is told and decides nothing:
// the peer's part and its alarms come from the PeerSource.
type Book struct {
	mu   sync.Mutex
	st   Status
	peer PeerSource
	// readyGen is the generation of the gate that last set st.Readiness: a
	// superseded gate's late update is dropped.
	readyGen uint64
}

// NewBook starts the document of the node cfg configures; peer gives the
// peer's part.
func NewBook(cfg *config.Config, peer PeerSource) *Book {
	host, _ := os.Hostname()
	b := &Book{peer: peer, st: Status{
		Node:     host,
		Role:     string(cfg.Role),
		State:    vrrp.StateInitialize.String(),
		Priority: cfg.Priority(),
		Since:    time.Now().UTC(),
		Links:    map[string]bool{},
	}}
	for _, v := range cfg.VIPs {
		b.st.VIPs = append(b.st.VIPs, VIPStatus{VRID: v.VRID, Interface: v.Interface, Address: v.Address.String(), State: vrrp.StateInitialize.String()})
	}
	return b
}

// Transition records an instance's change of state and the group's state
// after it.
func (b *Book) Transition(vrid uint8, from, to vrrp.State, reason string, now time.Time, group vrrp.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.st.VIPs {
		if b.st.VIPs[i].VRID == vrid {
			b.st.VIPs[i].State = to.String()
		}
	}
	if g := group.String(); g != b.st.State {
		// A failover is the group entering or leaving MASTER, or going to
		// FAULT; a start as BACKUP is not one.
		master, fault := vrrp.StateMaster.String(), vrrp.StateFault.String()
		if g == master || b.st.State == master || g == fault {
			f := Failover{Time: now.UTC(), From: b.st.State, To: g, Reason: reason}
			b.st.LastFailover = &f
			if len(b.st.Timeline) == TimelineLen {
				b.st.Timeline = slices.Delete(b.st.Timeline, 0, 1)
			}
			b.st.Timeline = append(b.st.Timeline, f)
		}
		b.st.State = g
	}
}

// Readiness records a change of the preemption hold by the event loop;
// newHold counts a new hold.
func (b *Book) Readiness(gen uint64, held bool, reason string, waiting []string, now time.Time, newHold bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var holds uint64
	if b.st.Readiness != nil {
		holds = b.st.Readiness.Holds
	}
	if newHold {
		holds++
	}
	b.readyGen = gen
	b.st.Readiness = &Readiness{Held: held, Reason: reason, Waiting: slices.Clone(waiting), Since: now.UTC(), Holds: holds}
}

// ReadinessWaiting updates what the current gate (gen) still waits for.
func (b *Book) ReadinessWaiting(gen uint64, waiting []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.readyGen || b.st.Readiness == nil || !b.st.Readiness.Held || slices.Equal(waiting, b.st.Readiness.Waiting) {
		return
	}
	r := *b.st.Readiness
	r.Waiting = slices.Clone(waiting)
	b.st.Readiness = &r
}

// ForeignRouter records an advert for one of our VRIDs from a router that
// is not the peer.
func (b *Book) ForeignRouter(vrid uint8, src netip.Addr, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.st.Foreign {
		if b.st.Foreign[i].VRID == vrid && b.st.Foreign[i].Address == src.String() {
			b.st.Foreign[i].LastSeen = now.UTC()
			return
		}
	}
	b.st.Foreign = append(b.st.Foreign, ForeignRouter{VRID: vrid, Address: src.String(), LastSeen: now.UTC()})
}

// SetScheduling records the process's CPU scheduling.
func (b *Book) SetScheduling(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Scheduling = s
}

// SetRole records a reloaded role and priority.
func (b *Book) SetRole(cfg *config.Config) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Role = string(cfg.Role)
	b.st.Priority = cfg.Priority()
}

// VIPError records a failed claim or release (op), or with a nil err that
// the kernel agrees with the state again.
func (b *Book) VIPError(op string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		b.st.VIPError = ""
		return
	}
	b.st.VIPError = op + ": " + err.Error()
}

// Link records a tracked interface going up or down.
func (b *Book) Link(ifname string, up bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Links[ifname] = up
}

// Snapshot returns a copy with the peer's part as of now.
func (b *Book) Snapshot(now time.Time) Status {
	b.mu.Lock()
	s := b.st
	s.VIPs = slices.Clone(b.st.VIPs)
	s.Foreign = slices.Clone(b.st.Foreign)
	s.Checks = slices.Clone(b.st.Checks)
	s.Timeline = slices.Clone(b.st.Timeline)
	s.Time = now.UTC()
	s.Links = make(map[string]bool, len(b.st.Links))
	for k, v := range b.st.Links {
		s.Links[k] = v
	}
	if b.st.LastFailover != nil {
		f := *b.st.LastFailover
		s.LastFailover = &f
	}
	if b.st.Readiness != nil {
		// Replaced, never modified in place: the copy may share Waiting.
		r := *b.st.Readiness
		s.Readiness = &r
	}
	b.mu.Unlock()
	// Outside the lock: the source has its own and never calls back.
	if b.peer != nil {
		p := b.peer.Report(now)
		s.Peer, s.SplitBrain, s.Ruleset = p.Peer, p.SplitBrain, p.Ruleset
	}
	return s
}
