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
LDFLAGS    := -X main.version=$(VERSION) -X main.daemonDir=$(DAEMONDIR)
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
DEB_PACKAGES := e2fsprogs acl attr libseccomp-dev pkg-config gcc util-linux fuse3 systemd

.PHONY: install uninstall race all build check test vet fmt-check fuzz fuzz-brief hostile bench bench-go deps demo clean help

all: build

build: $(addprefix $(BIN)/,$(CMDS))

$(BIN)/%: FORCE
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

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

clean:
	rm -rf $(BIN)

help:
	@grep -E '^## ' Makefile | sed 's/^## /  make /'
