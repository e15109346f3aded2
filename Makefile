.PHONY: all build test demo fuzz bench bench-report clean deb install

all: build

build:
	go build -o bin/muros-had ./cmd/muros-had

# Every test, lab tests included (root). A skipped test fails the run.
test:
	bash scripts/test.sh

# Installs what is needed on a fresh Debian machine and runs the main job.
demo:
	bash scripts/install-deps.sh
	bash scripts/demo.sh

bench:
	go test -run '^$$' -bench . -benchmem -count 6 ./vrrp/... ./vip/... ./ctsync/ctwire/...
	go test -run '^$$' -bench . -benchmem -count 1 -timeout 60m ./bench/

# The side-by-side benchmarks (root; about 10 min; a quiet machine) and
# bench/REPORT.md with SVG charts in bench/img/ from their output, which is
# kept in bench/results/. FAILOVER_REPS, CT_REPS, IDLE_COUNT set the
# repetitions (5, 3, 3).
bench-report:
	bash scripts/bench-report.sh

# The Debian package, built with nfpm as a Go tool: muros-had_<version>_<arch>.deb.
deb:
	bash scripts/deb.sh

# A source install (as root): binary, unit, man page, and the example
# configuration unless one exists. Nothing is enabled or started: write
# /etc/muros-had/muros-had.yaml, then systemctl enable --now muros-had.
PREFIX ?= /usr
install: build
	install -D -m 0755 bin/muros-had $(DESTDIR)$(PREFIX)/sbin/muros-had
	install -d $(DESTDIR)/lib/systemd/system
	sed 's#/usr/sbin/muros-had#$(PREFIX)/sbin/muros-had#g' dist/muros-had.service >$(DESTDIR)/lib/systemd/system/muros-had.service
	install -D -m 0644 dist/debian/muros-had.8 $(DESTDIR)$(PREFIX)/share/man/man8/muros-had.8
	install -d -m 0700 $(DESTDIR)/etc/muros-had
	test -e $(DESTDIR)/etc/muros-had/muros-had.yaml || install -m 0600 dist/muros-had.yaml $(DESTDIR)/etc/muros-had/muros-had.yaml

clean:
	rm -rf bin muros-had_*.deb
