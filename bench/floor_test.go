package bench

// The floor under the idle figures: what one datagram every 10 ms costs a
// receiver that does nothing with it but re-arm a deadline, written in C
// (epoll, recv, timerfd: keepalived's shape) and in Go (the daemon's own
// pollset wait, and the standard library's net.UDPConn with a runtime
// timer). BenchmarkIdleSync compares whole daemons; this says how much of
// the difference a Go daemon can remove at all: a Go receiver's wake-up
// costs what it costs before the daemon does any work.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/pollset"
	"golang.org/x/sys/unix"
)

// floorReceiverEnv makes the benchmark binary a Go receiver (TestMain):
// "pollset:PORT" or "net:PORT".
const floorReceiverEnv = "MUROS_BENCH_FLOOR_RECEIVER"

// floorC is the C sender (every 10 ms, to each port given, on loopback)
// and receiver (epoll_wait, recv until EAGAIN, timerfd_settime 35 ms).
const floorC = `#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

static int sender(int argc, char **argv) {
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	char buf[40] = {0};
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	for (;;) {
		t.tv_nsec += 10000000;
		if (t.tv_nsec >= 1000000000) { t.tv_nsec -= 1000000000; t.tv_sec++; }
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
		for (int i = 2; i < argc; i++) {
			struct sockaddr_in a = {0};
			a.sin_family = AF_INET;
			a.sin_port = htons(atoi(argv[i]));
			a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			sendto(s, buf, sizeof buf, 0, (struct sockaddr *)&a, sizeof a);
		}
	}
}

static int receiver(int port) {
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {0};
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	ev.data.fd = tfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	char buf[2048];
	for (;;) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, -1);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == s) {
				while (recv(s, buf, sizeof buf, 0) > 0) {}
				struct itimerspec its = {0};
				its.it_value.tv_nsec = 35000000;
				timerfd_settime(tfd, 0, &its, NULL);
			} else {
				unsigned long long x;
				if (read(tfd, &x, sizeof x) < 0) {}
			}
		}
	}
}

int main(int argc, char **argv) {
	if (argc >= 3 && strcmp(argv[1], "send") == 0) return sender(argc, argv);
	if (argc == 3 && strcmp(argv[1], "recv") == 0) return receiver(atoi(argv[2]));
	return 2;
}
`

