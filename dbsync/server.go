package dbsync

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/muros/muros-had/peerlink"
)

// HTTP paths of the peer listener.
const (
	PathPush     = "/api/sync/push"
	PathManifest = "/api/sync/manifest"
	PathHello    = "/api/sync/hello"
	PathSynced   = "/api/sync/synced"
	PathHealth   = "/api/health"
)

// Request rejection reasons (besides the peer link's: package peerlink).
const (
	ReasonTooLarge   = "body_too_large"
	ReasonTruncated  = "body_truncated"
	ReasonDecode     = "body_decode"
	ReasonPath       = "path_unsafe"
	ReasonNotBackup  = "not_backup"
	ReasonStale      = "stale_revision"
	ReasonChecksum   = "checksum"
	ReasonPrefix     = "append_prefix"
	ReasonApplyError = "apply_error"
	ReasonMethod     = "method"
	// ReasonPathConflict: a path twice in one batch, or a file and a path
	// under it (ErrPathConflict).
	ReasonPathConflict = "path_conflict"
	// ReasonSidecar: an SQLite -wal, -shm or -journal (ErrPathSidecar).
	ReasonSidecar = "path_sidecar"
)

// Hello is the body of GET /api/sync/hello: cheap liveness and restart
// detection for the master's probe.
type Hello struct {
	Node     string `json:"node"`
	BootID   string `json:"boot_id"`
	Revision uint64 `json:"revision"`
	Role     string `json:"role"`
	// Time is the answering node's clock (clock skew, skew.go).
	Time time.Time `json:"time,omitzero"`
}

// mountRoutes mounts the sync endpoints on the peer link (pinned peer
// certificate and a single-use sync-scope token). GET /api/health is the
// daemon's (Link).
func (n *Node) mountRoutes() {
	n.link.Handle("POST "+PathPush, peerlink.PeerOnly, http.HandlerFunc(n.handlePush))
	n.link.Handle("GET "+PathManifest, peerlink.PeerOnly, http.HandlerFunc(n.handleManifest))
	n.link.Handle("GET "+PathHello, peerlink.PeerOnly, http.HandlerFunc(n.handleHello))
	n.link.Handle("POST "+PathSynced, peerlink.PeerOnly, http.HandlerFunc(n.handleSynced))
	n.link.Handle("POST "+PathPull, peerlink.PeerOnly, http.HandlerFunc(n.handlePull))
}

// Handler is the peer API's router without the listener's limits.
func (n *Node) Handler() http.Handler { return n.link.Handler() }

// Link is the peer link the sync routes are mounted on; the daemon mounts
// GET /api/health beside them.
func (n *Node) Link() *peerlink.Link { return n.link }

