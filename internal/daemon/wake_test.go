package daemon

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/muros/muros-had/internal/status"
)

// TestLoopInputsWake: every input of the loop goes through Daemon.send,
// which wakes the loop's wait. A send on d.events anywhere else would sit
// in the queue until the loop's next deadline (in production, up to an
// advert interval later; in a state with no timer, for ever).
func TestLoopInputsWake(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				send, ok := n.(*ast.SendStmt)
				if !ok {
					return true
				}
				sel, ok := send.Chan.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "events" {
					return true
				}
				checked++
				if fn.Name.Name != "send" {
					t.Errorf("%s: %s sends on %s.events directly: use Daemon.send, which wakes the loop", fset.Position(send.Pos()), fn.Name.Name, sel.X)
				}
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatal("no send on d.events found at all: the check looks at nothing")
	}
}

// A health check's verdict is handled the instant it is reached, not at
// the loop's next advert: the priority moves with the check's status.
// The check's period (130 ms) is not a multiple of the advert interval,
// so its verdict never lands on an instant the loop wakes anyway.
func TestLoopCheckVerdictAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		probes := newFakeProbes()
		ch := check200("dns", false, -60)
		ch.Interval = 130 * time.Millisecond
		withCheck(fw1, probes, ch)
		elect(t, fw1, fw2)
		probes.set("dns", false)
		for step := 0; ; step++ {
			if step == 2000 {
				t.Fatal("the check never failed in 2 s")
			}
			settle(time.Millisecond)
			if checkStatus(t, fw1, "dns").State != status.CheckFailing {
				continue
			}
			if p := fw1.d.Status().Priority; p != 90 {
				t.Fatalf("the check fails but the priority is still %d: the loop did not take the verdict at once", p)
			}
			break
		}
		haltPair(t, fw1, fw2)
	})
}

// A reload request (SIGHUP) is taken the instant it is made.
func TestLoopTriggerAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		elect(t, fw1, fw2)
		settle(37 * time.Millisecond) // between two adverts
		before := len(fw1.logText())
		fw1.d.Trigger()
		synctest.Wait()
		if log := fw1.logText()[before:]; !strings.Contains(log, "reload") {
			t.Fatalf("no reload at the instant of the request; log since:\n%s", log)
		}
		haltPair(t, fw1, fw2)
	})
}

// Adverts already received go before the timers in a round: a backup
// whose wait returns for its Master_Down deadline with the master's
// adverts queued (they arrived before it, unnoticed) reads them first and
// stays BACKUP, instead of claiming the VIPs and stepping down again when
// it reads them a moment later.
func TestLoopQueuedAdvertsBeforeTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link, fw1, fw2 := loopPair(t, loopOpts{})
		elect(t, fw1, fw2)
		claims := fw2.vips.claimCount()
		link.setQuiet(fw2.addr, true)
		settle(3 * time.Second) // eight Master_Down deadlines
		link.setQuiet(fw2.addr, false)
		settle(time.Second)
		fw2.check(t, "BACKUP")
		if n := fw2.vips.claimCount() - claims; n != 0 {
			t.Errorf("the backup claimed the VIPs %d times while the master's adverts were queued at its deadlines", n)
		}
		haltPair(t, fw1, fw2)
	})
}

// elect starts both nodes and lets the election settle: fw1 MASTER, fw2
// BACKUP.
func elect(t *testing.T, fw1, fw2 *loopNode) {
	t.Helper()
	fw1.start(t)
	fw2.start(t)
	settle(time.Second)
	fw1.check(t, "MASTER")
	fw2.check(t, "BACKUP")
}

// haltPair stops both nodes gracefully.
func haltPair(t *testing.T, fw1, fw2 *loopNode) {
	t.Helper()
	fw1.halt(t)
	fw2.halt(t)
}
