.PHONY: all build test demo fuzz bench clean

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

clean:
	rm -rf bin
