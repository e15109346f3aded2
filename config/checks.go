package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"time"

	"go.yaml.in/yaml/v3"
)

// CheckKind says what a health check looks at.
type CheckKind string

// Health check kinds.
const (
	CheckCommand CheckKind = "command" // a program's exit status (0: OK)
	CheckPing    CheckKind = "ping"    // an ICMP echo through an interface
	CheckProcess CheckKind = "process" // a process of that name runs
	CheckFile    CheckKind = "file"    // a file is present (or absent)
)

// Health check defaults and bounds.
const (
	DefaultCheckInterval = 2 * time.Second
	DefaultCheckTimeout  = time.Second
	DefaultCheckRise     = 2
	DefaultCheckFall     = 2
	// MinHealthInterval bounds a check's interval from below: a check
	// spawning a program more often costs more than it tells.
	MinHealthInterval = 200 * time.Millisecond
	MaxHealthInterval = time.Hour
	MinHealthTimeout  = 10 * time.Millisecond
	// MaxCheckWeight keeps a weight inside the priority range: the node's
	// priority with its weights is clamped to 1..254 anyway.
	MaxCheckWeight = 253
)

// Check is one health check: what it looks at, how often, how many results
// in a row change its verdict (Rise successes, Fall failures) and what a
// failing verdict does (Fault, or Weight on the priority).
type Check struct {
	Name string
	Kind CheckKind
	// CheckCommand: the program (absolute path) and its arguments; run
	// without a shell, exit status 0 is OK.
	Command []string
	// CheckPing: the address echoed and the interface the echo leaves by.
	Address   netip.Addr
	Interface string
	// CheckProcess: the process name as /proc/PID/comm shows it.
	Process string
	// CheckFile: the path, and whether OK means it exists (true) or not.
	Path   string
	Exists bool

	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int

	// Fault: while the check fails the node is in FAULT (out of the
	// election, VIPs released). Otherwise Weight applies (keepalived's
	// rule): a negative weight is added to the priority while the check
	// fails, a positive one while it is OK.
	Fault  bool
	Weight int
}

