# sandboxd — build, run and test on Debian 12 as root.
#
#   make run    install what the daemon needs, build it, run it in the foreground on embedded defaults
#   make test   install what the tests need, build, run every test (host tests and QEMU guest tests)
#   make bench  run the benchmarks (not part of make test)

SHELL := /bin/bash
SWIFT ?= swift
PREFIX ?= /usr/local
CONFIGURATION ?= debug

# Debian packages the build and the daemon need. Level 3 (QEMU guests): qemu-system-x86, busybox-static
# (the guest's initramfs), cpio and xz-utils (unpacking Debian's kernel package, fetched by apt-get download
# when the daemon or `sandboxctl image build` first builds the guest image), util-linux (unshare, setpriv: the jail).
APT_RUNTIME := pkg-config libpq-dev postgresql-15 libseccomp-dev libcap-dev qemu-system-x86 busybox-static cpio xz-utils util-linux
# Extra packages the tests and benchmarks need (gcc, libc6-dev: the hostile tests compile their attack programs;
# curl, runuser/useradd (util-linux, passwd) and systemd-analyze/systemd-socket-activate (systemd) drive the
# end-to-end tests of the control socket; python3-venv validates openapi.yaml).
APT_TEST := $(APT_RUNTIME) postgresql-contrib python3 bubblewrap gcc libc6-dev iproute2 curl util-linux passwd systemd python3-venv
# The QEMU test guest (Tests/guest/README.md) uses the level-3 packages of APT_RUNTIME; its kernel comes
# from Debian's linux-image-amd64 via apt-get download, unpacked with dpkg-deb and xz.

.PHONY: all build run test bench deps test-deps clean groups validate-openapi

all: build

# Installs only what is missing, so a second run is quick and offline-safe.
deps:
	@./scripts/apt-ensure $(APT_RUNTIME)

test-deps:
	@./scripts/apt-ensure $(APT_TEST)

build: deps
	$(SWIFT) build -c $(CONFIGURATION)

# The control socket is 0660 root:sandboxd; members of sandboxd-admin see every sandbox.
groups:
	@getent group sandboxd >/dev/null || groupadd --system sandboxd
	@getent group sandboxd-admin >/dev/null || groupadd --system sandboxd-admin

run: build groups
	./scripts/run-daemon $$($(SWIFT) build -c $(CONFIGURATION) --show-bin-path)/sandboxd $(ARGS)

test: test-deps groups validate-openapi
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# openapi.yaml is the contract of the control API: it must be a valid OpenAPI 3 document.
validate-openapi:
	./scripts/validate-openapi openapi.yaml

bench: test-deps
	./Benchmarks/run

clean:
	rm -rf .build

# The cached test-guest kernel and initramfs (rebuilt by the next make test, ~70 MB download).
.PHONY: clean-guest
clean-guest:
	rm -rf .build-guest
