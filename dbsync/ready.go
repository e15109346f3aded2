package dbsync

import (
	"context"
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
//     not wait forever);
//   - this node became master.

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
// preempt anyway (see the readiness reasons). It never reopens: it gates
// the first preemption after start only.
func (n *Node) Ready() <-chan struct{} { return n.ready }

func (n *Node) markReady(reason string, args ...any) {
	n.readyOnce.Do(func() {
		n.mu.Lock()
		n.readyReason = reason
		n.mu.Unlock()
		close(n.ready)
		n.log.Info("dbsync: ready; preemption allowed as far as the DB is concerned", append([]any{"reason", reason}, args...)...)
	})
}

func (n *Node) isReady() bool {
	select {
	case <-n.ready:
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
// answered) at now, and reports whether the node is ready and why.
func (p *peerProbe) observe(now time.Time, reachable bool, role string) (ready bool, reason string) {
	switch {
	case reachable && role != "master":
		return true, ReadyPeerBackup
	case reachable:
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

// watchReadiness probes the peer as backup until the node is ready.
func (n *Node) watchReadiness(ctx context.Context) {
	p := peerProbe{bound: n.cfg.ReadyPeerTimeout, downSince: time.Now()}
	t := time.NewTicker(n.cfg.ProbeInterval)
	defer t.Stop()
	for !n.isReady() {
		if !n.master.Load() {
			pctx, cancel := context.WithTimeout(ctx, max(n.cfg.ProbeInterval, n.cfg.ReadyPeerTimeout))
			h, err := n.fetchHello(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if ok, reason := p.observe(time.Now(), err == nil, h.Role); ok {
				if err != nil {
					n.markReady(reason, "waited", n.cfg.ReadyPeerTimeout, "err", err)
				} else {
					n.markReady(reason, "peer_role", h.Role)
				}
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-n.ready:
			return
		case <-t.C:
		}
	}
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
	s, status, reason, err := checkSynced(body, n.bootID)
	if err != nil {
		n.reject(w, r, status, reason, err)
		return
	}
	n.stats.add("synced_notices_received", 1)
	n.markReady(ReadySynced, "master_revision", s.Revision)
	writeJSON(w, http.StatusOK, struct{}{})
}
