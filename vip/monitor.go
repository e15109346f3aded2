package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkEvent is the carrier state of a tracked interface. Up means
// administratively up with carrier (IFF_UP and IFF_LOWER_UP); a missing
// interface is down with Exists false.
type LinkEvent struct {
	Interface string
	Index     int
	Up        bool
	Exists    bool
}

// linkState is what the monitor knows of one tracked interface.
type linkState struct {
	known bool
	ev    LinkEvent
}

// carrierUp is the pure rule: a link carries traffic when it is up and its
// lower layer (carrier) is up.
func carrierUp(rawFlags uint32) bool {
	return rawFlags&unix.IFF_UP != 0 && rawFlags&unix.IFF_LOWER_UP != 0
}

// linkTable is the pure core of the monitor: it takes observations and
// says which of them change what was last reported.
type linkTable struct {
	byName map[string]*linkState
}

func newLinkTable(names []string) linkTable {
	t := linkTable{byName: make(map[string]*linkState, len(names))}
	for _, n := range names {
		t.byName[n] = &linkState{ev: LinkEvent{Interface: n}}
	}
	return t
}

// observe records ev and reports whether it must be emitted: the first
// observation of an interface, or a change of Up or Exists.
func (t linkTable) observe(ev LinkEvent) bool {
	s, ok := t.byName[ev.Interface]
	if !ok {
		return false
	}
	changed := !s.known || s.ev.Up != ev.Up || s.ev.Exists != ev.Exists
	s.known = true
	s.ev = ev
	return changed
}

// renamedAway returns the tracked name that had index but is no longer
// called that, if any: a rename or a move to another namespace makes the
// tracked interface disappear.
func (t linkTable) renamedAway(index int, newName string) (string, bool) {
	for name, s := range t.byName {
		if s.known && s.ev.Exists && s.ev.Index == index && name != newName {
			return name, true
		}
	}
	return "", false
}

// eventOf turns a netlink link (nil when absent) into a LinkEvent.
func eventOf(name string, l netlink.Link) LinkEvent {
	if l == nil {
		return LinkEvent{Interface: name}
	}
	return LinkEvent{Interface: name, Index: l.Attrs().Index, Exists: true, Up: carrierUp(l.Attrs().RawFlags)}
}

// linkReader reads one link's current state (*netlink.Handle is one).
type linkReader interface {
	LinkByName(name string) (netlink.Link, error)
}

// linkSubscriber starts a link subscription that sends updates on ch until
// done is closed, calls onErr on errors, and closes ch when it ends.
type linkSubscriber interface {
	subscribe(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error
}

// netlinkSubscriber subscribes to RTNLGRP_LINK in the namespace Enter runs in.
type netlinkSubscriber struct {
	enter   func(func() error) error
	rcvBuf  int
	rcvForc bool
}

func (s netlinkSubscriber) subscribe(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
	return s.enter(func() error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			ErrorCallback:          onErr,
			ReceiveBufferSize:      s.rcvBuf,
			ReceiveBufferForceSize: s.rcvForc,
		})
	})
}

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// Interfaces to track.
	Interfaces []string
	// Enter runs fn with the calling OS thread in the namespace of the
	// handle, to open the subscription socket there; nil means the
	// namespace the process runs in.
	Enter func(fn func() error) error
	// MinBackoff and MaxBackoff bound the wait before re-subscribing after
	// a subscription died; zero means 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// ReceiveBufferSize of the subscription socket (0 = kernel default);
	// ForceReceiveBufferSize uses SO_RCVBUFFORCE to exceed rmem_max.
	ReceiveBufferSize      int
	ForceReceiveBufferSize bool
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Monitor follows the carrier of tracked interfaces through an rtnetlink
// link subscription. When the subscription dies (an error, a closed
// channel, a receive-buffer overrun) it is re-established with backoff and
// the current state re-read, so a change missed meanwhile is still
// reported.
type Monitor struct {
	rd  linkReader
	sub linkSubscriber
	cfg MonitorConfig
	log *slog.Logger

	resubscribes atomic.Uint64
	errs         atomic.Uint64
}

