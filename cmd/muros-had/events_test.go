package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/status"
)

// syncBuf is a writer the test reads while events writes.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEventsCommand runs `muros-had events --config FILE` against a status
// server in the process: it finds the socket in the file, prints each
// event as a JSON line as it is published, and exits 0 when interrupted.
func TestEventsCommand(t *testing.T) {
	dir, err := os.MkdirTemp("", "mhe") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "st.sock")
	cfgFile := filepath.Join(dir, "ha.yaml")
	yaml := "role: master\npassword: " + testPassword + "\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
		"state_dir: " + filepath.Join(dir, "state") + "\nrun_dir: " + filepath.Join(dir, "run") + "\nstatus:\n  listen: " + sock + "\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	feed := status.NewFeed()
	stop, err := status.Serve(sock, "", func() status.Status { return status.Status{} }, status.NewMetrics().Registry(), feed)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuf
	code := make(chan int, 1)
	go func() { code <- events(ctx, []string{"--config", cfgFile}, &out, &errOut) }()
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	want := `{"time":"2026-12-07T06:00:00Z","type":"role","from":"BACKUP","to":"MASTER","reason":"master down"}` + "\n"
	// Published until the command has connected and printed it.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("no event printed; stdout %q, stderr %q", out.String(), errOut.String())
		}
		feed.Publish(status.Event{Time: at, Type: "role", From: "BACKUP", To: "MASTER", Reason: "master down"})
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d after an interrupt; stderr %q", c, errOut.String())
	}
	for _, l := range strings.SplitAfter(out.String(), "\n") {
		if l != "" && l != want {
			t.Fatalf("unexpected line %q", l)
		}
	}
}
