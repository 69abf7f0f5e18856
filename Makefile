# safefs build, test and packaging entry points. Run `make help` for a list.

GO        ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

# Installation layout. mount(8) looks for mount.safe in /sbin, which is
# /usr/sbin on merged-/usr systems such as Debian 12.
PREFIX     ?= /usr
SBINDIR    ?= $(PREFIX)/sbin
LIBEXECDIR ?= $(PREFIX)/libexec
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man
DAEMONDIR   = $(LIBEXECDIR)/safefs
# With -trimpath and -buildvcs=false (below) the binaries depend only on
# the sources, the toolchain and these flags: two builds of one tree are
# byte for byte the same wherever it lies (make reproducible-check). Go's
# build ID is a hash of those inputs; -B gobuildid derives the ELF build ID
# from it, so debuggers and dh_strip find one in both binaries (the
# internal linker, used for mount.safe, writes none by itself).
LDFLAGS    := -X main.version=$(VERSION) -X main.daemonDir=$(DAEMONDIR) -B gobuildid -bindnow
BIN       := bin
CMDS      := $(notdir $(wildcard cmd/*))
FUZZTIME  ?= 3s
# Fuzz targets, as package:Target pairs; `make check` runs each briefly.
FUZZ_TARGETS := \
	./internal/ext4:FuzzSuperblock \
	./internal/ext4:FuzzGroupDesc \
	./internal/ext4:FuzzInode \
	./internal/ext4:FuzzExtentTree \
	./internal/ext4:FuzzDirBlock \
	./internal/ext4:FuzzHtree \
	./internal/ext4:FuzzXattrBlock \
	./internal/ext4:FuzzImage \
	./internal/ext4:FuzzDirHash \
	./internal/fdpass:FuzzDecode \
	./cmd/safefsd:FuzzDaemonHandshake \
	./cmd/mount.safe:FuzzHelperHandshake \
	./internal/fusefs:FuzzRequest \
	./internal/iomap:FuzzMap \
	./internal/journal:FuzzRecover

# Debian packages the build and the tests need.
DEB_PACKAGES := e2fsprogs acl attr libseccomp-dev pkg-config gcc util-linux fuse3 systemd \
	debhelper dpkg-dev lintian

# Packaging: where `make deb` leaves the packages; the Go build cache the
# package build uses (the usual one, so a rebuild is quick; the binaries
# do not depend on it); how the package build is cut off the network
# (unshare -n where that is allowed, as root; GOPROXY=off and the module
# cache inside the build tree hold in any case); lintian, or : to skip it.
DISTDIR     ?= dist
DEB_GOCACHE ?= $(shell $(GO) env GOCACHE 2>/dev/null)
DEB_NONET   ?= $(shell unshare -n true 2>/dev/null && echo unshare -n)
LINTIAN     ?= lintian

.PHONY: install uninstall race all build check test vet fmt-check fuzz fuzz-brief hostile bench bench-go deps demo clean help \
	vendor deb deb-build reproducible-check

all: build

build: $(addprefix $(BIN)/,$(CMDS))

# Position-independent, with relocations read-only and bound at start
# (-bindnow): mount.safe runs as root on behalf of mount(8).
$(BIN)/%: FORCE
	@mkdir -p $(BIN)
	$(GO) build -trimpath -buildvcs=false -buildmode=pie -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

## check: the whole test suite (formatting, vet, unit and oracle tests, brief fuzzing)
check: fmt-check vet race fuzz-brief test

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags sandboxprobe ./cmd/safefsd

test:
	$(GO) test -count=1 -timeout 15m ./...

# The concurrency tests again under the race detector.
race:
	$(GO) test -race -count=1 -short -run 'Concurrent' ./internal/ext4
	$(GO) test -race -count=1 -short ./internal/fuseloop

# Each fuzz target for FUZZTIME (default 3s), one after another. With a
# short FUZZTIME the engine may stop while an execution is still running and
# report "context deadline exceeded" without any failing input: that is a
# timing artefact, not a finding; a real failure writes its input.
# Minimizing a new input is capped at 2s, or the engine may spend all of a
# short run shrinking one large input (the journal's are 16 KiB).
fuzz-brief:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($(FUZZTIME))"; \
		if ! $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg >/tmp/safefs-fuzz.log 2>&1; then \
			if grep -q 'context deadline exceeded' /tmp/safefs-fuzz.log && ! grep -q 'Failing input written' /tmp/safefs-fuzz.log; then \
				echo "  (the fuzzing engine ran out of time with an execution in flight; no failing input)"; \
			else cat /tmp/safefs-fuzz.log; exit 1; fi; \
		fi; \
	done

## fuzz: every fuzz target for FUZZTIME each (e.g. make fuzz FUZZTIME=10m)
fuzz: fuzz-brief

## hostile: the long run of test/hostile (as root, ~10 min): 8 corrupted variants of each matrix image, every entry of the large directories; tables of what was served and refused
hostile:
	SAFEFS_HOSTILE_LONG=1 $(GO) test -count=1 -v -timeout 2h ./test/hostile

## bench: safefs against the kernel's ext4 and fuse2fs on one image, one table (as root, ~8 min; BENCHFLAGS=-runs 5 ...; see bench/README.md)
bench: build
	$(GO) run ./bench -build=false $(BENCHFLAGS)

## bench-go: Go micro-benchmarks (lookup in a 100,000-entry directory, mapping a fragmented file, the /dev/fuse loop against go-fuse's, ...)
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## demo: build a sample ext4 image and mount it through safefs (as root; else list it)
demo: build
	tools/demo.sh

## deps: install what the build and the tests need on Debian 12 (as root)
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@$(GO) version >/dev/null 2>&1 || { echo "Go 1.24 or newer is needed (expected at /usr/local/go/bin/go)"; exit 1; }

## install: install mount.safe, safefsd, the systemd units and man pages (DESTDIR, PREFIX, SBINDIR, LIBEXECDIR, UNITDIR, MANDIR)
install: build
	install -D -m 0755 $(BIN)/mount.safe $(DESTDIR)$(SBINDIR)/mount.safe
	install -D -m 0755 $(BIN)/safefsd $(DESTDIR)$(DAEMONDIR)/safefsd
	install -D -m 0644 systemd/safefsd.socket $(DESTDIR)$(UNITDIR)/safefsd.socket
	mkdir -p $(DESTDIR)$(UNITDIR)
	sed 's|@LIBEXECDIR@|$(DAEMONDIR)|' systemd/safefsd@.service > $(DESTDIR)$(UNITDIR)/safefsd@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/safefsd@.service
	install -D -m 0644 man/mount.safe.8 $(DESTDIR)$(MANDIR)/man8/mount.safe.8
	install -D -m 0644 man/safefsd.8 $(DESTDIR)$(MANDIR)/man8/safefsd.8

## uninstall: remove what install put in place
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/mount.safe $(DESTDIR)$(DAEMONDIR)/safefsd \
		$(DESTDIR)$(UNITDIR)/safefsd.socket $(DESTDIR)$(UNITDIR)/safefsd@.service \
		$(DESTDIR)$(MANDIR)/man8/mount.safe.8 $(DESTDIR)$(MANDIR)/man8/safefsd.8
	-rmdir $(DESTDIR)$(DAEMONDIR)

## vendor: copy the Go modules into vendor/, so that dpkg-buildpackage can build without network access
vendor:
	$(GO) mod vendor

## deb: build the Debian package into dist/ (a copy of this tree, vendored, built with no network) and run lintian on it
deb: deb-build
	$(LINTIAN) --fail-on error $(DISTDIR)/safefs_*.changes

# The package is built in a copy of the tree (what git tracks and any new
# file it does not ignore) under $(DISTDIR)/build, so that this tree keeps
# no vendor/ or build leftovers. `go mod vendor` may use the network; the
# build that follows has none, nor a HOME to write to.
deb-build:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
		{ echo "make deb needs dpkg-buildpackage and debhelper (make deps installs them)"; exit 1; }
	rm -rf $(DISTDIR)/build
	mkdir -p $(DISTDIR)/build/safefs
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - ; \
	else \
		tar --exclude=./bin --exclude=./dist --exclude=./vendor --exclude=./.git -cf - . ; \
	fi | tar -xf - -C $(DISTDIR)/build/safefs
	cd $(DISTDIR)/build/safefs && $(GO) mod vendor
	cd $(DISTDIR)/build/safefs && \
		$(DEB_NONET) env HOME=/nonexistent GOCACHE=$(DEB_GOCACHE) GOPROXY=off GO=$(GO) dpkg-buildpackage -b -us -uc
	for f in $(DISTDIR)/build/*.deb $(DISTDIR)/build/*.buildinfo $(DISTDIR)/build/*.changes; do mv $$f $(DISTDIR)/; done
	rm -rf $(DISTDIR)/build
	@ls -l $(DISTDIR)/*.deb

## reproducible-check: build the package twice, in two directories with empty Go build caches, and compare them byte for byte
reproducible-check:
	rm -rf $(DISTDIR)/repro
	$(MAKE) deb-build DISTDIR=$(DISTDIR)/repro/one DEB_GOCACHE=$(abspath $(DISTDIR))/repro/cache-one
	$(MAKE) deb-build DISTDIR=$(DISTDIR)/repro/second/build DEB_GOCACHE=$(abspath $(DISTDIR))/repro/cache-second
	set -e; for deb in $(DISTDIR)/repro/one/*.deb; do \
		other=$(DISTDIR)/repro/second/build/$$(basename $$deb); \
		mkdir -p $$deb.x $$other.x; dpkg-deb -x $$deb $$deb.x; dpkg-deb -x $$other $$other.x; \
		diff -r --no-dereference $$deb.x $$other.x; cmp $$deb $$other; echo "identical: $$(basename $$deb)"; \
	done
	rm -rf $(DISTDIR)/repro

clean:
	rm -rf $(BIN) $(DISTDIR)

help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'
