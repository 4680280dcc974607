# Thin wrapper around Meson/Ninja. The two front doors are `make run` and
# `make test`; both install missing Debian packages first (scripts/deps.sh).
BUILD ?= build

.PHONY: all deps build run test unit integration clean check-banned fuzz

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

unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

integration: build
	/usr/bin/python3 -m pytest -q tests/integration

fuzz:
	scripts/fuzz.sh

check-banned:
	@scripts/check-banned.sh

clean:
	rm -rf $(BUILD)