func (n *Node) reject(w http.ResponseWriter, r *http.Request, status int, reason string, err error) {
	n.rejected.add(reason, 1)
	n.log.Warn("dbsync: request rejected", "reason", reason, "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
	writeJSON(w, status, errorBody{Error: http.StatusText(status)})
}

// errorBody is every error response: a generic message, nothing more.
type errorBody = peerlink.ErrorBody

func writeJSON(w http.ResponseWriter, status int, v any) { peerlink.WriteJSON(w, status, v) }

func (n *Node) handlePush(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > n.cfg.MaxBodyBytes {
		n.reject(w, r, http.StatusRequestEntityTooLarge, ReasonTooLarge, fmt.Errorf("content length %d", r.ContentLength))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, n.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		n.reject(w, r, http.StatusRequestEntityTooLarge, ReasonTooLarge, err)
		return
	case err != nil:
		n.reject(w, r, http.StatusBadRequest, ReasonTruncated, err)
		return
	case r.ContentLength >= 0 && int64(len(body)) != r.ContentLength:
		n.reject(w, r, http.StatusBadRequest, ReasonTruncated, fmt.Errorf("read %d of %d bytes", len(body), r.ContentLength))
		return
	}
	if n.master.Load() {
		// Two masters (split brain): neither overwrites the other.
		n.reject(w, r, http.StatusConflict, ReasonNotBackup, errors.New("this node is master"))
		return
	}
	b, err := ParseBatch(body, nil)
	if err != nil {
		reason := ReasonDecode
		if errors.Is(err, ErrShort) {
			reason = ReasonTruncated
		}
		n.reject(w, r, http.StatusBadRequest, reason, err)
		return
	}
	for i := range b.Entries {
		if _, err := resolveWirePath(n.cfg.Paths, b.Entries[i].Path); err != nil {
			reason := ReasonPath
			if errors.Is(err, ErrPathSidecar) {
				reason = ReasonSidecar
			}
			n.reject(w, r, http.StatusBadRequest, reason, fmt.Errorf("entry %d %q: %w", i, b.Entries[i].Path, err))
			return
		}
	}
	if err := checkBatchPaths(&b); err != nil {
		n.reject(w, r, http.StatusBadRequest, ReasonPathConflict, err)
		return
	}
	res, err := n.applier.apply(b, BatchDigest(b))
	if err != nil {
		status, reason := http.StatusInternalServerError, ReasonApplyError
		switch {
		case errors.Is(err, ErrStaleRevision):
			status, reason = http.StatusConflict, ReasonStale
		case errors.Is(err, ErrPrefexMismatch):
			status, reason = http.StatusConflict, ReasonPrefix
		case errors.Is(err, ErrChecksum):
			status, reason = http.StatusBadRequest, ReasonChecksum
		case errors.Is(err, ErrPathRoot), errors.Is(err, ErrPathInternal):
			status, reason = http.StatusBadRequest, ReasonPath
		case errors.Is(err, ErrPathSidecar):
			status, reason = http.StatusBadRequest, ReasonSidecar
		case errors.Is(err, ErrPathConflict):
			status, reason = http.StatusBadRequest, ReasonPathConflict
		}
		n.rejected.add(reason, 1)
		n.log.Warn("dbsync: push not applied", "reason", reason, "remote", r.RemoteAddr, "err", err)
		writeJSON(w, status, errorBody{Error: http.StatusText(status), Revision: n.applier.revision().Revision})
		return
	}
	if !res.Noop {
		n.noteFailures(&b, res.Failed)
	}
	if res.OwnerErrors > 0 {
		// Content and mode are in place; the owner is not (CAP_CHOWN missing?).
		n.stats.add("owner_errors", uint64(res.OwnerErrors))
		n.log.Error("dbsync: replicated files installed without the master's owner", "files", res.OwnerErrors, "first", res.OwnerError)
	}
	if res.Noop {
		n.stats.add("pushes_noop", 1)
	} else {
		n.stats.addAll(map[string]uint64{"pushes_applied": 1, "entries_applied": uint64(res.Applied), "bytes_applied": uint64(res.Bytes)})
		n.mu.Lock()
		n.st.lastApply = time.Now()
		n.st.lastContact = n.st.lastApply
		n.mu.Unlock()
		n.log.Debug("dbsync: applied", "revision", res.Revision, "entries", res.Applied, "bytes", res.Bytes)
		// Before the answer: the master's next comparison sees the stamps.
		n.stampApplied(&b, res.Failed)
	}
	writeJSON(w, http.StatusOK, res)
}

func (n *Node) handleManifest(w http.ResponseWriter, r *http.Request) {
	// The boot ID before the listing: a re-arm while the files are hashed
	// must not label a listing from before it with the new ID (the master
	// would answer with a synced notice that closes the new wait).
	boot, rev := n.incarnation(), n.applier.revision().Revision
	files, err := replicaManifest(n.cfg.Paths, n.cfg.Exclude, n.cache)
	if err != nil {
		n.log.Error("dbsync: manifest", "err", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: http.StatusText(http.StatusInternalServerError)})
		return
	}
	if files == nil {
		files = []FileState{}
	}
	files, deleted, err := n.servedStamps(files)
	if err != nil {
		n.log.Error("dbsync: manifest stamps", "err", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: http.StatusText(http.StatusInternalServerError)})
		return
	}
	writeJSON(w, http.StatusOK, Manifest{
		Node: n.cfg.NodeID, BootID: boot, Revision: rev,
		Role: roleName(n.master.Load()), BatchVersion: BatchVersion, Files: files,
		Stamps: true, Deleted: deleted,
	})
}

func (n *Node) handleHello(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.hello())
}

func (n *Node) hello() Hello {
	return Hello{Node: n.cfg.NodeID, BootID: n.incarnation(), Revision: n.applier.revision().Revision, Role: roleName(n.master.Load()), Time: n.cfg.Now().UTC()}
}
