# xdpcluster. `make demo` runs the main job, `make test` runs every test.
GO      ?= go
export PATH := $(PATH):/usr/local/go/bin
PKGS    := ./...
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build test deps no-binaries generate generate-check unit race vet fmt-check bench bench-e2e bench-e2e-smoke bench-tcp bench-tcp-smoke bench-smoke fuzz demo clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/xdpcluster ./cmd/xdpcluster

# Everything CI runs: test tools, format, generated-file and vet checks,
# every test (the root-only netns/kernel tests included when run as root;
# they skip with a message otherwise) and every benchmark once so none rots.
test: deps fmt-check no-binaries generate-check vet unit race bench-smoke bench-e2e-smoke bench-tcp-smoke

deps:
	@scripts/install-test-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Build outputs never land: fail if any tracked file is an executable
# (ELF) or larger than 2 MB.
no-binaries:
	@scripts/check-no-binaries.sh

# The generated files: String methods (stringer) and the XDP programs'
# objects and Go bindings (bpf2go compiles bpf/*.c with clang and strips
# them with llvm-strip), each tool at the version the //go:generate lines
# pin, fetched through the module proxy; go build never needs them.
# generate-check fails when the committed ones are stale.
GENERATED := '*_string.go' '*_bpfel.go' '*_bpfel.o' '*_bpfel_test.go' '*_bpfel_test.o'
generate:
	$(GO) generate ./...

generate-check: generate
	@git diff --exit-code --stat -- $(GENERATED) || { echo "generated files changed: run make generate and commit them"; exit 1; }
	@new=$$(git ls-files --others --exclude-standard -- $(GENERATED)); \
	if [ -n "$$new" ]; then echo "generated files not committed:"; echo "$$new"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -count=1 -timeout 20m $(PKGS)

# The packages whose state is shared between workers, under the race detector.
race:
	$(GO) test -count=1 -race ./conntrack ./packet ./cluster ./dataplane

bench-smoke:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime=1x $(PKGS)

# The micro-benchmarks (no root needed), with allocation counts, and one
# summary table at the end. bench-e2e is the end-to-end harness (root).
BENCH_PKGS := ./jhash ./cluster ./packet ./conntrack ./dataplane ./simulate ./cmd/xdpcluster
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(BENCH_PKGS) | tee bench.out
	@echo
	@$(GO) run ./bench/summary < bench.out

# Short fuzzing of every fuzz target (new corpus entries land in the Go
# cache; copy interesting ones into the package's testdata/fuzz).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseIptables -fuzztime $(FUZZTIME) ./cluster
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./packet
	$(GO) test -run '^$$' -fuzz FuzzTrack -fuzztime $(FUZZTIME) ./conntrack
	$(GO) test -run '^$$' -fuzz FuzzHandle -fuzztime $(FUZZTIME) ./arp
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./config

# The end-to-end throughput harness, side by side with the kernel (root):
# the two-core family, then the one-core family (docs/performance.md).
bench-e2e:
	$(GO) run ./bench/e2e

# One short pass of the harness in CI (both families, a 3 s idle row), so
# it never rots; it fails if xdpcluster and the kernel's cluster rules
# forward different sources, on two cores or on one.
bench-e2e-smoke:
	@if [ "$$(id -u)" = 0 ]; then $(GO) run ./bench/e2e --runs 1 --duration 1s --idle 3s; else echo "bench-e2e-smoke: skipped (needs root)"; fi

# Real traffic (root): iperf3 TCP through a 3-node cluster in namespaces,
# the kernel's man-page recipe against xdpcluster with the fast path on
# and off (docs/performance.md); it installs iperf3 with apt-get if
# missing. bench-tcp-smoke (CI, about 15 s) is one 2 s run of each; it
# fails if a packet was dropped for want of a resolved neighbour or the
# fast path carried nothing, never on rates (a shared machine's load).
bench-tcp:
	$(GO) run ./bench/tcp

bench-tcp-smoke:
	@if [ "$$(id -u)" = 0 ]; then $(GO) run ./bench/tcp --smoke; else echo "bench-tcp-smoke: skipped (needs root)"; fi

