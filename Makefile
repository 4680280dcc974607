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

# Outbound delivery, Petrel side by side with Postfix and Exim (private
# instances) through the delay proxy; writes docs/bench/results.md and a plot.
bench: build
	scripts/interop-deps.sh
	/usr/bin/python3 bench/compare.py

# Interoperability matrix with real MTAs (private loopback instances);
# writes docs/interop.md. Not part of `make test` yet (issue 7 is open).
interop: build
	scripts/interop-deps.sh
	/usr/bin/python3 tests/interop/run_interop.py --messages $${INTEROP_MESSAGES:-500}

# Binary, sendmail/mailq links, man pages, systemd unit, logrotate snippet,
# example configuration, the petrel user and /var/spool/petrel.
install: build
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) BUILD=$(BUILD) scripts/install.sh

clean:
	rm -rf $(BUILD) build-asan build-fuzz