// checkName is a name usable as a metric label and in a log line.
var checkName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// checks decodes the checks: list.
func (d *decoder) checks(key string, n *yaml.Node, c *Config) {
	seen := map[string]int{}
	d.list(key, n, func(k string, item *yaml.Node) {
		ch := Check{Interval: DefaultCheckInterval, Rise: DefaultCheckRise, Fall: DefaultCheckFall, Exists: true}
		line := resolve(item).Line
		var kinds []string
		var timeoutSet bool
		kind := func(kk CheckKind) {
			kinds = append(kinds, string(kk))
			ch.Kind = kk
		}
		d.mapping(k, item, []field{
			{"name", true, func(k string, n *yaml.Node) {
				var v string
				d.str(k, n, &v)
				if v == "" {
					return
				}
				if !checkName.MatchString(v) {
					d.fail(resolve(n).Line, k, "%q is not a check name (1..32 of a-z, 0-9, '_', '-'; it names a metric label)", v)
					return
				}
				if first, dup := seen[v]; dup {
					d.fail(resolve(n).Line, k, "check %q is defined twice (first on line %d)", v, first)
					return
				}
				seen[v] = resolve(n).Line
				ch.Name = v
			}},
			{"command", false, func(k string, n *yaml.Node) {
				kind(CheckCommand)
				d.list(k, n, func(k string, n *yaml.Node) {
					var v string
					d.str(k, n, &v)
					ch.Command = append(ch.Command, v)
				})
				if len(ch.Command) == 0 {
					d.fail(resolve(n).Line, k, "needs the program to run")
				} else if !filepath.IsAbs(ch.Command[0]) {
					d.fail(resolve(n).Line, k, "%q is not an absolute path: the daemon's PATH is not the operator's", ch.Command[0])
				}
			}},
			{"ping", false, func(k string, n *yaml.Node) {
				kind(CheckPing)
				d.mapping(k, n, []field{
					{"address", true, func(k string, n *yaml.Node) {
						var a netip.Addr
						if d.addr(k, n, &a) {
							if a.IsUnspecified() || a.IsMulticast() {
								d.fail(resolve(n).Line, k, "%s is not a host to echo", a)
								return
							}
							ch.Address = a
						}
					}},
					{"interface", true, func(k string, n *yaml.Node) { d.ifname(k, n, &ch.Interface) }},
				})
			}},
			{"process", false, func(k string, n *yaml.Node) {
				kind(CheckProcess)
				var v string
				d.str(k, n, &v)
				// The kernel keeps 15 bytes of a process name (TASK_COMM_LEN).
				if v == "" || len(v) > 15 {
					d.fail(resolve(n).Line, k, "%q is not a process name as /proc/PID/comm shows it (1..15 bytes)", v)
					return
				}
				ch.Process = v
			}},
			{"file", false, func(k string, n *yaml.Node) {
				kind(CheckFile)
				d.mapping(k, n, []field{
					{"path", true, func(k string, n *yaml.Node) { d.absPath(k, n, &ch.Path) }},
					{"exists", false, func(k string, n *yaml.Node) { d.boolean(k, n, &ch.Exists) }},
				})
			}},
			{"interval", false, func(k string, n *yaml.Node) {
				d.duration(k, n, MinHealthInterval, MaxHealthInterval, &ch.Interval)
			}},
			{"timeout", false, func(k string, n *yaml.Node) {
				timeoutSet = true
				d.duration(k, n, MinHealthTimeout, MaxHealthInterval, &ch.Timeout)
			}},
			{"rise", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 100, func(v int) { ch.Rise = v }) }},
			{"fall", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 100, func(v int) { ch.Fall = v }) }},
			{"effect", true, func(k string, n *yaml.Node) {
				if s := resolve(n); s.Kind == yaml.ScalarNode {
					d.enum(k, n, []string{"fault"}, func(string) { ch.Fault = true })
					return
				}
				d.mapping(k, n, []field{
					{"weight", true, func(k string, n *yaml.Node) {
						d.integer(k, n, -MaxCheckWeight, MaxCheckWeight, func(v int) {
							if v == 0 {
								d.fail(resolve(n).Line, k, "0 does nothing: a weight is -%d..-1 (lowers the priority while failing) or 1..%d (raises it while OK)", MaxCheckWeight, MaxCheckWeight)
								return
							}
							ch.Weight = v
						})
					}},
				})
			}},
		})
		switch len(kinds) {
		case 0:
			d.fail(line, k, "needs one of command, ping, process, file")
		case 1:
		default:
			d.fail(line, k, "has %d kinds (%v): one check looks at one thing", len(kinds), kinds)
		}
		if !timeoutSet {
			ch.Timeout = min(DefaultCheckTimeout, ch.Interval/2)
		}
		if ch.Timeout >= ch.Interval {
			d.fail(line, k+".timeout", "%s is not below the interval %s: a check would overlap the next", ch.Timeout, ch.Interval)
		}
		c.Checks = append(c.Checks, ch)
	})
}

// String names the check for logs: "upstream (ping 192.0.2.1 via eth1)".
func (ch Check) String() string {
	return ch.Name + " (" + ch.Describe() + ")"
}

// Describe says what the check looks at.
func (ch Check) Describe() string {
	switch ch.Kind {
	case CheckCommand:
		return fmt.Sprintf("command %q", ch.Command)
	case CheckPing:
		return fmt.Sprintf("ping %s via %s", ch.Address, ch.Interface)
	case CheckProcess:
		return "process " + ch.Process
	case CheckFile:
		if ch.Exists {
			return "file " + ch.Path + " exists"
		}
		return "file " + ch.Path + " absent"
	}
	return string(ch.Kind)
}

// Effect says what a failing verdict does: "fault" or "weight -20".
func (ch Check) Effect() string {
	if ch.Fault {
		return "fault"
	}
	return fmt.Sprintf("weight %+d", ch.Weight)
}
