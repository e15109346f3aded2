package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults for the optional keys. They are constants, not mutable package
// state; paths under the state and run directories are derived in Parse.
const (
	DefaultAdvertInterval = time.Second
	DefaultFirstVRID      = 10
	DefaultStateDir       = "/var/lib/muros-had"
	DefaultRunDir         = "/run/muros-had"
	DefaultMetricsListen  = "127.0.0.1:9732"
	DefaultConntrackGroup = "225.0.0.50"
	DefaultConntrackPort  = 3780
	DefaultLivenessGroup  = "225.0.0.51"
	DefaultLivenessPort   = 3781
	// DefaultLivenessGroup6 is the group when the conntrack sync runs on
	// IPv6 and liveness.group is not set.
	DefaultLivenessGroup6 = "ff02::3781"
	// DefaultLivenessInterval and DefaultLivenessDetect: a master
	// heartbeats every millisecond on the sync link; 1.5 ms of silence on
	// every path starts the probes, 1.5 ms more unanswered is death (a
	// lost carrier starts the probes at once). Measured client-visible
	// gaps on a quiet lab pair: 4.2-5.3 ms medians for a crash or a hang
	// (bench/README.md). A verdict that needs every path silent, so one
	// late heartbeat is never enough.
	DefaultLivenessInterval = time.Millisecond
	DefaultLivenessDetect   = 3 * time.Millisecond
	// DefaultLivenessQuietInterval and DefaultLivenessQuietAfter: a
	// master that has received nothing on its VIP interfaces for 5 s
	// heartbeats every 50 ms instead, and back every millisecond within
	// 50 ms of a stream (more than 8 packets in a second; package
	// liveness, "Quiet master"). A crash is then seen 1.5 ms after
	// VRRP's Master_Down_Interval (the missing adverts make the backup
	// watch it as a fast master), and within 76.5 ms where adverts are
	// slower than 25 ms:
	// 20 heartbeats a second instead of 100 at a 10 ms quiet period, for
	// a takeover that a pair forwarding nothing does not notice.
	DefaultLivenessQuietInterval = 50 * time.Millisecond
	DefaultLivenessQuietAfter    = 5 * time.Second
	// maxQuietInterval is the longest quiet period: half the protocol's
	// idle period (liveness.DefaultIdle), so that a backup tells a quiet
	// master's heartbeats from idle ones.
	maxQuietInterval     = 50 * time.Millisecond
	DefaultDBSyncListen  = ":7443"
	DefaultDBSyncPort    = 7443
	DefaultGARPRepeat    = 5
	DefaultGARPInterval  = 10 * time.Millisecond
	DefaultJWTTTL        = 60 * time.Second
	DefaultJWTLeeway     = 5 * time.Second
	DefaultClockSkewWarn = time.Second
	DefaultJWTAlgorithm  = "HS256"
	DefaultResyncTimeout = 30 * time.Second
	DefaultPeerCheck     = 2 * time.Second
	DefaultRulesetCheck  = 10 * time.Second
	DefaultSchedPolicy   = "rr"
	DefaultSchedPriority = 40
	// MinCheckInterval bounds the peer and ruleset checks from below: each
	// costs an HTTPS request or an nft run.
	MinCheckInterval = 200 * time.Millisecond

	MinAdvertInterval = 10 * time.Millisecond
	// MaxAdvertInterval is the 12-bit centisecond field of RFC 9568: 4095 cs.
	MaxAdvertInterval = 4095 * 10 * time.Millisecond
	// MaxAdvertIntervalV2 is the 8-bit seconds field of RFC 3768.
	MaxAdvertIntervalV2 = 255 * time.Second
	// KeepalivedAHKeyLen is how many password bytes keepalived's AH uses.
	KeepalivedAHKeyLen = 8
)

// DefaultPaths are the replicated paths: the MurOS DB and the Kea leases.
func DefaultPaths() []string { return []string{"/var/lib/muros/db", "/var/lib/kea"} }

// DefaultProtocols are the replicated conntrack protocols.
func DefaultProtocols() []string { return []string{"tcp", "udp"} }

var validProtocols = []string{"tcp", "udp", "sctp", "dccp", "icmp", "icmpv6"}

