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

# The main job: a live cluster in network namespaces (until Ctrl-C, or
# DURATION=30s).
DURATION ?= 0
demo: build
	bin/xdpcluster demo --duration $(DURATION)

clean:
	rm -rf bin
