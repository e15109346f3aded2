package dbsync

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Readiness: a node that starts (or restarts) as backup while the peer is
// master may hold older content than the master (the operator edited the
// peer while this node was down). If it preempted at once, its master loop
// would push that stale content over the peer's newer edits ("the master's
// content wins"). Ready tells the daemon when preemption is safe:
//
//   - the master's anti-entropy round against this incarnation (boot ID)
//     completed and the master said so with POST /api/sync/synced;
//   - the peer answers and is not master (nobody holds newer content that
//     this node would overwrite by preempting);
//   - the peer has been unreachable for ReadyPeerTimeout (a node alone must
//     not wait forever), unless Config.PeerAlive reports it alive by other
//     means (the daemon: VRRP hears its adverts): then its DB sync is
//     unreachable, not gone, and preempting could not take its newer
//     content first, so the node stays unready and Status.Waiting says so;
//   - this node became master.
//
// The same holds for a node that returns to backup without restarting (a
// tracked link back from FAULT, a demotion from master): the daemon calls
// Rearm. A re-armed node takes a new boot ID, so the master's next probe
// sees a new incarnation, compares the whole replicated set again and sends
// a synced notice for it; a notice for the old boot ID (a round that began
// before the re-arm) is refused with 409 and counted (synced_stale_boot).

// Readiness reasons (Status.ReadyReason).
const (
	ReadySynced     = "master_synced"     // the master's anti-entropy round against us completed
	ReadyPeerBackup = "peer_not_master"   // the peer answered and is not master
	ReadyPeerDown   = "peer_unreachable"  // no answer from the peer for ReadyPeerTimeout
	ReadyMaster     = "became_master"     // this node is master
	ReasonStaleBoot = "synced_stale_boot" // a synced notice for an earlier incarnation
)

// Synced is the body of POST /api/sync/synced: the master compared its
// content with the manifest the receiver served under BootID and pushed
// every difference; Revision is the master's revision after the round.
type Synced struct {
	BootID   string `json:"boot_id"`
	Revision uint64 `json:"revision"`
}

// Ready is closed once this node holds the current master's content or may
// preempt anyway (see the readiness reasons). It stays closed until Rearm.
func (n *Node) Ready() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready
}

// Rearm starts a new readiness wait: the node has returned to backup and
// must again receive the master's content, or learn that nobody holds newer
// content, before it may preempt. It takes a new boot ID (see above) and
// returns the channel that closes when the node is ready again. A wait
// still open is kept (its channel is returned), with the new boot ID.
func (n *Node) Rearm() <-chan struct{} {
	boot := newBootID()
	n.mu.Lock()
	old := n.bootID
	n.bootID = boot
	n.readyGen++
	select {
	case <-n.ready:
		n.ready = make(chan struct{})
		n.readyReason = ""
	default:
	}
	ch := n.ready
	n.mu.Unlock()
	n.stats.add("ready_rearms", 1)
	n.log.Info("dbsync: readiness re-armed; waiting for the master's content", "boot_id", boot, "previous_boot_id", old)
	select {
	case n.armCh <- struct{}{}:
	default:
	}
	return ch
}

// newBootID names an incarnation: 8 random bytes in hex.
func newBootID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// incarnation is the current boot ID.
func (n *Node) incarnation() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bootID
}

// arm returns the current readiness generation and boot ID.
func (n *Node) arm() (gen uint64, bootID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readyGen, n.bootID
}

// markReady closes the wait of generation gen (if it is still the current
// one and open) for reason.
func (n *Node) markReady(gen uint64, reason string, args ...any) {
	n.mu.Lock()
	if gen != n.readyGen {
		n.mu.Unlock()
		return
	}
	select {
	case <-n.ready:
		n.mu.Unlock()
		return
	default:
	}
	n.readyReason = reason
	close(n.ready)
	n.mu.Unlock()
	n.log.Info("dbsync: ready; preemption allowed as far as the DB is concerned", append([]any{"reason", reason}, args...)...)
}

// markReadyNow closes the current wait (becoming master ends any wait).
func (n *Node) markReadyNow(reason string) {
	gen, _ := n.arm()
	n.markReady(gen, reason)
}

func (n *Node) isReady() bool {
	select {
	case <-n.Ready():
		return true
	default:
		return false
	}
}

// peerProbe decides a backup's readiness from successive probes of the
// peer. Pure: the caller supplies the instants.
type peerProbe struct {
	bound     time.Duration // how long an unreachable peer is waited for
	downSince time.Time     // start of the current unreachable streak (or of the wait)
}

// observe records one probe (reachable and the peer's role when it
// answered; alive: the peer is known alive by other means) at now, and
// reports whether the node is ready and why.
func (p *peerProbe) observe(now time.Time, reachable, alive bool, role string) (ready bool, reason string) {
	switch {
	case reachable && role != "master":
		return true, ReadyPeerBackup
	case reachable, alive:
		// A live master: wait for its anti-entropy round (POST synced).
		p.downSince = time.Time{}
		return false, ""
	case p.downSince.IsZero():
		p.downSince = now
	}
	if now.Sub(p.downSince) >= p.bound {
		return true, ReadyPeerDown
	}
	return false, ""
}

