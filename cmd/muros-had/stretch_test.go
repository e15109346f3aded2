package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/muros/muros-had/internal/daemon"
	"github.com/muros/muros-had/internal/sched"
	"github.com/muros/muros-had/kdf"
)

// TestMain lets the test binary stand in for muros-had as the stretching
// child: the stretcher's tests run it with stretchCommand.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == stretchCommand {
		os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

const stretchTestPassword = "Correct-Horse-Battery-Staple-9"

// testStretcher runs this test binary as the child and counts the starts
// and the in-process derivations.
func testStretcher(t *testing.T, log *bytes.Buffer) (s *stretcher, starts, derives *int) {
	t.Helper()
	starts, derives = new(int), new(int)
	s = newStretcher(slog.New(slog.NewTextHandler(log, nil)))
	s.exe = os.Args[0]
	// Generous: a race-built child on two busy cores is slow, and this
	// is not the timeout's test.
	s.timeout = time.Minute
	s.start = func(c *exec.Cmd) error { *starts++; return sched.Start(c) }
	s.derive = func(pw string) (kdf.Master, error) { *derives++; return daemon.DeriveHere(pw) }
	return s, starts, derives
}

func sameKeys(t *testing.T, got kdf.Master, password string) {
	t.Helper()
	want, err := kdf.Derive(password)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := want.Key("muros-had test")
	b, err := got.Key("muros-had test")
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("key from the stretched secret %x (%v), want %x", b, err, a)
	}
}

// TestStretchInChild: the child's secret is kdf.Derive's, the child is
// started time-sharing and says so, and the result is remembered for the
// same password only (an in-process restart with the password unchanged
// starts nothing; a changed one is stretched again).
func TestStretchInChild(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var log bytes.Buffer
	s, starts, derives := testStretcher(t, &log)
	m, err := s.Stretch(context.Background(), stretchTestPassword)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, m, stretchTestPassword)
	if *starts != 1 || *derives != 0 {
		t.Fatalf("%d children started, %d derived in-process; want 1, 0\n%s", *starts, *derives, log.String())
	}
	// The test runner is time-sharing already, so the policy half of
	// this check cannot tell sched.Start from cmd.Start here;
	// TestSystemdNotify (internal/daemon) can: the real binary at
	// SCHED_RR 40.
	if l := log.String(); !strings.Contains(l, "password stretched in a child process") || !strings.Contains(l, `policy="SCHED_OTHER nice`) {
		t.Errorf("log does not report a time-sharing child:\n%s", l)
	}

	if _, err := s.Stretch(context.Background(), stretchTestPassword); err != nil || *starts != 1 {
		t.Fatalf("same password again: %d children started (%v), want the remembered secret", *starts, err)
	}
	other := stretchTestPassword + "-rotated"
	m, err = s.Stretch(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, m, other)
	if *starts != 2 {
		t.Fatalf("a changed password: %d children started, want 2", *starts)
	}
	m, err = s.Stretch(context.Background(), stretchTestPassword)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, m, stretchTestPassword)
	if *starts != 3 || *derives != 0 {
		t.Fatalf("back to the first password: %d children, %d in-process; want 3, 0 (only the last is remembered)", *starts, *derives)
	}
}

// TestStretchFallsBack: a child that cannot start, fails or answers
// something other than a secret leaves the daemon starting anyway, with
// the secret derived in-process and a warning that says why.
func TestStretchFallsBack(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, tc := range []struct {
		name, exe, why string
	}{
		{"missing program", "/nonexistent/muros-had", "no such file"},
		{"child fails", "/bin/false", "exit status 1"},
		{"not a secret", "/bin/echo", "reading the master secret"}, // echo prints "stretch-password\n"
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			s, _, derives := testStretcher(t, &log)
			s.exe = tc.exe
			m, err := s.Stretch(context.Background(), stretchTestPassword)
			if err != nil {
				t.Fatal(err)
			}
			sameKeys(t, m, stretchTestPassword)
			if *derives != 1 {
				t.Errorf("%d in-process derivations, want 1", *derives)
			}
			if l := log.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, tc.why) {
				t.Errorf("want a warning naming %q:\n%s", tc.why, l)
			}
		})
	}
	// A child that never answers is killed at the timeout.
	hang := filepath.Join(t.TempDir(), "hang")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	s, _, derives := testStretcher(t, &log)
	s.exe, s.timeout = hang, 200*time.Millisecond
	m, err := s.Stretch(context.Background(), stretchTestPassword)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, m, stretchTestPassword)
	if *derives != 1 || !strings.Contains(log.String(), "deadline exceeded") {
		t.Errorf("hanging child: %d in-process derivations, want 1 after the timeout:\n%s", *derives, log.String())
	}
	// The daemon stopping meanwhile ends the stretch, with no fallback.
	s, _, derives = testStretcher(t, &log)
	s.exe = hang
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := s.Stretch(ctx, stretchTestPassword); !errors.Is(err, context.DeadlineExceeded) || *derives != 0 {
		t.Errorf("stopped during the stretch: err %v, %d in-process derivations; want the context's error and none", err, *derives)
	}

	s, _, _ = testStretcher(t, &log)
	s.exe = "/bin/false"
	s.derive = func(string) (kdf.Master, error) { return kdf.Master{}, errors.New("no memory") }
	if _, err := s.Stretch(context.Background(), stretchTestPassword); err == nil {
		t.Fatal("child and in-process derivation both failed: no error")
	}
	if s.master.Valid() {
		t.Fatal("a failed stretch was remembered")
	}
}

// TestStretchCommand: the child's own input checks.
func TestStretchCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   io.Reader
		code int
		out  int
		err  string
	}{
		{"password", strings.NewReader(stretchTestPassword), 0, kdf.KeyLen, ""},
		{"empty", strings.NewReader(""), 1, 0, "empty password"},
		{"too long", bytes.NewReader(make([]byte, maxPasswordInput+1)), 1, 0, "longer than"},
	} {
		var out, errOut bytes.Buffer
		if code := cmdStretch(tc.in, &out, &errOut); code != tc.code || out.Len() != tc.out || !strings.Contains(errOut.String(), tc.err) {
			t.Errorf("%s: exit %d, %d bytes out, stderr %q; want %d, %d, %q", tc.name, code, out.Len(), errOut.String(), tc.code, tc.out, tc.err)
		}
	}
}
