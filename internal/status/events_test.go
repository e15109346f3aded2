package status

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/internal/hooks"
)

// lineWriter hands each line Follow prints to the test.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) { w <- string(p); return len(p), nil }

// TestEventsStream: GET /events on the status socket streams what is
// published after the reader connected, one JSON line each, flushed as it
// comes; Follow returns nil when its context ends.
func TestEventsStream(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "st.sock")
	feed := NewFeed()
	stop, err := Serve(sock, "", func() Status { return Status{} }, NewMetrics().Registry(), feed)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	lines := make(lineWriter, 16)
	done := make(chan error, 1)
	go func() { done <- Follow(ctx, sock, lines) }()
	// Wait until the reader is subscribed.
	for {
		feed.mu.Lock()
		n := len(feed.subs)
		feed.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	sent := []Event{
		{Time: at, Type: "transition", VRID: 10, From: "BACKUP", To: "MASTER", Reason: "master down"},
		{Time: at, Type: "hook", Hook: &hooks.Result{Hook: "master[0]", State: "MASTER", Outcome: hooks.Failed, ExitStatus: 3}},
	}
	for _, e := range sent {
		feed.Publish(e)
		var got Event
		if err := json.Unmarshal([]byte(<-lines), &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(e, got); diff != "" {
			t.Error(diff)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow after its context ended: %v", err)
	}
}

// blockingWriter is a response writer whose body writes wait for release:
// a reader that does not read.
type blockingWriter struct {
	*httptest.ResponseRecorder
	mu      sync.Mutex
	release chan struct{}
	first   chan struct{}
	once    sync.Once
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.first) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ResponseRecorder.Write(p)
}

func (w *blockingWriter) Flush() {}

// TestEventsSlowReaderDropped: Publish never waits for a reader; one that
// falls FeedBuffer events behind is dropped and its stream ends with a
// "dropped" line.
func TestEventsSlowReaderDropped(t *testing.T) {
	feed := NewFeed()
	w := &blockingWriter{ResponseRecorder: httptest.NewRecorder(), release: make(chan struct{}), first: make(chan struct{})}
	req := httptest.NewRequest(http.MethodGet, "/events", nil)
	served := make(chan struct{})
	go func() { defer close(served); feed.ServeHTTP(w, req) }()
	for {
		feed.mu.Lock()
		n := len(feed.subs)
		feed.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	feed.Publish(Event{Type: "role", To: "MASTER"})
	<-w.first // the handler is stuck writing the first event
	for i := 0; i < FeedBuffer+1; i++ {
		feed.Publish(Event{Type: "role", To: "BACKUP"}) // returns: the test would hang otherwise
	}
	close(w.release)
	<-served
	sc := bufio.NewScanner(w.Body)
	var last Event
	n := 0
	for sc.Scan() {
		n++
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatal(err)
		}
	}
	if last.Type != "dropped" || n != FeedBuffer+2 {
		t.Fatalf("%d lines, last %+v; want the first event, %d queued, then dropped", n, last, FeedBuffer)
	}
	feed.mu.Lock()
	defer feed.mu.Unlock()
	if len(feed.subs) != 0 {
		t.Fatal("the dropped reader is still subscribed")
	}
}

var _ io.Writer = lineWriter(nil)