// maxFileSize bounds what Parse reads: a real file is a few kilobytes, and
// the bound keeps a hostile file from costing more than a moment.
const maxFileSize = 1 << 20

// Load reads and parses the file at path; problems name path as given.
func Load(path string) (*Config, error) {
	return load(path, false)
}

// LoadForClient is Load for the commands that talk to a running daemon or
// read its key material (status, token, fingerprint): it skips the checks
// that only guard starting a daemon, the password's strength and the
// replicated-path rules, so a file the running daemon predates (an upgrade
// that refuses its password) never hides the daemon from its operator.
// Everything else is checked as by Load. Never start a daemon with it.
func LoadForClient(path string) (*Config, error) {
	return load(path, true)
}

func load(path string, client bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dir := ""
	if abs, err := filepath.Abs(path); err == nil {
		dir = filepath.Dir(abs)
	}
	c, err := parse(path, dir, data, client)
	if err != nil {
		return nil, err
	}
	if err := c.loadPeerPinFile(); err != nil {
		return nil, err
	}
	return c, nil
}

// PeerPinFile is where `muros-had pair` writes the peer's certificate pin:
// <state_dir>/tls/peer.sha256. Load reads it when the file names no
// dbsync.tls.peer_sha256.
func (c *Config) PeerPinFile() string { return filepath.Join(c.StateDir, "tls", "peer.sha256") }

// loadPeerPinFile takes the pin from PeerPinFile when the configuration
// pins nothing itself; a file that is there but not a fingerprint is a
// problem, not silently no pin.
func (c *Config) loadPeerPinFile() error {
	if c.DBSync.TLS.PeerSHA256 != nil {
		return nil
	}
	p := c.PeerPinFile()
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return Problems{{File: c.File, Key: "dbsync.tls.peer_sha256", Message: fmt.Sprintf("pin file: %v", err)}}
	}
	sum, err := parseFingerprint(string(b))
	if err != nil {
		return Problems{{File: c.File, Key: "dbsync.tls.peer_sha256", Message: fmt.Sprintf("pin file %s: %v", p, err)}}
	}
	c.DBSync.TLS.PeerSHA256 = sum
	c.DBSync.TLS.PeerSHA256File = p
	return nil
}

// parseFingerprint reads a SHA-256 fingerprint: 64 hex digits, any case,
// colons allowed, an optional "sha256:" prefix and surrounding space.
func parseFingerprint(s string) ([]byte, error) {
	v := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	sum, err := hex.DecodeString(strings.ReplaceAll(v, ":", ""))
	if err != nil || len(sum) != 32 {
		return nil, fmt.Errorf("%q is not a SHA-256 fingerprint (64 hex digits, colons allowed)", strings.TrimSpace(s))
	}
	return sum, nil
}

// Parse decodes and validates a configuration file. file names the file in
// problems and, when absolute, locates it (no replicated path may cover its
// directory). On failure the error is Problems listing every problem found,
// sorted by line; on success Config.Warnings may still hold advice.
func Parse(file string, data []byte) (*Config, error) {
	dir := ""
	if filepath.IsAbs(file) {
		dir = filepath.Dir(filepath.Clean(file))
	}
	return parse(file, dir, data, false)
}

// parse is Parse of a file in dir ("" when unknown); client skips the
// safety checks (LoadForClient).
func parse(file, dir string, data []byte, client bool) (*Config, error) {
	d := &decoder{file: file, lines: map[string]int{}, failed: map[string]bool{}, client: client}
	if len(data) > maxFileSize {
		d.problems = append(d.problems, Problem{File: file, Message: fmt.Sprintf("file is %d bytes, larger than the %d-byte limit", len(data), maxFileSize)})
		return nil, d.problems
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		d.problems = append(d.problems, yamlProblem(file, err))
		return nil, d.problems
	}
	// A second document would be silently ignored by a plain Unmarshal.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		p := Problem{File: file, Line: extra.Line, Message: "more than one YAML document: put everything in one"}
		if err != nil {
			p = yamlProblem(file, err)
		}
		d.problems = append(d.problems, p)
		return nil, d.problems
	}
	c := defaults()
	c.File = file
	c.ConfigDir = dir
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	if doc.Kind == 0 || (doc.Kind == yaml.DocumentNode && len(doc.Content) == 0) {
		// An empty file is an empty mapping: report each missing key.
		root = &yaml.Node{Kind: yaml.MappingNode, Line: 1}
	}
	d.mapping("", root, d.topFields(c))
	d.finish(c)
	slices.SortStableFunc(d.problems, byLine)
	slices.SortStableFunc(d.warnings, byLine)
	if len(d.problems) > 0 {
		return nil, d.problems
	}
	c.Warnings = d.warnings
	return c, nil
}

