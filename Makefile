# memohfs: two commands for a new machine.
#   make run    install what is missing, build, serve /memoh
#   make test   install what is missing, vet, run every test against the real stack
# make help lists every target, from its `## target: text` line below.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
CONTAINERD_VERSION = $(shell $(GO) list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
export MEMOHFS_CONTAINERD_BIN ?= $(CURDIR)/.cache/containerd/$(CONTAINERD_VERSION)/bin
TEST_TIMEOUT ?= 15m

.PHONY: help deps build test vet run bench fuzz soak clean

## deps: Debian packages and the pinned containerd (idempotent; seconds when ready)
deps:
	@./scripts/deps.sh >/dev/null

STATE_DIR ?= /var/lib/memohfs
MOUNT ?= /memoh

## build: bin/memohfs, with the pinned containerd beside it (memohfs up runs it)
build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/memohfs ./cmd/memohfs
	@for b in containerd containerd-shim-runc-v2 ctr; do \
		cmp -s $(MEMOHFS_CONTAINERD_BIN)/$$b bin/$$b 2>/dev/null || cp $(MEMOHFS_CONTAINERD_BIN)/$$b bin/$$b; done

## vet: go vet, gofmt, and staticcheck (the version go.mod pins as a tool)
vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) tool staticcheck ./...

## test: deps, vet, build, then every test against the real stack (root; CI=true: a missing dependency fails)
# After the package tests: the data/ suites again on the other path (binds of the data dirs over
# data/), each fuzz target for FUZZTIME, then a check that nothing of the tests is left on the
# machine. Each step runs whatever the others' outcome; any of them failing fails make.
# FUZZTIME is a count of executions (about 10 s each here), not a duration: Go 1.26's fuzz
# coordinator can report its own -fuzztime deadline as a failure, "context deadline exceeded"
# with no failing input (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME ?= 30000x
DATA_SUITES = ./fsnodes ./internal/hardness ./cmd/memohfs
test: deps vet build
	@rc=0; \
	echo "$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./..."; \
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./... || rc=1; \
	echo "MEMOHFS_TEST_DATA_PATH=bind $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(DATA_SUITES)"; \
	MEMOHFS_TEST_DATA_PATH=bind $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(DATA_SUITES) || rc=1; \
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME) || rc=1; \
	./scripts/check-clean.sh || rc=1; \
	exit $$rc

## fuzz: the ctl parser and the name checks, FUZZTIME each (seed corpus in <pkg>/testdata/fuzz)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseCtl$$' -fuzztime $(FUZZTIME) ./control
	$(GO) test -run '^$$' -fuzz '^FuzzNames$$' -fuzztime $(FUZZTIME) ./runtime

## soak: the same suites with larger counts (1,000 kill points, 400 writers, ...), each fuzz target about 10 minutes
soak: deps vet build
	@rc=0; \
	echo "MEMOHFS_SOAK=1 $(GO) test -count=1 -timeout 8h ./..."; \
	MEMOHFS_SOAK=1 $(GO) test -count=1 -timeout 8h ./... || rc=1; \
	$(MAKE) --no-print-directory fuzz FUZZTIME=2000000x || rc=1; \
	./scripts/check-clean.sh || rc=1; \
	exit $$rc

## run: build and serve /memoh, state in /var/lib/memohfs (MOUNT=, STATE_DIR=; ^C stops it, bots keep running)
run: deps build
	@echo "memohfs: mounting $(MOUNT), state in $(STATE_DIR), logs below. In another shell:"
	@echo "  mkdir $(MOUNT)/demo && echo start > $(MOUNT)/demo/ctl && cat $(MOUNT)/demo/status"
	./bin/memohfs up --mount $(MOUNT) --state-dir $(STATE_DIR)

## bench: data/ vs native ext4 and go-fuse's loopback, cmd/, the control plane, 9P vs FUSE (BENCH_ARGS=--quick: a smoke run; "--only 9p": the 9P rows)
BENCH_ARGS ?=
bench: deps build
	$(GO) run ./internal/bench run $(BENCH_ARGS)

## clean: remove bin/ (the .cache of built containerd stays)
clean:
	rm -rf bin

## help: this list
help:
	@awk 'sub(/^## /, "") { if (match($$0, /^[a-z][a-z-]*: /)) \
		printf "  %-6s %s\n", substr($$0, 1, RLENGTH - 2), substr($$0, RLENGTH + 1); \
		else printf "  %-6s %s\n", "", $$0 }' $(MAKEFILE_LIST)
