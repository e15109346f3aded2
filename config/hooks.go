package config

import (
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Hooks are the programs run at each role transition (package
// internal/hooks has their semantics): Master after the VIPs are claimed;
// Backup, Fault and Stop (the daemon stops) after the release, or before
// it for an entry with BeforeRelease. A reload applies changes in place,
// without re-election.
type Hooks struct {
	Master, Backup, Fault, Stop []Hook
}

// Hook is one entry of a list: a program (Command, argv) or a systemd Unit
// (started in master, stopped in the other lists).
type Hook struct {
	// Command is the program and its arguments, no shell; Command[0] is an
	// absolute path.
	Command []string
	// Unit is a systemd unit name (e.g. haproxy.service).
	Unit string
	// Timeout kills the hook's process group (SIGTERM, then SIGKILL).
	Timeout time.Duration
	// BeforeRelease: the VIP release waits for this hook (not in master).
	BeforeRelease bool
}

// Hook limits.
const (
	DefaultHookTimeout = 30 * time.Second
	MinHookTimeout     = 100 * time.Millisecond
	MaxHookTimeout     = 10 * time.Minute
	// MaxHooks bounds each list.
	MaxHooks = 16
)

func (d *decoder) hooks(key string, n *yaml.Node, h *Hooks) {
	list := func(set *[]Hook, master bool) func(string, *yaml.Node) {
		return func(k string, n *yaml.Node) {
			if l := resolve(n); l.Kind == yaml.SequenceNode && len(l.Content) > MaxHooks {
				d.fail(l.Line, k, "%d hooks; at most %d", len(l.Content), MaxHooks)
				return
			}
			d.list(k, n, func(k string, item *yaml.Node) {
				if e, ok := d.hook(k, item, master); ok {
					*set = append(*set, e)
				}
			})
		}
	}
	d.mapping(key, n, []field{
		{"master", false, list(&h.Master, true)},
		{"backup", false, list(&h.Backup, false)},
		{"fault", false, list(&h.Fault, false)},
		{"stop", false, list(&h.Stop, false)},
	})
}

func (d *decoder) hook(key string, n *yaml.Node, master bool) (Hook, bool) {
	h := Hook{Timeout: DefaultHookTimeout}
	before := 0
	bad := len(d.problems)
	d.mapping(key, n, []field{
		{"command", false, func(k string, n *yaml.Node) {
			c := resolve(n)
			if c.Kind != yaml.SequenceNode {
				d.fail(c.Line, k, "must be a list: the program and its arguments, e.g. [/usr/sbin/service-ctl, start] (no shell; for one, [/bin/sh, -c, \"...\"])")
				return
			}
			d.list(k, c, func(k string, a *yaml.Node) {
				if s, ok := d.scalar(k, a); ok {
					h.Command = append(h.Command, s.Value)
				}
			})
			switch {
			case len(h.Command) == 0:
				d.fail(c.Line, k, "is empty")
			case !filepath.IsAbs(h.Command[0]):
				// The daemon's PATH is the service manager's: a relative
				// program would run whatever comes first in it.
				d.fail(c.Line, k, "%q is not an absolute path", h.Command[0])
			}
		}},
		{"unit", false, func(k string, n *yaml.Node) {
			d.str(k, n, &h.Unit)
			if u := h.Unit; u == "" || strings.HasPrefix(u, "-") || strings.ContainsAny(u, "/ \t\n\x00") {
				d.fail(resolve(n).Line, k, "%q is not a systemd unit name", u)
			}
		}},
		{"timeout", false, func(k string, n *yaml.Node) {
			d.duration(k, n, MinHookTimeout, MaxHookTimeout, &h.Timeout)
		}},
		{"before_release", false, func(k string, n *yaml.Node) {
			before = resolve(n).Line
			d.boolean(k, n, &h.BeforeRelease)
		}},
	})
	if len(d.problems) > bad {
		return h, false
	}
	line := resolve(n).Line
	switch {
	case len(h.Command) == 0 && h.Unit == "":
		d.fail(line, key, "needs a command or a unit")
		return h, false
	case len(h.Command) > 0 && h.Unit != "":
		d.fail(line, key, "has both a command and a unit; one entry runs one of them")
		return h, false
	case master && h.BeforeRelease:
		d.fail(before, key+".before_release", "master hooks run after the claim; before_release is for backup, fault and stop")
		return h, false
	}
	return h, true
}
