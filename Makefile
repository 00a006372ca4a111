# vxsafe/overlay — build, test and package the Docker network plugin.
GO       ?= go
PLUGIN   ?= vxsafe/overlay
TAG      ?= latest
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
TESTFLAGS ?=
FUZZTIME ?= 10s
REGISTRY ?=
DOCKER   ?= docker

.PHONY: all build rootfs plugin upgrade push test e2e unit fuzz bench demo vet fmt clean

all: build

## build: the vxsafe binary for this host (bin/vxsafe), e.g. for `vxsafe doctor`
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/vxsafe ./plugin

## rootfs: a static binary in rootfs/, making the repository root a plugin bundle (config.json + rootfs/)
rootfs:
	rm -rf rootfs
	mkdir -p rootfs/run/docker/plugins rootfs/proc rootfs/sys rootfs/dev rootfs/tmp rootfs/etc
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o rootfs/vxsafe ./plugin
	touch rootfs/etc/hosts rootfs/etc/resolv.conf rootfs/etc/hostname

## plugin: create and enable $(PLUGIN):$(TAG) in the engine DOCKER_HOST points at, replacing an older one
plugin: rootfs
	-$(DOCKER) plugin disable -f $(PLUGIN):$(TAG) 2>/dev/null
	-$(DOCKER) plugin rm -f $(PLUGIN):$(TAG) 2>/dev/null
	$(DOCKER) plugin create $(PLUGIN):$(TAG) .
	$(DOCKER) plugin enable $(PLUGIN):$(TAG)

## upgrade: replace the installed $(PLUGIN):$(TAG) by this build, keeping its settings, mounts and networks
##          (scripts/upgrade-plugin). REGISTRY=host:port pushes the build there and runs `docker plugin
##          upgrade`; without it the plugin is re-created from the bundle and its settings set again.
upgrade: rootfs
	PLUGIN=$(PLUGIN):$(TAG) BUNDLE=$(CURDIR) REGISTRY=$(REGISTRY) VERSION=$(VERSION) scripts/upgrade-plugin

## push: push $(PLUGIN):$(TAG) to its registry
push:
	$(DOCKER) plugin push $(PLUGIN):$(TAG)

## test: every test — unit, kernel (root, fresh namespaces) and end to end (dockerd swarms it starts itself)
##       on each engine of ENGINES (scripts/install-deps pins them: Debian's 20.10 and the current one).
##       As root it first installs what is missing (apt packages; the current engine, built once into
##       /var/cache/vxsafe-engines). Where the end-to-end tests cannot run, the last line says so.
ENGINES ?= $(shell scripts/install-deps engines)
E2E_TIMEOUT ?= 40m
test: vet rootfs
	@if [ "$$(id -u)" = 0 ]; then scripts/install-deps packages; fi
	$(GO) test -count=1 -timeout 30m $(TESTFLAGS) $$($(GO) list ./... | grep -v '/e2e')
	@if ! scripts/install-deps check; then \
		$(MAKE) --no-print-directory fuzz && \
		echo "!! make test: the END-TO-END TESTS DID NOT RUN (no swarm, no Docker engine was tested): see the line above; run make test as root" >&2; \
		exit 0; \
	fi; \
	for e in $(ENGINES); do \
		dir=$$(scripts/install-deps engine $$e) || exit 1; \
		echo "== end-to-end tests on engine $$e$${dir:+ ($$dir)}"; \
		VXE2E_ENGINE=$$e VXE2E_ENGINE_DIR=$$dir $(GO) test -count=1 -timeout $(E2E_TIMEOUT) $(TESTFLAGS) ./e2e/... || exit 1; \
	done
	$(MAKE) --no-print-directory fuzz

