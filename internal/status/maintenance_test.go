package status

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPageShowsMaintenance: this node's maintenance and the peer's.
func TestPageShowsMaintenance(t *testing.T) {
	on := true
	tests := []struct {
		name string
		st   Status
		want []string
	}{
		{"this node", Status{Maintenance: true}, []string{`<th class="FAULT">Maintenance</th>`}},
		{"the peer", Status{Peer: PeerStatus{Polled: true, Reachable: true, Maintenance: &on}}, []string{`peer in MAINTENANCE`}},
		{"neither", Status{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var page strings.Builder
			if err := statusPage.Execute(&page, tt.st); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(page.String(), w) {
					t.Errorf("page has no %q", w)
				}
			}
			if len(tt.want) == 0 && strings.Contains(page.String(), "aintenance") {
				t.Error("page shows maintenance although neither node is in it")
			}
		})
	}
}

// TestMaintenanceRoute: the request reaches the daemon's function, its
// answer comes back; a refusal is a conflict the client still decodes; a
// malformed request is refused before it.
func TestMaintenanceRoute(t *testing.T) {
	dir, err := os.MkdirTemp("", "mst")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	var got []MaintenanceRequest
	set := func(_ context.Context, r MaintenanceRequest) MaintenanceAnswer {
		got = append(got, r)
		if !r.Force {
			return MaintenanceAnswer{Refused: []string{"the peer is unreachable"}}
		}
		return MaintenanceAnswer{On: true}
	}
	stop, err := Serve(sock, "", func() Status { return Status{} }, NewMetrics().Registry(), nil, MaintenanceRoute(set))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	a, err := SetMaintenance(t.Context(), sock, MaintenanceRequest{On: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(MaintenanceAnswer{Refused: []string{"the peer is unreachable"}}, a); diff != "" {
		t.Errorf("refused (-want +got):\n%s", diff)
	}
	a, err = SetMaintenance(t.Context(), sock, MaintenanceRequest{On: true, Force: true})
	if err != nil || !a.On {
		t.Errorf("forced: %+v, %v", a, err)
	}
	if diff := cmp.Diff([]MaintenanceRequest{{On: true}, {On: true, Force: true}}, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}