// watchReadiness probes the peer as backup while a readiness wait is open,
// and waits for the next Rearm once it is closed, until ctx ends.
func (n *Node) watchReadiness(ctx context.Context) {
	for {
		n.probeUntilReady(ctx)
		select {
		case <-ctx.Done():
			return
		case <-n.armCh:
		}
	}
}

// probeUntilReady probes the peer until the current wait is closed. A
// Rearm meanwhile restarts the unreachable-peer bound: it counts from the
// arm.
func (n *Node) probeUntilReady(ctx context.Context) {
	gen, _ := n.arm()
	p := peerProbe{bound: n.cfg.ReadyPeerTimeout, downSince: time.Now()}
	t := time.NewTicker(n.cfg.ProbeInterval)
	defer t.Stop()
	for !n.isReady() {
		if g, _ := n.arm(); g != gen {
			gen, p = g, peerProbe{bound: n.cfg.ReadyPeerTimeout, downSince: time.Now()}
		}
		if !n.master.Load() {
			pctx, cancel := context.WithTimeout(ctx, max(n.cfg.ProbeInterval, n.cfg.ReadyPeerTimeout))
			h, err := n.fetchHello(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			alive := n.cfg.PeerAlive != nil && n.cfg.PeerAlive()
			n.setWaiting(waitingReason(err, alive, h.Role, n.skew.status()))
			if ok, reason := p.observe(time.Now(), err == nil, alive, h.Role); ok {
				if err != nil {
					n.markReady(gen, reason, "waited", n.cfg.ReadyPeerTimeout, "err", err)
				} else {
					n.markReady(gen, reason, "peer_role", h.Role)
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-n.Ready():
			return
		case <-t.C:
		case <-n.armCh:
			// Re-armed while still waiting: keep probing under the new
			// generation; the outer loop needs no second wake-up.
		}
	}
}

// waitingReason says why a backup is not ready yet, for the status. Pure.
func waitingReason(err error, alive bool, role string, skew *ClockSkew) string {
	var s string
	switch {
	case err != nil && alive:
		s = "the peer is alive but its DB sync does not answer (" + err.Error() + "): preempting now could not take its newer content first"
	case err != nil:
		return ""
	case role == "master":
		s = "waiting for the master to compare and send what differs (POST " + PathSynced + ")"
	default:
		return ""
	}
	if skew != nil && skew.Warning != "" {
		s += "; " + skew.Warning
	}
	return s
}

func (n *Node) setWaiting(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.st.waiting = s
}

// notifySynced tells the peer (booted as bootID) that it now holds this
// master's content. A peer without the endpoint (older version) answers
// 404: it cannot be told, and waits out its own timeout.
func (n *Node) notifySynced(ctx context.Context, bootID string) error {
	body, err := json.Marshal(Synced{BootID: bootID, Revision: n.applier.revision().Revision})
	if err != nil {
		return err
	}
	_, err = n.do(ctx, http.MethodPost, PathSynced, body, nil)
	var se *statusError
	if errors.As(err, &se) {
		switch se.status {
		case http.StatusNotFound:
			n.log.Debug("dbsync: peer does not take synced notices", "err", err)
			return nil
		case http.StatusConflict:
			return fmt.Errorf("synced notice: %w: %w", errConflict, err)
		}
	}
	if err != nil {
		return fmt.Errorf("synced notice: %w", err)
	}
	n.stats.add("synced_notices_sent", 1)
	return nil
}

// maxSyncedBody bounds POST /api/sync/synced: a boot ID and a number.
const maxSyncedBody = 1 << 10

// checkSynced decodes a synced notice for the incarnation bootID; on error
// it names the rejection reason and HTTP status. Pure.
func checkSynced(body []byte, bootID string) (s Synced, status int, reason string, err error) {
	if len(body) > maxSyncedBody {
		return s, http.StatusRequestEntityTooLarge, ReasonTooLarge, fmt.Errorf("body over %d bytes", maxSyncedBody)
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, http.StatusBadRequest, ReasonDecode, err
	}
	if s.BootID != bootID {
		// The master compared an earlier incarnation of this node: its
		// probe sees the new boot ID and compares again.
		return s, http.StatusConflict, ReasonStaleBoot, fmt.Errorf("boot ID %q, this node is %q", s.BootID, bootID)
	}
	return s, http.StatusOK, "", nil
}

func (n *Node) handleSynced(w http.ResponseWriter, r *http.Request) {
	// One byte over the limit is enough to tell "too large".
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSyncedBody+1))
	if err != nil {
		n.reject(w, r, http.StatusBadRequest, ReasonTruncated, err)
		return
	}
	if n.master.Load() {
		n.reject(w, r, http.StatusConflict, ReasonNotBackup, errors.New("this node is master"))
		return
	}
	gen, bootID := n.arm()
	s, status, reason, err := checkSynced(body, bootID)
	if err != nil {
		n.reject(w, r, status, reason, err)
		return
	}
	n.stats.add("synced_notices_received", 1)
	n.markReady(gen, ReadySynced, "master_revision", s.Revision)
	writeJSON(w, http.StatusOK, struct{}{})
}
