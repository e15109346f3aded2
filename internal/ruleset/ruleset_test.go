package ruleset

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The listings in testdata/nft were captured from `nft list ruleset` and
// `nft -s list ruleset` (nftables 1.0.6) in a lab namespace loaded with
// testdata/nft/ruleset.nft, after one element was added to each dynamic
// set by hand; wrapped-elements.txt has nft's line-wrapped element list.
func readNft(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// normalizedLab is the normalization of stateless.txt: blanks and empty
// lines gone, dynamic and timeout sets without elements, static elements
// sorted, tables sorted.
const normalizedLab = `table inet muros_lab {
counter fwd_established {
}
counter in_vrrp {
}
quota q1 {
over 100 mbytes
}
limit l1 {
rate 10/second
}
set blocklist {
type ipv4_addr
size 65535
flags dynamic,timeout
timeout 1m
}
set meter4 {
type ipv4_addr
size 1024
flags dynamic
}
set static_allow {
type ipv4_addr
flags interval
elements = { 10.0.0.0/8, 192.168.1.1 }
}
set tmo {
type ipv4_addr
timeout 5m
}
map portmap {
type inet_service : ipv4_addr
elements = { 443 : 10.0.0.2, 80 : 10.0.0.1 }
}
chain forward_extra {
}
chain forward {
type filter hook forward priority filter; policy drop;
jump forward_extra
ct state established,related counter name "fwd_established" accept
ip saddr @blocklist counter drop
tcp dport 22 ct state new add @meter4 { ip saddr limit rate 3/minute } accept
ip saddr @static_allow counter accept
quota name "q1" drop
limit name "l1" accept
update @blocklist { ip saddr }
}
chain input {
type filter hook input priority filter; policy accept;
meta l4proto vrrp counter name "in_vrrp"
ip daddr 10.0.0.1 counter comment "with a comment"
}
}
table ip nat {
chain postrouting {
type nat hook postrouting priority srcnat; policy accept;
oifname "wan0" ip saddr 10.10.0.0/24 masquerade
}
}
`

func TestNormalizeRuleset(t *testing.T) {
	stateless := readNft(t, "stateless.txt")
	tests := []struct {
		name    string
		listing string
		want    string
	}{
		{"stateless listing", stateless, normalizedLab},
		{"stateful listing: counters, expiries gone", readNft(t, "stateful.txt"), normalizedLab},
		{"wrapped element list joined and sorted", readNft(t, "wrapped-elements.txt"), `table inet t {
set h {
type ipv4_addr
elements = { 1.1.1.1, 10.1.1.1, 11.1.1.1, 12.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, 5.5.5.5, 6.6.6.6, 7.7.7.7, 8.8.8.8, 9.9.9.9 }
}
chain c {
ip saddr { 1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, 5.5.5.5, 6.6.6.6, 7.7.7.7, 8.8.8.8, 9.9.9.9, 10.1.1.1, 11.1.1.1, 12.1.1.1 } accept
tcp dport { 22, 80, 443, 3000, 8080 } accept
}
}
`},
		{"tables in the other order", "table ip nat {\n\tchain c {\n\t}\n}\ntable inet a {\n\tchain c {\n\t}\n}\n",
			"table inet a {\nchain c {\n}\n}\ntable ip nat {\nchain c {\n}\n}\n"},
		{"quota consumption", "table inet t {\n\tquota q {\n\t\tover 1 mbytes used 512 kbytes\n\t}\n}\n",
			"table inet t {\nquota q {\nover 1 mbytes\n}\n}\n"},
		{"commas and braces inside quotes", "table inet t {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 2.2.2.2 comment \"b, {x}\",\n\t\t\t     1.1.1.1 comment \"a\" }\n\t}\n}\n",
			"table inet t {\nset s {\ntype ipv4_addr\nelements = { 1.1.1.1 comment \"a\", 2.2.2.2 comment \"b, {x}\" }\n}\n}\n"},
		{"empty ruleset", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, string(Normalize([]byte(tt.listing)))); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestRulesetFingerprintDistinguishes checks what changes the fingerprint
// and what does not, on edits of the real listing.
func TestRulesetFingerprintDistinguishes(t *testing.T) {
	base := readNft(t, "stateless.txt")
	fp := Fingerprint([]byte(base))
	tests := []struct {
		name string
		edit func(string) string
		same bool
	}{
		{"dynamic set element differs", func(s string) string { return strings.Replace(s, "{ 9.9.9.9 }", "{ 7.7.7.7, 9.9.9.9 }", 1) }, true},
		{"timeout set element differs", func(s string) string { return strings.Replace(s, "{ 1.2.3.4, 5.6.7.8 timeout 10m }", "{ 1.2.3.4 }", 1) }, true},
		{"indentation", func(s string) string { return strings.ReplaceAll(s, "\t", "  ") }, true},
		{"static set element differs", func(s string) string { return strings.Replace(s, "192.168.1.1 }", "192.168.1.2 }", 1) }, false},
		{"map value differs", func(s string) string { return strings.Replace(s, "443 : 10.0.0.2", "443 : 10.0.0.3", 1) }, false},
		{"rule added", func(s string) string {
			return strings.Replace(s, "\t\tjump forward_extra\n", "\t\tjump forward_extra\n\t\ttcp dport 23 drop\n", 1)
		}, false},
		{"rules swapped", func(s string) string {
			return strings.Replace(s, "\t\tquota name \"q1\" drop\n\t\tlimit name \"l1\" accept\n", "\t\tlimit name \"l1\" accept\n\t\tquota name \"q1\" drop\n", 1)
		}, false},
		{"policy changed", func(s string) string { return strings.Replace(s, "policy drop;", "policy accept;", 1) }, false},
		{"dynamic flag dropped", func(s string) string { return strings.Replace(s, "flags dynamic\n", "", 1) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edited := tt.edit(base)
			if edited == base {
				t.Fatal("the edit changed nothing")
			}
			if got := Fingerprint([]byte(edited)) == fp; got != tt.same {
				t.Errorf("same fingerprint = %v, want %v\n%s", got, tt.same, Normalize([]byte(edited)))
			}
		})
	}
}

func TestCheckRuleset(t *testing.T) {
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	listing := readNft(t, "stateless.txt")
	tests := []struct {
		name string
		list Lister
		want Status
	}{
		{"listed", func(context.Context) ([]byte, error) { return []byte(listing), nil },
			Status{Fingerprint: Fingerprint([]byte(listing)), CheckedAt: now}},
		{"nft missing", func(context.Context) ([]byte, error) {
			return nil, errors.New(`exec: "nft": executable file not found in $PATH`)
		},
			Status{CheckedAt: now, Error: `exec: "nft": executable file not found in $PATH`}},
		{"empty ruleset", func(context.Context) ([]byte, error) { return []byte("\n"), nil },
			Status{Fingerprint: Fingerprint(nil), CheckedAt: now, Error: "ruleset is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, Check(context.Background(), tt.list, now)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestRunRulesetCheck: a fingerprint at start, one per interval and one per
// kick (a reload); a failing nft is a status, logged once per streak.
func TestRunRulesetCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The lister runs on Watch's goroutine, woken by the
		// ticker: a timer firing in the bubble orders nothing between the
		// test's accesses and the lister's, so both are atomic.
		var calls atomic.Int64
		var fail atomic.Bool
		list := func(context.Context) ([]byte, error) {
			calls.Add(1)
			if fail.Load() {
				return nil, errors.New("nft: boom")
			}
			return []byte("table inet t {\n}\n"), nil
		}
		var last atomic.Pointer[Status]
		report := func(st Status) { last.Store(&st) }
		log := &recordLog{}
		kick := make(chan struct{}, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			Watch(ctx, 10*time.Second, list, kick, report, log)
		}()
		synctest.Wait()
		if calls.Load() != 1 || last.Load().Fingerprint == "" {
			t.Fatalf("after start: %d calls, status %+v", calls.Load(), *last.Load())
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if calls.Load() != 2 {
			t.Fatalf("after one interval: %d calls, want 2", calls.Load())
		}
		fail.Store(true)
		kick <- struct{}{}
		synctest.Wait()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if calls.Load() != 4 {
			t.Fatalf("after a kick and an interval: %d calls, want 4", calls.Load())
		}
		if r := *last.Load(); r.Fingerprint != "" || r.Error != "nft: boom" {
			t.Errorf("failing nft: %+v", r)
		}
		fail.Store(false)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		cancel()
		<-done
		want := []string{"WARN ruleset fingerprint: cannot list the ruleset", "INFO ruleset fingerprint: listing works again"}
		if d := cmp.Diff(want, log.lines()); d != "" {
			t.Errorf("log (-want +got):\n%s", d)
		}
	})
}

// recordLog keeps "LEVEL msg" of every line logged.
type recordLog struct {
	mu  sync.Mutex
	got []string
}

func (l *recordLog) add(level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, level+" "+msg)
}
func (l *recordLog) Info(msg string, _ ...any) { l.add("INFO", msg) }
func (l *recordLog) Warn(msg string, _ ...any) { l.add("WARN", msg) }
func (l *recordLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}