## e2e: the end-to-end tests alone, on one engine (ENGINE=debian|current; default debian)
ENGINE ?= debian
e2e: rootfs
	@dir=$$(scripts/install-deps engine $(ENGINE)) || exit 1; \
	VXE2E_ENGINE=$(ENGINE) VXE2E_ENGINE_DIR=$$dir $(GO) test -count=1 -timeout $(E2E_TIMEOUT) $(TESTFLAGS) ./e2e/...

## unit: the tests that need neither root nor Docker
unit:
	$(GO) test -count=1 ./netconfig/ ./store/ ./vni/ ./gossip/ ./metrics/ ./engine/ ./control/ ./internal/plot/ ./plugin/ ./vip/
	$(GO) test -count=1 -run '^TestUnit' ./driver/

## fuzz: each fuzz target for FUZZTIME
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseCreateOptions$$' -fuzztime $(FUZZTIME) ./netconfig/
	$(GO) test -run '^$$' -fuzz '^FuzzParseAllocateOptions$$' -fuzztime $(FUZZTIME) ./netconfig/
	$(GO) test -run '^$$' -fuzz '^FuzzParseVNI$$' -fuzztime $(FUZZTIME) ./netconfig/
	$(GO) test -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) ./driver/

## bench: benchmarks against the real kernel and a real swarm, printing figures and ratios (docs/performance.md);
##        redraws docs/join-latency.png from the Join benchmark and docs/gossip-convergence.png from the
##        gossip scale simulation: 10 to 100 nodes in one process with 10,000 endpoints and the agent's probe timing,
##        then 10 to 250 nodes with 1,000 endpoints and memberlist's probes at 2s/1.5s (two cores give each of 250
##        simulated nodes a few ms of CPU a second; see docs/performance.md). VXSAFE_BENCH_SCALE=10,25 for a short run.
##        The handler benchmarks run with VXSAFE_BENCH_LOAD cores kept busy (default 1: the tails come from
##        load). The swarm benchmarks run on each engine of ENGINES. VXSAFE_BENCH_STRICT=1 fails on a missed target.
VXSAFE_BENCH_LOAD ?= 1
bench: rootfs
	VXSAFE_BENCH_LOAD=$(VXSAFE_BENCH_LOAD) VXSAFE_BENCH_PLOT=$(CURDIR)/docs/join-latency.png $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./dataplane/ ./driver/
	$(GO) test -run '^$$' -bench '^BenchmarkGossipScale$$' -benchtime 1x -timeout 120m ./gossip/
	VXSAFE_BENCH_SCALE=$${VXSAFE_BENCH_SCALE:-10,25,50,100,250} VXSAFE_BENCH_SCALE_ENDPOINTS=$${VXSAFE_BENCH_SCALE_ENDPOINTS:-1000} \
	VXSAFE_BENCH_SCALE_PROBE=$${VXSAFE_BENCH_SCALE_PROBE:-2s/1500ms} VXSAFE_BENCH_SCALE_PLOT=$(CURDIR)/docs/gossip-convergence.png \
		$(GO) test -run '^$$' -bench '^BenchmarkGossipScale$$' -benchtime 1x -timeout 120m ./gossip/
	for e in $(ENGINES); do \
		dir=$$(scripts/install-deps engine $$e) || exit 1; \
		echo "== swarm benchmarks on engine $$e$${dir:+ ($$dir)}"; \
		VXE2E_ENGINE=$$e VXE2E_ENGINE_DIR=$$dir VXSAFE_BENCH=1 $(GO) test -count=1 -run '^TestBenchmark(Swarm|VIP)$$' -v -timeout 60m ./e2e/ || exit 1; \
	done

## demo: Docker's overlay failing on a stale device and vxsafe/overlay carrying on, side by side (root;
## DEMO_INSTALL=1 installs docker.io and busybox-static first). The demo builds its own plugin bundle in a
## temporary directory; CGO_ENABLED=0 lets it share the compiled packages with that static build.
demo:
	CGO_ENABLED=0 $(GO) run ./e2e/demo

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf rootfs bin