func byLine(a, b Problem) int { return a.Line - b.Line }

// yamlProblem turns a yaml.v3 syntax error ("yaml: line 3: ...") into a
// Problem carrying the line.
func yamlProblem(file string, err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	p := Problem{File: file, Message: "invalid YAML: " + msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				p.Line = n
				p.Message = "invalid YAML: " + tail
			}
		}
	}
	return p
}

func defaults() *Config {
	return &Config{
		AdvertInterval: DefaultAdvertInterval,
		Auth:           AuthAH,
		Preempt:        true,
		GARP:           GARP{Repeat: DefaultGARPRepeat, Interval: DefaultGARPInterval},
		ChecksumMode:   ChecksumPseudoHeader,
		StateDir:       DefaultStateDir,
		RunDir:         DefaultRunDir,
		Metrics:        Metrics{Enabled: true, Listen: DefaultMetricsListen},
		Conntrack: Conntrack{
			Enabled: true,
			Group:   netip.MustParseAddr(DefaultConntrackGroup),
			Port:    DefaultConntrackPort,
			Filter:  ConntrackFilter{ExcludeLocal: true, Protocols: DefaultProtocols()},
			Resync:  Resync{StartupTimeout: DefaultResyncTimeout},
		},
		Liveness: Liveness{
			Enabled:       true,
			Group:         netip.MustParseAddr(DefaultLivenessGroup),
			Port:          DefaultLivenessPort,
			Interval:      DefaultLivenessInterval,
			Detect:        DefaultLivenessDetect,
			QuietInterval: DefaultLivenessQuietInterval,
			QuietAfter:    DefaultLivenessQuietAfter,
		},
		DBSync: DBSync{
			Enabled:       true,
			Listen:        DefaultDBSyncListen,
			PeerPort:      DefaultDBSyncPort,
			Paths:         DefaultPaths(),
			JWT:           JWT{Algorithm: DefaultJWTAlgorithm, TTL: DefaultJWTTTL, Leeway: DefaultJWTLeeway},
			ClockSkewWarn: DefaultClockSkewWarn,
			Limits:        DefaultDBSyncLimits(),
		},
		PeerCheck:  PeerCheck{Interval: DefaultPeerCheck, RulesetInterval: DefaultRulesetCheck},
		Scheduling: Scheduling{Policy: DefaultSchedPolicy, Priority: DefaultSchedPriority},
	}
}

type decoder struct {
	file     string
	problems Problems
	warnings Problems
	// lines records the line of every key decoded, for cross-key checks.
	lines map[string]int
	// failed marks keys already reported, so cross-key checks stay quiet
	// about them: one mistake, one problem.
	failed map[string]bool
	// vipNodes and per-VIP flags feed the cross-VIP checks in finish.
	vipLines []int
	// pathKeys is the key of each entry of DBSync.Paths ("dbsync.paths[2]").
	pathKeys []string
	// client skips the checks that only guard a daemon's start
	// (LoadForClient): password strength, replicated paths.
	client bool
}

