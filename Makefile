# stowage — see README.md. Every target runs as root on a machine with a
# Docker engine (.ci/run prepares one).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN     := build/stowage
ROOT    ?= /var/lib/stowage

# Unit, protocol and fuzz-seed tests: no engine needed.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v -e /e2e -e /internal/storm)

# Fuzz targets (package:Target); `make fuzz` runs each for FUZZTIME.
FUZZ_TARGETS = ./plugin:FuzzHandler ./plugin:FuzzPlainRequestsDecodeAsJSONDecoder ./driver:FuzzValidateName ./driver:FuzzValidateMountID \
               ./internal/backend:FuzzParseSize ./internal/backend:FuzzParseOptions \
               ./internal/backend/sshfs:FuzzParseRemote
FUZZTIME ?= 4s
# Soak: the crash storm for SOAK_TIME (see README "Reliability").
SOAK_TIME ?= 35m
SOAK_SEED ?= 20261121

.PHONY: all build run test unit e2e vet fmt clean bench bench-ui fuzz storm soak

# Managed plugin (see README "Install"). DOCKER_HOST picks the engine.
DOCKER      ?= docker
PLUGIN_NAME ?= stowage
PLUGIN_TAG  ?= latest
PLUGIN_DIR  ?= build/plugin
BASE_IMAGE  ?= debian:bookworm-slim
# e.g. --network none for an engine without networking
DOCKER_BUILD_FLAGS ?=

.PHONY: plugin enable push base-image

all: build

## build: the static binary build/stowage
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/stowage

## run: build, then serve the local Docker engine as driver "stowage"
run: build
	$(BIN) serve --root $(ROOT)

## test: every test — vet, unit (race), short fuzz runs, the crash storm, then end-to-end on a real engine
test: vet unit fuzz storm e2e

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

## fuzz: each fuzz target for FUZZTIME (CI: seconds). A long run of one target:
##   go test -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime 1h ./plugin
## A run that ends in the fuzz engine's own "context deadline exceeded" with no
## failing input (seen on a loaded machine) is run once more; a found crash fails at once.
fuzz:
	@mkdir -p build; set -e; for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
	  for try in 1 2; do \
	    if $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $${t%%:*} > build/fuzz.log 2>&1; then \
	      tail -2 build/fuzz.log; break; fi; \
	    cat build/fuzz.log; \
	    if [ $$try = 2 ] || grep -q 'Failing input written' build/fuzz.log || ! grep -q 'context deadline exceeded' build/fuzz.log; then exit 1; fi; \
	    echo "fuzz engine timed out without a failing input; running $${t#*:} once more"; \
	  done; \
	done

# The storm runs in a mount namespace of its own: a namespace another process
# creates meanwhile (a test engine, a systemd unit with PrivateTmp) copies the
# host's mounts, holding a storm volume's loop device busy there forever.
# stowage then rightly refuses to delete that image; the storm is about crashes.
STORM_NS = unshare --mount --propagation private

## storm: the crash storm, short (60 SIGKILLs of a real daemon, about 25 s)
storm: build
	STOWAGE_BIN=$(abspath $(BIN)) $(STORM_NS) $(GO) test -count=1 -timeout 10m ./internal/storm

## soak: the crash storm for SOAK_TIME at low priority; prints seed, kills, operations, invariants
soak: build
	STOWAGE_BIN=$(abspath $(BIN)) nice -n 10 $(STORM_NS) $(GO) test -count=1 -timeout 0 -v -run TestCrashStorm ./internal/storm \
	  -storm.kills 0 -storm.duration $(SOAK_TIME) -storm.workers 4 -storm.seed $(SOAK_SEED)

# Engines the engine-sensitive suites run on again after the full run on the
# system's engine: STOWAGE_ENGINE directories (see internal/e2e/engine).
# scripts/engines.sh (make engines) unpacks sid's Docker into the default one.
# E2E_ENGINES= runs on the system's engine only.
E2E_ENGINES     ?= build/cache/engines/debian-sid
E2E_ENGINE_PKGS ?= ./internal/e2e/engine ./e2e/core ./e2e/managed ./e2e/restarts

.PHONY: engines

## e2e: end-to-end tests; they start private Docker engines and fail (never skip) without one.
##   All suites on the system's engine, then E2E_ENGINE_PKGS on each of E2E_ENGINES.
# The default engine is unpacked (cached) first, so `make test` needs nothing
# the README does not show.
e2e: build $(if $(filter build/cache/engines/debian-sid,$(E2E_ENGINES)),engines)
	@for eng in $(E2E_ENGINES); do test -x $$eng/usr/sbin/dockerd || \
	  { echo "e2e: no engine in $$eng: run make engines (or make e2e E2E_ENGINES= for the system's engine only)"; exit 1; }; done
	STOWAGE_BIN=$(abspath $(BIN)) $(GO) test -count=1 -p 1 -timeout 40m ./internal/e2e/... ./e2e/...
	@set -e; for eng in $(E2E_ENGINES); do \
	  echo "e2e on $$eng: $$(grep '^Docker version' $$eng/VERSIONS 2>/dev/null || $$eng/usr/sbin/dockerd --version)"; \
	  STOWAGE_ENGINE=$$(realpath $$eng) STOWAGE_BIN=$(abspath $(BIN)) $(GO) test -count=1 -p 1 -timeout 30m $(E2E_ENGINE_PKGS); \
	done

