package status

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/muros/muros-had/internal/hooks"
)

// Event is one line of the events stream (GET /events on the status
// listener, `muros-had events`): a transition of an instance, a role
// change of the node, a hook result, an alarm starting or ending, and, as
// the last line a too slow reader gets, "dropped".
type Event struct {
	Time time.Time `json:"time"`
	// Type: transition | role | hook | alarm | maintenance | dropped.
	Type string `json:"type"`
	// transition: the instance; transition and role: the states.
	VRID   uint8  `json:"vrid,omitempty"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
	// hook: its result.
	Hook *hooks.Result `json:"hook,omitempty"`
	// alarm: its name (split_brain, ruleset_drift) and whether it starts;
	// maintenance: whether the mode is now on (Active).
	Alarm  string `json:"alarm,omitempty"`
	Active *bool  `json:"active,omitempty"`
}

// Feed limits: events queued per reader before it is dropped, readers at
// once.
const (
	FeedBuffer  = 256
	FeedReaders = 16
)

// Feed fans events out to the readers of GET /events. Publish never
// blocks: a reader whose queue is full is dropped (its stream ends with a
// "dropped" line), so a stalled `muros-had events` cannot hold the event
// loop.
type Feed struct {
	mu   sync.Mutex
	subs map[*feedReader]struct{}
}

type feedReader struct {
	ch      chan []byte
	dropped bool // set under Feed.mu before ch is closed
}

// NewFeed returns a feed without readers.
func NewFeed() *Feed { return &Feed{subs: map[*feedReader]struct{}{}} }

// Publish sends e to every reader. A nil feed drops it.
func (f *Feed) Publish(e Event) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) == 0 {
		return
	}
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	line = append(line, '\n')
	for r := range f.subs {
		select {
		case r.ch <- line:
		default:
			r.dropped = true
			delete(f.subs, r)
			close(r.ch)
		}
	}
}

func (f *Feed) subscribe() (*feedReader, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) >= FeedReaders {
		return nil, false
	}
	r := &feedReader{ch: make(chan []byte, FeedBuffer)}
	f.subs[r] = struct{}{}
	return r, true
}

// Subscribe is a reader in the process: the channel gives each event's
// JSON line and closes when the reader is dropped or cancel is called.
func (f *Feed) Subscribe() (lines <-chan []byte, cancel func(), ok bool) {
	r, ok := f.subscribe()
	if !ok {
		return nil, nil, false
	}
	return r.ch, func() { f.unsubscribe(r) }, true
}

func (f *Feed) unsubscribe(r *feedReader) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.subs[r]; ok {
		delete(f.subs, r)
		close(r.ch)
	}
}

// ServeHTTP streams the events as JSON lines, each flushed as it comes.
func (f *Feed) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r, ok := f.subscribe()
	if !ok {
		http.Error(w, fmt.Sprintf("too many event readers (%d)", FeedReaders), http.StatusServiceUnavailable)
		return
	}
	defer f.unsubscribe(r)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	for {
		select {
		case <-req.Context().Done():
			return
		case line, open := <-r.ch:
			if !open {
				f.mu.Lock()
				dropped := r.dropped
				f.mu.Unlock()
				if dropped {
					b, _ := json.Marshal(Event{Time: time.Now(), Type: "dropped",
						Reason: fmt.Sprintf("reader too slow: more than %d events queued; reconnect", FeedBuffer)})
					_, _ = w.Write(append(b, '\n'))
				}
				return
			}
			if _, err := w.Write(line); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// Follow reads the events stream of the daemon at addr (unix socket path
// or host:port) and copies each line to out until ctx ends or the daemon
// closes the stream.
func Follow(ctx context.Context, addr string, out io.Writer) error {
	tr, url := daemonEndpoint(addr, "/events")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("daemon not reachable at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("daemon at %s answered %s", addr, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if _, err := fmt.Fprintf(out, "%s\n", sc.Bytes()); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading events from %s: %w", addr, err)
	}
	return nil
}
