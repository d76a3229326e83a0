# supernode — make help lists the targets.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: help build generate test race fuzz bench hostile gobench lint interop clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build bin/supernode and bin/turnload
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/supernode ./cmd/supernode
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/turnload ./cmd/turnload

generate: ## rebuild the eBPF objects from offload/bpf/relay.c (needs: apt-get install clang libbpf-dev)
	$(GO) generate ./offload

test: ## run the README's test command
	$(GO) test ./...

race: ## run the tests under the race detector
	$(GO) test -race ./...

fuzz: ## fuzz the client-message inspector for 60s (FUZZTIME=...)
	$(GO) test -run XXX -fuzz FuzzInspect -fuzztime $(or $(FUZZTIME),60s) ./relay

bench: ## supernode (kernel and user path) vs coturn under turnload, server in its own netns on CPU 1 when root -> BENCHMARKS.md (~20 min; BENCHFLAGS=-quick: ~3)
	GO=$(GO) ./bench/run $(BENCHFLAGS)

hostile: build ## 20 calls while 8 loopback sources flood the listener for 20s -> BENCHMARKS.md section (~1 min; HOSTILEFLAGS=...)
	$(GO) build -o bin/bench ./bench
	bin/bench -hostile $(HOSTILEFLAGS)

gobench: ## run the Go benchmarks (per-packet cost of the hot path)
	$(GO) test -run XXX -bench . -benchmem ./...

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

interop: ## interop suite against coturn's turnutils_uclient (needs: apt-get install coturn)
	SUPERNODE_REQUIRE_INTEROP=1 $(GO) test -count=1 -run Interop -v ./cmd/supernode

clean: ## remove build output
	rm -rf bin