# Install, PREFIX=/usr/local by default, DESTDIR for staging (`sudo make
# install`, or `make install PREFIX=/usr DESTDIR=/tmp/root`): the binary,
# the systemd unit with its paths rewritten for BINDIR, the example
# configuration (packaging/config.yaml, which `xdpcluster check` accepts)
# as SYSCONFDIR/xdpcluster/config.yaml only when none is there (an existing
# one is never overwritten), README, LICENSE, docs and examples (the
# keepalived files too) in DOCDIR, the Grafana dashboard and Prometheus
# files in DATADIR, and the man pages and shell completions when built
# (`make man completion`). The unit goes to PREFIX/lib/systemd/system,
# which systemd reads for /usr/local too: then `systemctl daemon-reload`.
# `make uninstall` (same variables) removes all of it but the
# configuration. INSTALL_BIN, MAN_SRC and COMPL_SRC name what is installed
# (make package passes its static build); with the default INSTALL_BIN,
# install builds bin/xdpcluster first.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
DOCDIR      ?= $(PREFIX)/share/doc/xdpcluster
DATADIR     ?= $(PREFIX)/share/xdpcluster
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
INSTALL_BIN ?= bin/xdpcluster
MAN_SRC     ?= build/man
COMPL_SRC   ?= build/completion
DOC_FILES   := README.md LICENSE
# docs/ keeps its name, so the README's links to docs/... hold.
DOCS        := $(wildcard docs/*.md)
EXAMPLES    := $(wildcard deploy/examples/*.yaml) packaging/config.yaml
KEEPALIVED  := $(wildcard deploy/keepalived/*)
# deploy/grafana/... and deploy/prometheus/... keep their layout under DATADIR.
DATA_FILES  := $(shell find deploy/grafana deploy/prometheus -type f 2>/dev/null | LC_ALL=C sort)

.PHONY: install uninstall package

install: $(if $(filter bin/xdpcluster,$(INSTALL_BIN)),build)
	install -D -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/xdpcluster
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/xdpcluster|$(BINDIR)/xdpcluster|g' \
	    -e 's|/etc/xdpcluster/|$(SYSCONFDIR)/xdpcluster/|g' \
	    -e 's|/usr/share/doc/xdpcluster|$(DOCDIR)|g' \
	    deploy/systemd/xdpcluster.service > $(DESTDIR)$(UNITDIR)/xdpcluster.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/xdpcluster.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/xdpcluster/config.yaml ]; then \
	  echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/xdpcluster/config.yaml (the example is $(DOCDIR)/examples/config.yaml)"; \
	else \
	  echo "install -D -m 0644 packaging/config.yaml $(DESTDIR)$(SYSCONFDIR)/xdpcluster/config.yaml"; \
	  install -D -m 0644 packaging/config.yaml $(DESTDIR)$(SYSCONFDIR)/xdpcluster/config.yaml; \
	fi
	install -d $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)/examples/keepalived
	install -m 0644 $(DOC_FILES) $(DESTDIR)$(DOCDIR)/
	$(if $(DOCS),install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/docs/)
	install -m 0644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/
	@for f in $(KEEPALIVED); do \
	  if [ -x $$f ]; then m=0755; else m=0644; fi; \
	  echo "install -m $$m $$f $(DESTDIR)$(DOCDIR)/examples/keepalived/"; \
	  install -m $$m $$f $(DESTDIR)$(DOCDIR)/examples/keepalived/ || exit 1; \
	done
	@for f in $(DATA_FILES); do \
	  echo "install -D -m 0644 $$f $(DESTDIR)$(DATADIR)/$${f#deploy/}"; \
	  install -D -m 0644 $$f $(DESTDIR)$(DATADIR)/$${f#deploy/} || exit 1; \
	done
	@if ls $(MAN_SRC)/*.1 >/dev/null 2>&1; then \
	  install -d $(DESTDIR)$(MANDIR)/man1 && \
	  for f in $(MAN_SRC)/*.1; do \
	    echo "gzip -9n < $$f > $(DESTDIR)$(MANDIR)/man1/$${f##*/}.gz"; \
	    gzip -9n < $$f > $(DESTDIR)$(MANDIR)/man1/$${f##*/}.gz && chmod 0644 $(DESTDIR)$(MANDIR)/man1/$${f##*/}.gz || exit 1; \
	  done; \
	else echo "install: no man pages in $(MAN_SRC) (make man builds them): none installed"; fi
	@for c in xdpcluster.bash:$(BASHCOMPDIR)/xdpcluster _xdpcluster:$(ZSHCOMPDIR)/_xdpcluster xdpcluster.fish:$(FISHCOMPDIR)/xdpcluster.fish; do \
	  src=$(COMPL_SRC)/$${c%%:*}; dst=$(DESTDIR)$${c#*:}; \
	  if [ -f $$src ]; then echo "install -D -m 0644 $$src $$dst"; install -D -m 0644 $$src $$dst || exit 1; \
	  else echo "install: no $$src (make completion builds it): not installed"; fi; \
	done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/xdpcluster $(DESTDIR)$(UNITDIR)/xdpcluster.service
	rm -f $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOC_FILES))) $(addprefix $(DESTDIR)$(DOCDIR)/,$(DOCS))
	rm -f $(addprefix $(DESTDIR)$(DOCDIR)/examples/,$(notdir $(EXAMPLES)))
	rm -f $(addprefix $(DESTDIR)$(DOCDIR)/examples/keepalived/,$(notdir $(KEEPALIVED)))
	rm -f $(addprefix $(DESTDIR)$(DATADIR)/,$(patsubst deploy/%,%,$(DATA_FILES)))
	rm -f $(DESTDIR)$(MANDIR)/man1/xdpcluster.1.gz $(DESTDIR)$(MANDIR)/man1/xdpcluster-*.1.gz
	rm -f $(DESTDIR)$(BASHCOMPDIR)/xdpcluster $(DESTDIR)$(ZSHCOMPDIR)/_xdpcluster $(DESTDIR)$(FISHCOMPDIR)/xdpcluster.fish
	@for d in $(sort $(dir $(addprefix $(DESTDIR)$(DATADIR)/,$(patsubst deploy/%,%,$(DATA_FILES))))) \
	    $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)/examples/keepalived $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR); do \
	  [ ! -d $$d ] || find $$d -depth -type d -empty -delete; \
	done
	@echo "uninstall: kept $(DESTDIR)$(SYSCONFDIR)/xdpcluster/config.yaml (remove it by hand if no longer wanted)"