## engines: unpack the newest Debian-packaged Docker engine into build/cache/engines/debian-sid (cached)
engines:
	@scripts/engines.sh >/dev/null

## bench: performance run against the floor, a peer (rclone) and Docker's local driver (not
## part of test; ~10 min, both cores). Writes BENCHMARKS.md, BENCHMARKS.png
## and build/bench/. STOWAGE_BENCH_QUICK=1 or STOWAGE_BENCH_NS=... for a try.
bench:
	CGO_ENABLED=0 $(GO) build -trimpath -tags stowagebench -ldflags '$(LDFLAGS)' -o build/bench/stowage ./cmd/stowage
	$(GO) build -trimpath -o build/bench/stowage-bench ./cmd/stowage-bench
	STOWAGE_BENCH_BIN=$(abspath build/bench/stowage) STOWAGE_BENCH_FLOOR=$(abspath build/bench/stowage-bench) \
	STOWAGE_BENCH_OUT=$(abspath build/bench) STOWAGE_BENCH_DOC=$(abspath BENCHMARKS.md) \
	$(GO) test -tags stowagebench -count=1 -run '^TestBench$$' -timeout 40m -v ./cmd/stowage-bench

## bench-ui: the web view's cost to the daemon: Get p50/p99 at UIBENCH_N volumes
## with no page open, with it open in chromium, and open while volumes are
## created; and the page's first paint (figures in BENCHMARKS.md, by hand)
UIBENCH_N ?= 100000
bench-ui: build
	STOWAGE_BIN=$(abspath $(BIN)) STOWAGE_UIBENCH_N=$(UIBENCH_N) $(GO) test -tags stowagebench -count=1 -timeout 30m -v -run '^TestBenchUI$$' ./e2e/ui

## base-image: make sure the engine has $(BASE_IMAGE) without pulling (debootstrap, cached in build/cache)
base-image:
	DOCKER=$(DOCKER) scripts/base-image.sh $(BASE_IMAGE)

## plugin: build/plugin/{config.json,rootfs} from the Dockerfile, then docker plugin create $(PLUGIN_NAME):$(PLUGIN_TAG)
plugin: build
	@$(DOCKER) image inspect $(BASE_IMAGE) >/dev/null 2>&1 || { echo "no $(BASE_IMAGE) in the engine: docker pull it, or run make base-image"; exit 1; }
	rm -rf $(PLUGIN_DIR)
	mkdir -p $(PLUGIN_DIR)/rootfs
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) --build-arg BASE=$(BASE_IMAGE) -t stowage-rootfs:$(PLUGIN_TAG) .
	id=$$($(DOCKER) create stowage-rootfs:$(PLUGIN_TAG)) && \
	  { $(DOCKER) export $$id | tar -x -C $(PLUGIN_DIR)/rootfs; rc=$$?; $(DOCKER) rm -v $$id >/dev/null; exit $$rc; }
	cp config.json $(PLUGIN_DIR)/config.json
	$(DOCKER) plugin create $(PLUGIN_NAME):$(PLUGIN_TAG) $(PLUGIN_DIR)

## enable: create the plugin's mount sources (data.source, ssh.source) if missing (engine on this host), then docker plugin enable
## Docker does not create a plugin's mount sources; runc's "no such file or directory" is all it says.
MOUNT_SOURCES_FMT = {{range .Settings.Mounts}}{{.Name}}={{.Source}} {{end}}
enable:
	@srcs=$$($(DOCKER) plugin inspect -f '$(MOUNT_SOURCES_FMT)' $(PLUGIN_NAME):$(PLUGIN_TAG)) || exit 1; \
	case "$${DOCKER_HOST:-unix://}" in \
	  unix://*) for m in $$srcs; do src=$${m#*=}; \
	    if [ -n "$$src" ] && [ ! -d "$$src" ]; then echo "mkdir -p -m 0700 $$src"; mkdir -p -m 0700 "$$src" || true; fi; done;; \
	esac; \
	echo "$(DOCKER) plugin enable $(PLUGIN_NAME):$(PLUGIN_TAG)"; \
	$(DOCKER) plugin enable $(PLUGIN_NAME):$(PLUGIN_TAG) || { \
	  echo "make enable: the plugin did not start. If the error says \"no such file or directory\" for one of its mount sources:" >&2; \
	  for m in $$srcs; do echo "  $${m%%=*}.source: create it on the engine's host (mkdir -p -m 0700 $${m#*=}), or: docker plugin set $(PLUGIN_NAME):$(PLUGIN_TAG) $${m%%=*}.source=/path/to/dir" >&2; done; \
	  echo "  then make enable again" >&2; \
	  exit 1; }

## push: docker plugin push $(PLUGIN_NAME):$(PLUGIN_TAG) (name it REGISTRY/stowage)
push:
	$(DOCKER) plugin push $(PLUGIN_NAME):$(PLUGIN_TAG)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf build