func (d *decoder) fail(line int, key, format string, args ...any) {
	d.failed[key] = true
	d.problems = append(d.problems, Problem{File: d.file, Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
}

func (d *decoder) warn(line int, key, format string, args ...any) {
	d.warnings = append(d.warnings, Problem{File: d.file, Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
}

type field struct {
	name     string
	required bool
	decode   func(key string, n *yaml.Node)
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// resolve follows aliases. yaml.v3 rejects undefined and recursive aliases
// while parsing, so the chain is finite; the bound is belt and braces.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; i < 16 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return strconv.Quote(n.Value)
	}
	return "unsupported YAML"
}

func (d *decoder) mapping(key string, n *yaml.Node, fields []field) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, key, "must be a mapping of keys, not %s", describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(k.Line, key, "keys must be plain names, not %s", describe(k))
			continue
		}
		child := join(key, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(k.Line, child, "set twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		i := slices.IndexFunc(fields, func(f field) bool { return f.name == k.Value })
		if i < 0 {
			d.fail(k.Line, child, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		d.lines[child] = k.Line
		fields[i].decode(child, v)
	}
	for _, f := range fields {
		if _, ok := seen[f.name]; f.required && !ok {
			d.fail(n.Line, join(key, f.name), "missing required key")
		}
	}
}

// suggest names the valid keys so a typo is fixed without opening the docs.
func suggest(name string, fields []field) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	return " (valid keys: " + strings.Join(names, ", ") + ")"
}

func (d *decoder) scalar(key string, n *yaml.Node) (*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.fail(n.Line, key, "must be a single value, not %s", describe(n))
		return nil, false
	}
	return n, true
}

func (d *decoder) str(key string, n *yaml.Node, set *string) {
	if s, ok := d.scalar(key, n); ok {
		*set = s.Value
	}
}

func (d *decoder) boolean(key string, n *yaml.Node, set *bool) {
	s, ok := d.scalar(key, n)
	if !ok {
		return
	}
	var b bool
	if s.Tag != "!!bool" || s.Decode(&b) != nil {
		d.fail(s.Line, key, "must be true or false, not %q", s.Value)
		return
	}
	*set = b
}

func (d *decoder) integer(key string, n *yaml.Node, lo, hi int, set func(int)) {
	s, ok := d.scalar(key, n)
	if !ok {
		return
	}
	var v int64
	if s.Tag != "!!int" || s.Decode(&v) != nil {
		d.fail(s.Line, key, "must be a whole number, not %q", s.Value)
		return
	}
	if v < int64(lo) || v > int64(hi) {
		d.fail(s.Line, key, "%d is out of range %d..%d", v, lo, hi)
		return
	}
	set(int(v))
}

func (d *decoder) duration(key string, n *yaml.Node, lo, hi time.Duration, set *time.Duration) {
	s, ok := d.scalar(key, n)
	if !ok {
		return
	}
	v, err := time.ParseDuration(s.Value)
	if err != nil || s.Tag != "!!str" {
		d.fail(s.Line, key, "%q is not a duration with a unit, like \"1s\" or \"100ms\"", s.Value)
		return
	}
	if v < lo || v > hi {
		d.fail(s.Line, key, "%s is out of range %s..%s", s.Value, lo, hi)
		return
	}
	*set = v
}

func (d *decoder) enum(key string, n *yaml.Node, valid []string, set func(string)) {
	s, ok := d.scalar(key, n)
	if !ok {
		return
	}
	if !slices.Contains(valid, s.Value) {
		d.fail(s.Line, key, "%q is not one of %s", s.Value, strings.Join(valid, ", "))
		return
	}
	set(s.Value)
}

func (d *decoder) prefix(key string, n *yaml.Node, set *netip.Prefix) bool {
	s, ok := d.scalar(key, n)
	if !ok {
		return false
	}
	p, err := netip.ParsePrefix(s.Value)
	if err != nil || p.Addr().Is4In6() {
		d.fail(s.Line, key, "%q is not a valid CIDR", s.Value)
		return false
	}
	*set = p
	return true
}

func (d *decoder) addr(key string, n *yaml.Node, set *netip.Addr) bool {
	s, ok := d.scalar(key, n)
	if !ok {
		return false
	}
	a, err := netip.ParseAddr(s.Value)
	if err != nil || a.Is4In6() {
		d.fail(s.Line, key, "%q is not an IP address", s.Value)
		return false
	}
	*set = a
	return true
}

func (d *decoder) list(key string, n *yaml.Node, item func(key string, n *yaml.Node)) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.fail(n.Line, key, "must be a list, not %s", describe(n))
		return
	}
	for i, it := range n.Content {
		item(fmt.Sprintf("%s[%d]", key, i), it)
	}
}

// ifname checks a Linux interface name as the kernel's dev_valid_name does.
func (d *decoder) ifname(key string, n *yaml.Node, set *string) {
	s, ok := d.scalar(key, n)
	if !ok {
		return
	}
	v := s.Value
	if len(v) == 0 || len(v) > 15 || v == "." || v == ".." || strings.ContainsAny(v, "/: \t\n\r\x00") {
		d.fail(s.Line, key, "%q is not a valid interface name (1..15 bytes, no '/', ':' or spaces)", v)
		return
	}
	*set = v
}