// BenchmarkIdleFloor runs the C sender and three receivers in one
// namespace for -failover.cpu per repetition and reports each receiver's
// CPU (% of one core, from the kernel's per-thread run time) and wake-ups
// (voluntary context switches) a second, medians over the repetitions
// (-benchtime Nx). A receiver that woke fewer than 80 times a second did
// not get the datagrams: the run fails rather than report an idle
// process as the floor.
func BenchmarkIdleFloor(b *testing.B) {
	lab.Require(b)
	cc, err := exec.LookPath("cc")
	if err != nil {
		b.Fatalf("the C receiver needs a C compiler (Debian: gcc): %v", err)
	}
	dir := b.TempDir()
	src, bin := filepath.Join(dir, "floor.c"), filepath.Join(dir, "floor")
	if err := os.WriteFile(src, []byte(floorC), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(cc, "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		b.Fatalf("cc: %v: %s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	ns := lab.NewNetnsT(b, "floor")
	receivers := []struct {
		name string
		cmd  *exec.Cmd
	}{
		{"c_epoll", ns.Command(bin, "recv", "9001")},
		{"go_pollset", ns.Command(self, "-test.run=^$")},
		{"go_net_timer", ns.Command(self, "-test.run=^$")},
	}
	receivers[1].cmd.Env = append(os.Environ(), floorReceiverEnv+"=pollset:9002")
	receivers[2].cmd.Env = append(os.Environ(), floorReceiverEnv+"=net:9003")
	for _, r := range receivers {
		r.cmd.Stderr = os.Stderr
		if err := r.cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
		}()
	}
	time.Sleep(500 * time.Millisecond) // bound and waiting
	send := ns.Command(bin, "send", "9001", "9002", "9003")
	if err := send.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = send.Process.Kill()
		_ = send.Wait()
	}()
	time.Sleep(time.Second)
	cpu := make([][]float64, len(receivers))
	wake := make([][]float64, len(receivers))
	for range max(1, b.N) {
		before := make([][2]uint64, len(receivers))
		for i, r := range receivers {
			if before[i], err = threadTotals(r.cmd.Process.Pid); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		time.Sleep(*cpuFlag)
		wall := time.Since(start)
		for i, r := range receivers {
			after, err := threadTotals(r.cmd.Process.Pid)
			if err != nil {
				b.Fatal(err)
			}
			cpu[i] = append(cpu[i], 100*float64(after[0]-before[i][0])/float64(wall.Nanoseconds()))
			wake[i] = append(wake[i], float64(after[1]-before[i][1])/wall.Seconds())
		}
	}
	b.ReportMetric(0, "ns/op")
	for i, r := range receivers {
		w := median(wake[i])
		if w < 80 {
			b.Fatalf("%s woke %.0f times a second: it is not receiving the datagrams", r.name, w)
		}
		b.ReportMetric(median(cpu[i]), "cpu_pct_"+r.name)
		b.ReportMetric(w, "wakeups_per_s_"+r.name)
	}
	b.Logf("load average %s", loadAverage())
}

// threadTotals sums, over every thread of pid, the time run on a CPU (ns,
// /proc/<pid>/task/<tid>/schedstat: exact, where stat's ticks are 10 ms
// each) and the voluntary context switches.
func threadTotals(pid int) ([2]uint64, error) {
	var t [2]uint64
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	tids, err := os.ReadDir(dir)
	if err != nil {
		return t, fmt.Errorf("threads of %d: %w", pid, err)
	}
	for _, tid := range tids {
		ss, err := os.ReadFile(filepath.Join(dir, tid.Name(), "schedstat"))
		if err != nil {
			continue // exited
		}
		f := strings.Fields(string(ss))
		if len(f) < 1 {
			return t, fmt.Errorf("schedstat of %d/%s: %q", pid, tid.Name(), ss)
		}
		ns, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return t, fmt.Errorf("schedstat of %d/%s: %w", pid, tid.Name(), err)
		}
		t[0] += ns
		st, err := os.ReadFile(filepath.Join(dir, tid.Name(), "status"))
		if err != nil {
			continue
		}
		_, sw := taskSwitches(st)
		t[1] += sw[0]
	}
	return t, nil
}

// runFloorReceiver is the Go receiver BenchmarkIdleFloor starts: spec is
// "pollset:PORT" (the daemon's wait: a pollset.Set, a raw recvfrom, the
// deadline re-armed) or "net:PORT" (net.UDPConn and a runtime timer).
func runFloorReceiver(spec string) int {
	kind, p, _ := strings.Cut(spec, ":")
	port, err := strconv.Atoi(p)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor receiver %q: %v\n", spec, err)
		return 2
	}
	switch kind {
	case "pollset":
		err = floorPollset(port)
	case "net":
		err = floorNet(port)
	default:
		err = fmt.Errorf("unknown receiver")
	}
	fmt.Fprintf(os.Stderr, "floor receiver %q: %v\n", spec, err)
	return 1
}

func floorPollset(port int) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(s, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	set, err := pollset.New()
	if err != nil {
		return err
	}
	if err := set.Add(s); err != nil {
		return err
	}
	var buf [2048]byte
	for {
		r, err := set.Wait()
		if err != nil {
			return err
		}
		if len(r.FDs) > 0 {
			// Until EAGAIN, as the daemon reads its advert sockets and
			// the C receiver reads.
			for {
				_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(s), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), unix.MSG_DONTWAIT, 0, 0)
				if errno != 0 {
					break
				}
			}
			set.Arm(time.Now().Add(35 * time.Millisecond))
		}
	}
}

func floorNet(port int) error {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return err
	}
	t := time.AfterFunc(time.Hour, func() {})
	buf := make([]byte, 2048)
	for {
		if _, _, err := c.ReadFromUDP(buf); err != nil {
			return err
		}
		t.Reset(35 * time.Millisecond)
	}
}
