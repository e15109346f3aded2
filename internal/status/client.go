package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Fetch asks the daemon listening on addr (unix socket path or
// host:port) for its status; it returns the decoded status and the raw JSON.
func Fetch(ctx context.Context, addr string) (Status, []byte, error) {
	tr, url := daemonEndpoint(addr, "/status")
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Status{}, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Status{}, nil, fmt.Errorf("daemon not reachable at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, nil, fmt.Errorf("daemon at %s answered %s", addr, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Status{}, nil, fmt.Errorf("reading status from %s: %w", addr, err)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return Status{}, body, fmt.Errorf("bad status from %s: %w", addr, err)
	}
	return st, body, nil
}

// daemonEndpoint is the transport and URL of path on the daemon's status
// listener at addr: a unix socket path (dialled whatever the URL's host),
// or host:port.
func daemonEndpoint(addr, path string) (*http.Transport, string) {
	tr := &http.Transport{DisableKeepAlives: true}
	if !strings.HasPrefix(addr, "/") {
		return tr, "http://" + addr + path
	}
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	}
	return tr, "http://muros-had" + path
}
