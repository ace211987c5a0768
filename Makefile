# sandboxd — build, run and test on Debian 12 as root.
#
#   make run    install what the daemon needs, build it, run it in the foreground on embedded defaults
#   make test   install what the tests need, build, run every test (host tests and QEMU guest tests)
#   make bench  run the benchmarks (not part of make test)

SHELL := /bin/bash
SWIFT ?= swift
PREFIX ?= /usr/local
CONFIGURATION ?= debug

# Debian packages the build and the daemon need.
APT_RUNTIME := pkg-config libpq-dev postgresql-15 libseccomp-dev libcap-dev
# Extra packages the tests and benchmarks need.
APT_TEST := $(APT_RUNTIME) postgresql-contrib iproute2 curl python3 bubblewrap
APT_TEST += qemu-system-x86 busybox-static cpio xz-utils

.PHONY: all build run test bench deps test-deps clean clean-guest

all: build

# Installs only what is missing, so a second run is quick and offline-safe.
deps:
	@./scripts/apt-ensure $(APT_RUNTIME)

test-deps:
	@./scripts/apt-ensure $(APT_TEST)

build: deps
	$(SWIFT) build -c $(CONFIGURATION)

run: build
	$$($(SWIFT) build -c $(CONFIGURATION) --show-bin-path)/sandboxd $(ARGS)

test: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

bench: test-deps
	./Benchmarks/run

clean:
	rm -rf .build

# The cached test-guest kernel and initramfs (rebuilt by the next make test, ~70 MB download).
clean-guest:
	rm -rf .build-guest