func (d *decoder) absPath(key string, n *yaml.Node, set *string) {
	s, ok := d.scalar(key, n)
	if !ok {
		return
	}
	if !filepath.IsAbs(s.Value) {
		d.fail(s.Line, key, "%q is not an absolute path", s.Value)
		return
	}
	*set = filepath.Clean(s.Value)
}

// hostPort accepts host:port with an IP literal or empty host.
func validHostPort(v string) bool {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return false
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return false
	}
	if host == "" {
		return true
	}
	_, err = netip.ParseAddr(host)
	return err == nil
}

func (d *decoder) listen(key string, n *yaml.Node, allowUnix bool, set *string) {
	s, ok := d.scalar(key, n)
	if !ok {
		return
	}
	switch {
	case allowUnix && filepath.IsAbs(s.Value):
		*set = filepath.Clean(s.Value)
	case validHostPort(s.Value):
		*set = s.Value
	case allowUnix:
		d.fail(s.Line, key, "%q is neither an absolute socket path nor IP:port", s.Value)
	default:
		d.fail(s.Line, key, "%q is not IP:port (or :port for every address)", s.Value)
	}
}

func (d *decoder) topFields(c *Config) []field {
	return []field{
		{"role", true, func(k string, n *yaml.Node) {
			d.enum(k, n, []string{string(RoleMaster), string(RoleBackup)}, func(v string) { c.Role = Role(v) })
		}},
		{"password", true, func(k string, n *yaml.Node) { d.str(k, n, &c.Password) }},
		{"sync_interface", true, func(k string, n *yaml.Node) { d.ifname(k, n, &c.SyncInterface) }},
		{"peer", true, func(k string, n *yaml.Node) { d.addr(k, n, &c.Peer) }},
		{"vips", true, func(k string, n *yaml.Node) { d.vips(k, n, c) }},
		{"advert_interval", false, func(k string, n *yaml.Node) {
			d.duration(k, n, MinAdvertInterval, MaxAdvertInterval, &c.AdvertInterval)
		}},
		{"auth", false, func(k string, n *yaml.Node) {
			d.enum(k, n, []string{string(AuthAH), string(AuthKeepalivedAH), string(AuthNone)}, func(v string) { c.Auth = AuthMode(v) })
		}},
		{"preempt", false, func(k string, n *yaml.Node) { d.boolean(k, n, &c.Preempt) }},
		{"preempt_delay", false, func(k string, n *yaml.Node) { d.duration(k, n, 0, 1000*time.Second, &c.PreemptDelay) }},
		{"garp", false, func(k string, n *yaml.Node) {
			d.mapping(k, n, []field{
				{"repeat", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 100, func(v int) { c.GARP.Repeat = v }) }},
				{"interval", false, func(k string, n *yaml.Node) { d.duration(k, n, 0, time.Second, &c.GARP.Interval) }},
				{"refresh", false, func(k string, n *yaml.Node) { d.duration(k, n, 0, 24*time.Hour, &c.GARP.Refresh) }},
			})
		}},
		{"vmac", false, func(k string, n *yaml.Node) { d.boolean(k, n, &c.VMAC) }},
		{"checksum_mode", false, func(k string, n *yaml.Node) {
			d.enum(k, n, []string{string(ChecksumPseudoHeader), string(ChecksumMessageOnly)}, func(v string) { c.ChecksumMode = ChecksumMode(v) })
		}},
		{"state_dir", false, func(k string, n *yaml.Node) { d.absPath(k, n, &c.StateDir) }},
		{"run_dir", false, func(k string, n *yaml.Node) { d.absPath(k, n, &c.RunDir) }},
		{"status", false, func(k string, n *yaml.Node) {
			d.mapping(k, n, []field{
				{"listen", false, func(k string, n *yaml.Node) { d.listen(k, n, true, &c.Status.Listen) }},
				{"http", false, func(k string, n *yaml.Node) { d.listen(k, n, false, &c.Status.HTTP) }},
				{"http_allow_remote", false, func(k string, n *yaml.Node) { d.boolean(k, n, &c.Status.HTTPAllowRemote) }},
			})
		}},
		{"metrics", false, func(k string, n *yaml.Node) {
			d.mapping(k, n, []field{
				{"enabled", false, func(k string, n *yaml.Node) { d.boolean(k, n, &c.Metrics.Enabled) }},
				{"listen", false, func(k string, n *yaml.Node) { d.listen(k, n, false, &c.Metrics.Listen) }},
			})
		}},
		{"conntrack", false, func(k string, n *yaml.Node) { d.mapping(k, n, d.conntrackFields(&c.Conntrack)) }},
		{"dbsync", false, func(k string, n *yaml.Node) { d.mapping(k, n, d.dbsyncFields(&c.DBSync)) }},
		{"liveness", false, func(k string, n *yaml.Node) { d.mapping(k, n, d.livenessFields(&c.Liveness)) }},
		{"scheduling", false, func(k string, n *yaml.Node) {
			var prioLine, niceLine int
			d.mapping(k, n, []field{
				{"policy", false, func(k string, n *yaml.Node) {
					d.enum(k, n, []string{"rr", "fifo", "other"}, func(v string) { c.Scheduling.Policy = v })
				}},
				{"priority", false, func(k string, n *yaml.Node) {
					prioLine = resolve(n).Line
					d.integer(k, n, 1, 99, func(v int) { c.Scheduling.Priority = v })
				}},
				{"nice", false, func(k string, n *yaml.Node) {
					niceLine = resolve(n).Line
					d.integer(k, n, -20, 19, func(v int) { c.Scheduling.Nice = v })
				}},
			})
			switch rt := c.Scheduling.Policy != "other"; {
			case rt && niceLine > 0:
				d.fail(niceLine, k+".nice", "applies to policy other; %s takes a priority", c.Scheduling.Policy)
			case !rt && prioLine > 0:
				d.fail(prioLine, k+".priority", "applies to policies rr and fifo; other takes a nice value")
			}
		}},
		{"checks", false, func(k string, n *yaml.Node) { d.checks(k, n, c) }},
		{"hooks", false, func(k string, n *yaml.Node) { d.hooks(k, n, &c.Hooks) }},
		{"peer_check", false, func(k string, n *yaml.Node) {
			d.mapping(k, n, []field{
				{"interval", false, func(k string, n *yaml.Node) {
					d.duration(k, n, MinCheckInterval, time.Minute, &c.PeerCheck.Interval)
				}},
				{"ruleset_interval", false, func(k string, n *yaml.Node) {
					var v time.Duration
					d.duration(k, n, 0, time.Hour, &v)
					if v > 0 && v < MinCheckInterval {
						d.fail(resolve(n).Line, k, "%s is below %s (0 turns the check off)", v, MinCheckInterval)
						return
					}
					c.PeerCheck.RulesetInterval = v
				}},
			})
		}},
	}
}