// NewMonitor returns a Monitor reading link state through h.
func NewMonitor(h *netlink.Handle, cfg MonitorConfig) (*Monitor, error) {
	if h == nil {
		return nil, errors.New("vip: monitor: nil netlink handle")
	}
	if cfg.Enter == nil {
		cfg.Enter = func(fn func() error) error { return fn() }
	}
	return newMonitor(h, netlinkSubscriber{enter: cfg.Enter, rcvBuf: cfg.ReceiveBufferSize, rcvForc: cfg.ForceReceiveBufferSize}, cfg)
}

func newMonitor(rd linkReader, sub linkSubscriber, cfg MonitorConfig) (*Monitor, error) {
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("vip: monitor: no interfaces to track")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("vip: monitor: max backoff %s below min backoff %s", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Monitor{rd: rd, sub: sub, cfg: cfg, log: cfg.Logger}, nil
}

// Resubscribes counts subscriptions re-established after one died.
func (m *Monitor) Resubscribes() uint64 { return m.resubscribes.Load() }

// Errors counts subscription errors (failed subscribes and error callbacks).
func (m *Monitor) Errors() uint64 { return m.errs.Load() }

// Run reports the state of every tracked interface on out at start, then
// every change, until ctx is done; it returns ctx's error. A slow reader of
// out only delays events: an overrun kills the subscription, which is
// re-established and re-read.
func (m *Monitor) Run(ctx context.Context, out chan<- LinkEvent) error {
	table := newLinkTable(m.cfg.Interfaces)
	backoff := m.cfg.MinBackoff
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, m.cfg.MaxBackoff)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		started := time.Now()
		err := m.follow(ctx, table, out)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.errs.Add(1)
		m.log.Warn("link subscription ended, re-subscribing", "err", err, "backoff", backoff)
		if time.Since(started) >= m.cfg.MaxBackoff {
			backoff = m.cfg.MinBackoff
		}
		m.resubscribes.Add(1)
	}
}

var errChannelClosed = errors.New("subscription channel closed")

// follow runs one subscription: subscribe, re-read the current state, then
// apply updates until the subscription or ctx ends. It always tears the
// subscription down (and waits for its goroutine) before returning.
func (m *Monitor) follow(ctx context.Context, table linkTable, out chan<- LinkEvent) error {
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	errc := make(chan error, 1)
	onErr := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	if err := m.sub.subscribe(ch, done, onErr); err != nil {
		close(done)
		return fmt.Errorf("vip: link subscribe: %w", err)
	}
	defer func() {
		close(done)
		for range ch { // the subscription goroutine closes ch when it exits
		}
	}()
	// Subscribed first, read second: a change after the read is in ch.
	for _, name := range m.cfg.Interfaces {
		l, err := m.rd.LinkByName(name)
		if err != nil && !isLinkNotFound(err) {
			return fmt.Errorf("vip: read link %s: %w", name, err)
		}
		if err := m.emit(ctx, table, eventOf(name, l), out); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return fmt.Errorf("vip: link subscription: %w", err)
		case u, ok := <-ch:
			if !ok {
				return fmt.Errorf("vip: link subscription: %w", errChannelClosed)
			}
			if err := m.update(ctx, table, u, out); err != nil {
				return err
			}
		}
	}
}

func (m *Monitor) update(ctx context.Context, table linkTable, u netlink.LinkUpdate, out chan<- LinkEvent) error {
	if u.Link == nil {
		return nil
	}
	name := u.Link.Attrs().Name
	if old, ok := table.renamedAway(u.Link.Attrs().Index, name); ok {
		if err := m.emit(ctx, table, LinkEvent{Interface: old}, out); err != nil {
			return err
		}
	}
	ev := eventOf(name, u.Link)
	if u.Header.Type == unix.RTM_DELLINK {
		ev = LinkEvent{Interface: name}
	}
	return m.emit(ctx, table, ev, out)
}

func (m *Monitor) emit(ctx context.Context, table linkTable, ev LinkEvent, out chan<- LinkEvent) error {
	if !table.observe(ev) {
		return nil
	}
	select {
	case out <- ev:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
