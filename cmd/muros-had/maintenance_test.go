package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/internal/status"
)

// TestMaintenanceCommand runs `muros-had maintenance` against a status
// listener in the process whose daemon refuses unless forced: the request
// it sends, its output and its exit code.
func TestMaintenanceCommand(t *testing.T) {
	dir, err := os.MkdirTemp("", "mhm") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "st.sock")
	var (
		mu   sync.Mutex
		got  []status.MaintenanceRequest
		mode bool
	)
	set := func(_ context.Context, r status.MaintenanceRequest) status.MaintenanceAnswer {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r)
		why := []string{"the peer's replications are incomplete: waiting for conntrack bulk sync"}
		if r.On && !r.Force {
			return status.MaintenanceAnswer{On: mode, Refused: why}
		}
		mode = r.On
		a := status.MaintenanceAnswer{On: mode}
		if r.On {
			a.Overridden = why
		}
		return a
	}
	stop, err := status.Serve(sock, "", func() status.Status { return status.Status{} }, status.NewMetrics().Registry(), nil, status.MaintenanceRoute(set))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	tests := []struct {
		args      []string
		code      int
		stdout    string
		stderr    string // a part of it
		sent      *status.MaintenanceRequest
		modeAfter bool
	}{
		{args: []string{"on"}, code: 1, stderr: "refused: the peer could not take over cleanly now:\n  - the peer's replications are incomplete", sent: &status.MaintenanceRequest{On: true}},
		{args: []string{"on", "--force"}, code: 0, stdout: "maintenance on: this node hands over and stays BACKUP until `muros-had maintenance off`\n",
			stderr: "forced past: the peer's replications", sent: &status.MaintenanceRequest{On: true, Force: true}, modeAfter: true},
		{args: []string{"off"}, code: 0, stdout: "maintenance off: this node takes part in the election again\n", sent: &status.MaintenanceRequest{}},
		{args: []string{"sideways"}, code: 2, stderr: "usage: muros-had maintenance"},
		{args: nil, code: 2, stderr: "usage: muros-had maintenance"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			var out, errOut strings.Builder
			code := cmdMaintenance(append([]string{"--listen", sock}, tt.args...), &out, &errOut)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errOut.String())
			}
			if out.String() != tt.stdout {
				t.Errorf("stdout %q, want %q", out.String(), tt.stdout)
			}
			if !strings.Contains(errOut.String(), tt.stderr) {
				t.Errorf("stderr %q, want it to contain %q", errOut.String(), tt.stderr)
			}
			mu.Lock()
			defer mu.Unlock()
			var want []status.MaintenanceRequest
			if tt.sent != nil {
				want = append(want, *tt.sent)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("requests sent (-want +got):\n%s", diff)
			}
			if mode != tt.modeAfter {
				t.Errorf("mode after: %v, want %v", mode, tt.modeAfter)
			}
		})
	}
}