func (d *decoder) vips(key string, n *yaml.Node, c *Config) {
	d.list(key, n, func(k string, item *yaml.Node) {
		var v VIP
		d.vipLines = append(d.vipLines, resolve(item).Line)
		d.mapping(k, item, []field{
			{"interface", true, func(k string, n *yaml.Node) { d.ifname(k, n, &v.Interface) }},
			{"address", true, func(k string, n *yaml.Node) { d.prefix(k, n, &v.Address) }},
			{"vrid", false, func(k string, n *yaml.Node) {
				d.integer(k, n, 1, 255, func(id int) { v.VRID = uint8(id) })
				v.VRIDExplicit = true
			}},
		})
		c.VIPs = append(c.VIPs, v)
	})
}

func (d *decoder) livenessFields(l *Liveness) []field {
	return []field{
		{"enabled", false, func(k string, n *yaml.Node) { d.boolean(k, n, &l.Enabled) }},
		{"group", false, func(k string, n *yaml.Node) {
			var a netip.Addr
			if d.addr(k, n, &a) {
				if !a.IsMulticast() || a.Is4In6() {
					d.fail(resolve(n).Line, k, "%s is not a multicast group (IPv4 224.0.0.0/4, or IPv6 ff00::/8 such as ff02::3781)", a)
					return
				}
				l.Group = a
			}
		}},
		{"port", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 65535, func(v int) { l.Port = uint16(v) }) }},
		{"interval", false, func(k string, n *yaml.Node) {
			d.duration(k, n, 100*time.Microsecond, time.Second, &l.Interval)
		}},
		{"detect", false, func(k string, n *yaml.Node) {
			d.duration(k, n, 200*time.Microsecond, 10*time.Second, &l.Detect)
		}},
		{"quiet_interval", false, func(k string, n *yaml.Node) {
			d.duration(k, n, 0, maxQuietInterval, &l.QuietInterval)
		}},
		{"quiet_after", false, func(k string, n *yaml.Node) {
			d.duration(k, n, 100*time.Millisecond, time.Hour, &l.QuietAfter)
		}},
		{"peer_address", false, func(k string, n *yaml.Node) {
			var a netip.Addr
			if d.addr(k, n, &a) {
				if a.IsMulticast() || a.IsUnspecified() || a.IsLoopback() {
					d.fail(resolve(n).Line, k, "%s is not a unicast address of the peer (the second path is unicast, never flooded)", a)
					return
				}
				l.PeerAddress = a
			}
		}},
	}
}

