package dbsync

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxHealthBytes bounds a peer's health document: a real one is a few
// kilobytes.
const maxHealthBytes = 1 << 20

// PeerHealth fetches the peer's GET /api/health over the peer connection
// (pinned certificate, sync-scope token, which the health endpoint
// accepts) and returns the raw JSON document. It leaves the replication's
// own view of the peer (Status().Peer) alone: that one follows the sync
// requests. ctx bounds the request.
func (n *Node) PeerHealth(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.link.URL(PathHealth), nil)
	if err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	sent := n.cfg.Now()
	resp, err := n.link.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", PathHealth, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHealthBytes))
	if err != nil {
		return nil, fmt.Errorf("GET %s: read answer: %w", PathHealth, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %w", PathHealth, &statusError{status: resp.StatusCode})
	}
	var clock struct {
		Time time.Time `json:"time"`
	}
	if json.Unmarshal(body, &clock) == nil {
		n.noteClock(sent, n.cfg.Now(), clock.Time)
	}
	return body, nil
}