# The .deb (build/package/xdpcluster_VERSION_ARCH.deb; PKG_DIR to put it
# elsewhere), built with nfpm (fetched and built by `go run` the first
# time, about a minute; cached afterwards) from packaging/nfpm.yaml: a
# static binary (CGO_ENABLED=0) for `go env GOARCH`, its man pages and
# completions, staged by `make install` for /usr with the unit in
# /usr/lib/systemd/system, and /etc/xdpcluster/config.yaml as a conffile.
# The version: packaging/deb-version.sh. Tested by packaging/package_test.go
# (installs it into a throwaway root with dpkg --root).
PKG_DIR ?= build/package
NFPM    ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
PKG_GEN := $(PKG_DIR)/gen
PKG_ROOT = $(abspath $(PKG_DIR)/root)

package:
	rm -rf $(PKG_GEN) $(PKG_ROOT) $(PKG_DIR)/xdpcluster_*.deb
	mkdir -p $(PKG_GEN)/completion
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(PKG_GEN)/xdpcluster ./cmd/xdpcluster
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || date +%s) $(PKG_GEN)/xdpcluster gen-man $(PKG_GEN)/man
	$(PKG_GEN)/xdpcluster completion bash > $(PKG_GEN)/completion/xdpcluster.bash
	$(PKG_GEN)/xdpcluster completion zsh > $(PKG_GEN)/completion/_xdpcluster
	$(PKG_GEN)/xdpcluster completion fish > $(PKG_GEN)/completion/xdpcluster.fish
	$(MAKE) --no-print-directory install DESTDIR=$(PKG_ROOT) PREFIX=/usr SYSCONFDIR=/etc \
	  UNITDIR=/usr/lib/systemd/system ZSHCOMPDIR=/usr/share/zsh/vendor-completions \
	  FISHCOMPDIR=/usr/share/fish/vendor_completions.d \
	  INSTALL_BIN=$(PKG_GEN)/xdpcluster MAN_SRC=$(PKG_GEN)/man COMPL_SRC=$(PKG_GEN)/completion
	XDPC_VERSION=$$(packaging/deb-version.sh) XDPC_ARCH=$$($(GO) env GOARCH) XDPC_ROOT=$(PKG_ROOT) \
	  $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(PKG_DIR)/
	@ls -l $(PKG_DIR)/xdpcluster_*.deb

# The main job: a live cluster in network namespaces (until Ctrl-C, or
# DURATION=30s).
DURATION ?= 0
demo: build
	bin/xdpcluster demo --duration $(DURATION)

clean:
	rm -rf bin