func (d *decoder) conntrackFields(ct *Conntrack) []field {
	cidrs := func(set *[]netip.Prefix) func(string, *yaml.Node) {
		return func(k string, n *yaml.Node) {
			*set = nil
			d.list(k, n, func(k string, n *yaml.Node) {
				var p netip.Prefix
				if d.prefix(k, n, &p) {
					*set = append(*set, p.Masked())
				}
			})
		}
	}
	return []field{
		{"enabled", false, func(k string, n *yaml.Node) { d.boolean(k, n, &ct.Enabled) }},
		{"group", false, func(k string, n *yaml.Node) {
			var a netip.Addr
			if d.addr(k, n, &a) {
				if !a.IsMulticast() || a.Is4In6() {
					d.fail(resolve(n).Line, k, "%s is not a multicast group (IPv4 224.0.0.0/4, or IPv6 ff00::/8 such as ff02::3780)", a)
					return
				}
				ct.Group = a
			}
		}},
		{"port", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 65535, func(v int) { ct.Port = uint16(v) }) }},
		{"filter", false, func(k string, n *yaml.Node) {
			d.mapping(k, n, []field{
				{"exclude_local", false, func(k string, n *yaml.Node) { d.boolean(k, n, &ct.Filter.ExcludeLocal) }},
				{"include", false, cidrs(&ct.Filter.Include)},
				{"exclude", false, cidrs(&ct.Filter.Exclude)},
				{"protocols", false, func(k string, n *yaml.Node) {
					ct.Filter.Protocols = nil
					d.list(k, n, func(k string, n *yaml.Node) {
						d.enum(k, n, validProtocols, func(v string) {
							if slices.Contains(ct.Filter.Protocols, v) {
								d.fail(resolve(n).Line, k, "%q listed twice", v)
								return
							}
							ct.Filter.Protocols = append(ct.Filter.Protocols, v)
						})
					})
					if len(ct.Filter.Protocols) == 0 && len(resolve(n).Content) == 0 {
						d.fail(resolve(n).Line, k, "empty: no flow would be replicated (set conntrack.enabled: false instead)")
					}
				}},
			})
		}},
		{"resync", false, func(k string, n *yaml.Node) {
			d.mapping(k, n, []field{
				{"startup_timeout", false, func(k string, n *yaml.Node) {
					d.duration(k, n, time.Second, time.Hour, &ct.Resync.StartupTimeout)
				}},
				{"interval", false, func(k string, n *yaml.Node) { d.duration(k, n, 0, 24*time.Hour, &ct.Resync.Interval) }},
			})
		}},
	}
}

