package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestHooksParse(t *testing.T) {
	c := mustParse(t, minimal+`hooks:
  master:
    - unit: haproxy.service
    - command: [/usr/local/sbin/routes-up, "--table", main]
      timeout: 5s
  backup:
    - command: [/usr/local/sbin/drain]
      before_release: true
    - unit: haproxy.service
  stop:
    - unit: haproxy.service
      before_release: true
`)
	want := Hooks{
		Master: []Hook{{Unit: "haproxy.service", Timeout: DefaultHookTimeout},
			{Command: []string{"/usr/local/sbin/routes-up", "--table", "main"}, Timeout: 5 * time.Second}},
		Backup: []Hook{{Command: []string{"/usr/local/sbin/drain"}, Timeout: DefaultHookTimeout, BeforeRelease: true},
			{Unit: "haproxy.service", Timeout: DefaultHookTimeout}},
		Stop: []Hook{{Unit: "haproxy.service", Timeout: DefaultHookTimeout, BeforeRelease: true}},
	}
	if diff := cmp.Diff(want, c.Hooks); diff != "" {
		t.Error(diff)
	}
	if d := mustParse(t, minimal); !cmp.Equal(d.Hooks, Hooks{}) {
		t.Errorf("no hooks: %+v", d.Hooks)
	}
}

func TestHooksProblems(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{"relative program", "hooks:\n  master:\n    - command: [haproxy-up]\n", []string{
			`config.yaml:12: hooks.master[0].command: "haproxy-up" is not an absolute path`}},
		{"shell string", "hooks:\n  master:\n    - command: /bin/true --x\n", []string{
			`config.yaml:12: hooks.master[0].command: must be a list: the program and its arguments, e.g. [/usr/sbin/service-ctl, start] (no shell; for one, [/bin/sh, -c, "..."])`}},
		{"empty command", "hooks:\n  master:\n    - command: []\n", []string{
			"config.yaml:12: hooks.master[0].command: is empty"}},
		{"zero timeout", "hooks:\n  backup:\n    - unit: x.service\n      timeout: 0s\n", []string{
			"config.yaml:13: hooks.backup[0].timeout: 0s is out of range 100ms..10m0s"}},
		{"neither", "hooks:\n  fault:\n    - timeout: 1s\n", []string{
			"config.yaml:12: hooks.fault[0]: needs a command or a unit"}},
		{"both", "hooks:\n  fault:\n    - unit: a.service\n      command: [/bin/true]\n", []string{
			"config.yaml:12: hooks.fault[0]: has both a command and a unit; one entry runs one of them"}},
		{"before_release in master", "hooks:\n  master:\n    - unit: a.service\n      before_release: true\n", []string{
			"config.yaml:13: hooks.master[0].before_release: master hooks run after the claim; before_release is for backup, fault and stop"}},
		{"bad unit", "hooks:\n  stop:\n    - unit: --force\n", []string{
			`config.yaml:12: hooks.stop[0].unit: "--force" is not a systemd unit name`}},
		{"unknown list", "hooks:\n  notify:\n    - unit: a.service\n", []string{
			"config.yaml:11: hooks.notify: unknown key (valid keys: master, backup, fault, stop)"}},
		{"too many", "hooks:\n  backup:\n" + strings.Repeat("    - unit: a.service\n", MaxHooks+1), []string{
			"config.yaml:12: hooks.backup: 17 hooks; at most 16"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("config.yaml", []byte(minimal+tt.src))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Parse: %v, want problems", err)
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Error(diff)
			}
		})
	}
}
