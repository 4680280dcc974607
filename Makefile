# Thin wrapper around Meson/Ninja. The two front doors are `make run` and
# `make test`; both install missing Debian packages first (scripts/deps.sh).
BUILD ?= build
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all deps build run test test-asan unit integration clean check-banned fuzz install interop bench

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: deps build
	./$(BUILD)/petrel serve -f

test: deps build
	@scripts/run-tests.sh $(BUILD)

# Every suite against a build with AddressSanitizer + UndefinedBehaviorSanitizer;
# any sanitizer report fails the run.
test-asan: deps
	@[ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined -Dbuildtype=debug
	ninja -C build-asan
	@SANITIZE=1 PETREL_BIN=$(CURDIR)/build-asan/petrel scripts/run-tests.sh build-asan

unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

integration: build
	/usr/bin/python3 -m pytest -q tests/integration

fuzz:
	scripts/fuzz.sh

check-banned:
	@scripts/check-banned.sh

# Petrel side by side with Postfix and Exim (private loopback instances):
# inbound (smtp-source, 1/20/100 sessions, fsync before 250) and outbound
# delivery of 1 KB and 100 KB messages through the delay proxy; writes
# docs/bench/results.md (ratios, targets), results.json and two plots.
# About 6-8 minutes.
bench: build
	scripts/interop-deps.sh
	/usr/bin/python3 bench/compare.py

# Interoperability matrix with real MTAs (private loopback instances);
# writes docs/interop.md. `make test` runs the same matrix as its interop
# stage (scripts/run-tests.sh, table to a temporary file; INTEROP=0 skips it).
interop: build
	scripts/interop-deps.sh
	/usr/bin/python3 tests/interop/run_interop.py --messages $${INTEROP_MESSAGES:-500}

# Binary, sendmail/mailq links, man pages, systemd unit, logrotate snippet,
# example configuration, the petrel user and /var/spool/petrel.
install: build
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) BUILD=$(BUILD) scripts/install.sh

clean:
	rm -rf $(BUILD) build-asan build-fuzz