func (d *decoder) dbsyncFields(db *DBSync) []field {
	return []field{
		{"enabled", false, func(k string, n *yaml.Node) { d.boolean(k, n, &db.Enabled) }},
		{"listen", false, func(k string, n *yaml.Node) { d.listen(k, n, false, &db.Listen) }},
		{"peer_port", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 65535, func(v int) { db.PeerPort = uint16(v) }) }},
		{"clock_skew_warn", false, func(k string, n *yaml.Node) {
			d.duration(k, n, 10*time.Millisecond, time.Minute, &db.ClockSkewWarn)
		}},
		{"paths", false, func(k string, n *yaml.Node) {
			db.Paths = nil
			first := map[string]string{}
			d.list(k, n, func(k string, n *yaml.Node) {
				var p string
				d.absPath(k, n, &p)
				if p == "" {
					return
				}
				if prev, dup := first[p]; dup {
					d.fail(resolve(n).Line, k, "%q is already listed as %s", p, prev)
					return
				}
				first[p] = k
				d.lines[k] = resolve(n).Line
				d.pathKeys = append(d.pathKeys, k)
				db.Paths = append(db.Paths, p)
			})
		}},
		{"exclude", false, func(k string, n *yaml.Node) {
			db.Exclude = nil
			d.list(k, n, func(k string, n *yaml.Node) {
				s, ok := d.scalar(k, n)
				if !ok {
					return
				}
				if err := checkExcludeGlob(s.Value); err != nil {
					d.fail(s.Line, k, "%q: %v", s.Value, err)
					return
				}
				db.Exclude = append(db.Exclude, s.Value)
			})
		}},
		{"tls", false, func(k string, n *yaml.Node) {
			d.mapping(k, n, []field{
				{"cert", false, func(k string, n *yaml.Node) { d.absPath(k, n, &db.TLS.Cert) }},
				{"key", false, func(k string, n *yaml.Node) { d.absPath(k, n, &db.TLS.Key) }},
				{"peer_sha256", false, func(k string, n *yaml.Node) {
					s, ok := d.scalar(k, n)
					if !ok {
						return
					}
					v := strings.TrimPrefix(strings.ToLower(s.Value), "sha256:")
					sum, err := hex.DecodeString(strings.ReplaceAll(v, ":", ""))
					if err != nil || len(sum) != 32 {
						d.fail(s.Line, k, "%q is not a SHA-256 fingerprint (64 hex digits, colons allowed)", s.Value)
						return
					}
					db.TLS.PeerSHA256 = sum
				}},
			})
		}},
		{"jwt", false, func(k string, n *yaml.Node) {
			d.mapping(k, n, []field{
				{"secret_file", false, func(k string, n *yaml.Node) { d.absPath(k, n, &db.JWT.SecretFile) }},
				{"algorithm", false, func(k string, n *yaml.Node) {
					d.enum(k, n, []string{"HS256", "HS384", "HS512"}, func(v string) { db.JWT.Algorithm = v })
				}},
				{"ttl", false, func(k string, n *yaml.Node) { d.duration(k, n, time.Second, 24*time.Hour, &db.JWT.TTL) }},
				{"leeway", false, func(k string, n *yaml.Node) { d.duration(k, n, time.Second, time.Minute, &db.JWT.Leeway) }},
				{"issuer", false, func(k string, n *yaml.Node) { d.str(k, n, &db.JWT.Issuer) }},
				{"audience", false, func(k string, n *yaml.Node) { d.str(k, n, &db.JWT.Audience) }},
			})
		}},
		{"limits", false, func(k string, n *yaml.Node) {
			l := &db.Limits
			d.mapping(k, n, []field{
				{"connections", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 4096, func(v int) { l.Connections = v }) }},
				{"connections_per_source", false, func(k string, n *yaml.Node) {
					d.integer(k, n, 2, 4096, func(v int) { l.ConnectionsPerSource = v })
				}},
				{"rate_per_source", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 1000, func(v int) { l.RatePerSource = v }) }},
				{"burst_per_source", false, func(k string, n *yaml.Node) { d.integer(k, n, 1, 10000, func(v int) { l.BurstPerSource = v }) }},
			})
			if l.ConnectionsPerSource > l.Connections {
				d.fail(resolve(n).Line, k+".connections_per_source", "%d is more than %s.connections (%d)", l.ConnectionsPerSource, k, l.Connections)
			}
		}},
	}
}

// DefaultDBSyncLimits are the DB sync listener's limits when the
// configuration names none: ample for the peer (at most 2 connections,
// which prove themselves), tight for anyone else.
func DefaultDBSyncLimits() DBSyncLimits {
	return DBSyncLimits{Connections: 64, ConnectionsPerSource: 8, RatePerSource: 10, BurstPerSource: 20}
}
