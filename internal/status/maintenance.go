package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// MaintenanceRequest is the body of POST /maintenance on the status
// listener (`muros-had maintenance on|off [--force]`).
type MaintenanceRequest struct {
	On bool `json:"on"`
	// Force enters maintenance although the peer is not ready to take
	// over (the refusal's reasons are overridden).
	Force bool `json:"force,omitempty"`
}

// MaintenanceAnswer is the daemon's answer: the mode now, and when a
// request to turn it on was refused, why (Refused); Overridden lists the
// reasons a forced request went past.
type MaintenanceAnswer struct {
	On         bool     `json:"on"`
	Refused    []string `json:"refused,omitempty"`
	Overridden []string `json:"overridden,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// Route is an extra handler of the status listener.
type Route struct {
	Pattern string
	Handler http.Handler
}

// MaintenanceRoute serves POST /maintenance with set, which the daemon's
// event loop answers. A refusal is 409 Conflict, a failure 500.
func MaintenanceRoute(set func(context.Context, MaintenanceRequest) MaintenanceAnswer) Route {
	return Route{Pattern: "POST /maintenance", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req MaintenanceRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			http.Error(w, "bad maintenance request: "+err.Error(), http.StatusBadRequest)
			return
		}
		ans := set(r.Context(), req)
		code := http.StatusOK
		switch {
		case ans.Error != "":
			code = http.StatusInternalServerError
		case len(ans.Refused) > 0:
			code = http.StatusConflict
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(ans)
	})}
}

// SetMaintenance asks the daemon listening on addr (unix socket path or
// host:port) to turn maintenance mode on or off.
func SetMaintenance(ctx context.Context, addr string, req MaintenanceRequest) (MaintenanceAnswer, error) {
	tr, url := daemonEndpoint(addr, "/maintenance")
	// The daemon answers once the hand-over is started and the flag is on
	// disk: well within this.
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return MaintenanceAnswer{}, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(hr)
	if err != nil {
		return MaintenanceAnswer{}, fmt.Errorf("daemon not reachable at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return MaintenanceAnswer{}, fmt.Errorf("reading the answer from %s: %w", addr, err)
	}
	var ans MaintenanceAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return MaintenanceAnswer{}, fmt.Errorf("daemon at %s answered %s: %s", addr, resp.Status, strings.TrimSpace(string(b)))
	}
	return ans, nil
}
