package vip

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

const upFlags = unix.IFF_UP | unix.IFF_LOWER_UP | unix.IFF_RUNNING

func fakeLink(name string, index int, flags uint32) netlink.Link {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: index, RawFlags: flags}}
}

// fakeKernel is the link table and the subscriptions of a fake netlink.
type fakeKernel struct {
	mu         sync.Mutex
	links      map[string]netlink.Link
	failSubs   int // the next failSubs subscribe calls fail
	subs       []*fakeSub
	subscribed chan *fakeSub
}

type fakeSub struct {
	in   chan netlink.LinkUpdate
	kill chan error // nil error: close the channel without the callback
}

func newFakeKernel(links ...netlink.Link) *fakeKernel {
	k := &fakeKernel{links: map[string]netlink.Link{}, subscribed: make(chan *fakeSub, 16)}
	for _, l := range links {
		k.links[l.Attrs().Name] = l
	}
	return k
}

func (k *fakeKernel) LinkByName(name string) (netlink.Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l, ok := k.links[name]; ok {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (k *fakeKernel) set(l netlink.Link) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.links[l.Attrs().Name] = l
}

// subscribe behaves like netlink.LinkSubscribeWithOptions: a goroutine
// forwards updates until done, reports a fatal error through onErr, and
// closes ch when it ends.
func (k *fakeKernel) subscribe(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
	k.mu.Lock()
	if k.failSubs > 0 {
		k.failSubs--
		k.mu.Unlock()
		return errors.New("fake: socket refused")
	}
	s := &fakeSub{in: make(chan netlink.LinkUpdate), kill: make(chan error)}
	k.subs = append(k.subs, s)
	k.mu.Unlock()
	go func() {
		defer close(ch)
		for {
			select {
			case <-done:
				return
			case err := <-s.kill:
				if err != nil {
					onErr(err)
				}
				return
			case u := <-s.in:
				select {
				case ch <- u:
				case <-done:
					return
				}
			}
		}
	}()
	k.subscribed <- s
	return nil
}

func update(l netlink.Link, typ uint16) netlink.LinkUpdate {
	return netlink.LinkUpdate{Header: unix.NlMsghdr{Type: typ}, Link: l}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// monitorRun starts Run on a fake kernel and returns the event channel and
// a stop function that cancels it and returns Run's error.
func monitorRun(t *testing.T, k *fakeKernel, names ...string) (*Monitor, chan LinkEvent, func() error) {
	t.Helper()
	m, err := newMonitor(k, k, MonitorConfig{Interfaces: names, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	out := make(chan LinkEvent, 32)
	res := make(chan error, 1)
	go func() { res <- m.Run(ctx, out) }()
	return m, out, func() error { cancel(); return <-res }
}

func drainEvents(out chan LinkEvent) []LinkEvent {
	synctest.Wait()
	var evs []LinkEvent
	for {
		select {
		case ev := <-out:
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

func TestMonitorInitialStateAndChanges(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		k := newFakeKernel(fakeLink("eth0", 2, upFlags), fakeLink("eth1", 3, unix.IFF_UP), fakeLink("other", 9, upFlags))
		_, out, stop := monitorRun(t, k, "eth0", "eth1", "eth2")
		sub := <-k.subscribed
		want := []LinkEvent{
			{Interface: "eth0", Index: 2, Up: true, Exists: true},
			{Interface: "eth1", Index: 3, Up: false, Exists: true},
			{Interface: "eth2"},
		}
		if diff := cmp.Diff(want, drainEvents(out)); diff != "" {
			t.Fatalf("initial events (-want +got):\n%s", diff)
		}
		steps := []struct {
			name string
			u    netlink.LinkUpdate
			want []LinkEvent
		}{
			{"eth0 loses carrier", update(fakeLink("eth0", 2, unix.IFF_UP), unix.RTM_NEWLINK),
				[]LinkEvent{{Interface: "eth0", Index: 2, Exists: true}}},
			{"same state again", update(fakeLink("eth0", 2, unix.IFF_UP), unix.RTM_NEWLINK), nil},
			{"untracked link", update(fakeLink("other", 9, 0), unix.RTM_NEWLINK), nil},
			{"eth1 gets carrier", update(fakeLink("eth1", 3, upFlags), unix.RTM_NEWLINK),
				[]LinkEvent{{Interface: "eth1", Index: 3, Up: true, Exists: true}}},
			{"eth2 appears up", update(fakeLink("eth2", 4, upFlags), unix.RTM_NEWLINK),
				[]LinkEvent{{Interface: "eth2", Index: 4, Up: true, Exists: true}}},
			{"eth2 deleted", update(fakeLink("eth2", 4, upFlags), unix.RTM_DELLINK),
				[]LinkEvent{{Interface: "eth2"}}},
			{"eth1 renamed", update(fakeLink("lan1", 3, upFlags), unix.RTM_NEWLINK),
				[]LinkEvent{{Interface: "eth1"}}},
			{"admin down, carrier kept", update(fakeLink("eth0", 2, unix.IFF_LOWER_UP), unix.RTM_NEWLINK), nil},
		}
		for _, s := range steps {
			sub.in <- s.u
			if diff := cmp.Diff(s.want, drainEvents(out)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", s.name, diff)
			}
		}
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
}

// A subscription that dies, by error callback or by closing its channel,
// is re-established after the backoff and the state re-read: a change made
// while it was down is reported.
func TestMonitorResubscribes(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tc := range []struct {
		name string
		kill error
	}{
		{"error callback", unix.ENOBUFS},
		{"channel closed", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				k := newFakeKernel(fakeLink("eth0", 2, upFlags))
				m, out, stop := monitorRun(t, k, "eth0")
				sub := <-k.subscribed
				drainEvents(out)
				start := time.Now()
				sub.kill <- tc.kill
				k.set(fakeLink("eth0", 2, unix.IFF_UP)) // change while no subscription
				sub2 := <-k.subscribed
				if got := time.Since(start); got != 100*time.Millisecond {
					t.Errorf("re-subscribed after %s, want the 100ms minimum backoff", got)
				}
				want := []LinkEvent{{Interface: "eth0", Index: 2, Exists: true}}
				if diff := cmp.Diff(want, drainEvents(out)); diff != "" {
					t.Errorf("events after re-subscribe (-want +got):\n%s", diff)
				}
				sub2.in <- update(fakeLink("eth0", 2, upFlags), unix.RTM_NEWLINK)
				want = []LinkEvent{{Interface: "eth0", Index: 2, Up: true, Exists: true}}
				if diff := cmp.Diff(want, drainEvents(out)); diff != "" {
					t.Errorf("events on the new subscription (-want +got):\n%s", diff)
				}
				if m.Resubscribes() != 1 || m.Errors() != 1 {
					t.Errorf("resubscribes %d errors %d, want 1 and 1", m.Resubscribes(), m.Errors())
				}
				stop()
			})
		})
	}
}

// Failing subscribes back off exponentially up to the maximum.
func TestMonitorBackoff(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		k := newFakeKernel(fakeLink("eth0", 2, upFlags))
		k.failSubs = 7
		m, err := newMonitor(k, k, MonitorConfig{Interfaces: []string{"eth0"}, MinBackoff: 100 * time.Millisecond,
			MaxBackoff: time.Second, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		out := make(chan LinkEvent, 8)
		res := make(chan error, 1)
		start := time.Now()
		go func() { res <- m.Run(ctx, out) }()
		<-k.subscribed
		// 100 + 200 + 400 + 800 + 1000 + 1000 + 1000 ms of backoff.
		if got, want := time.Since(start), 4500*time.Millisecond; got != want {
			t.Errorf("first subscription after %s, want %s", got, want)
		}
		if diff := cmp.Diff([]LinkEvent{{Interface: "eth0", Index: 2, Up: true, Exists: true}}, drainEvents(out)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		if m.Errors() != 7 {
			t.Errorf("errors %d, want 7", m.Errors())
		}
		cancel()
		<-res
	})
}

// A reader that stops reading blocks Run, and cancelling still ends it with
// the subscription torn down.
func TestMonitorCancelWhileBlocked(t *testing.T) {
	defer goleak.VerifyNone(t)
	synctest.Test(t, func(t *testing.T) {
		k := newFakeKernel(fakeLink("eth0", 2, upFlags), fakeLink("eth1", 3, upFlags))
		m, err := newMonitor(k, k, MonitorConfig{Interfaces: []string{"eth0", "eth1"}, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		out := make(chan LinkEvent) // never read
		res := make(chan error, 1)
		go func() { res <- m.Run(ctx, out) }()
		<-k.subscribed
		synctest.Wait()
		cancel()
		if err := <-res; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
}

func TestNewMonitorValidates(t *testing.T) {
	k := newFakeKernel()
	if _, err := newMonitor(k, k, MonitorConfig{}); err == nil {
		t.Error("no interfaces accepted")
	}
	if _, err := newMonitor(k, k, MonitorConfig{Interfaces: []string{"a"}, MinBackoff: time.Second, MaxBackoff: time.Millisecond}); err == nil {
		t.Error("max backoff below min accepted")
	}
	if _, err := NewMonitor(nil, MonitorConfig{Interfaces: []string{"a"}}); err == nil {
		t.Error("nil handle accepted")
	}
}

func TestCarrierUp(t *testing.T) {
	tests := []struct {
		flags uint32
		want  bool
	}{
		{0, false},
		{unix.IFF_UP, false},
		{unix.IFF_LOWER_UP, false},
		{unix.IFF_UP | unix.IFF_LOWER_UP, true},
		{upFlags, true},
	}
	for _, tt := range tests {
		if got := carrierUp(tt.flags); got != tt.want {
			t.Errorf("carrierUp(%#x) = %v, want %v", tt.flags, got, tt.want)
		}
	}
}
