# weft's build and test entry points. `make test` is what CI runs.

GO      ?= go
BIN     := $(CURDIR)/.bin
CONSUL  := $(BIN)/consul
# Consul is built from the Go module proxy: some of its nested modules
# are not in the checksum database, so sums come from the module itself.
CONSUL_ENV := GOFLAGS=-mod=mod GOSUMDB=off
# TESTFLAGS adds flags to every `go test` of `make unit` (-json, -run ...).
TESTFLAGS ?=
# N is how many times `make stress` runs the suite.
N ?= 5

export WEFT_CONSUL := $(CONSUL)

# SPIRE server and agent, built together from tools/spire's go.mod.
SPIRE := $(BIN)/spire-server $(BIN)/spire-agent
export WEFT_SPIRE_SERVER := $(BIN)/spire-server
export WEFT_SPIRE_AGENT := $(BIN)/spire-agent

# Jaeger all-in-one, which the telemetry tests export traces to.
JAEGER := $(BIN)/jaeger
export WEFT_JAEGER := $(JAEGER)

# Prometheus's promtool, which checks the exposition of examples/observability.
PROMTOOL := $(BIN)/promtool
export WEFT_PROMTOOL := $(PROMTOOL)

EXAMPLES := quickstart grpc consul resilience observability spire routing canary

.PHONY: test tools chromium vet unit examples build-examples bench stress

## test: install what the tests need, then vet and race-test every module and run the examples.
test: tools vet examples unit

## tools: build the Consul agent, the SPIRE server and agent, Jaeger and promtool the tests run
## against (once; reused after), and install Chromium for the admin page's browser test.
tools: $(CONSUL) $(SPIRE) $(JAEGER) $(PROMTOOL) chromium

## chromium: install Debian's chromium package when it is missing and we are root
## (as CI is); otherwise the browser test skips, unless WEFT_REQUIRE_CHROMIUM is set.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update && apt-get install -y --no-install-recommends chromium; \
	  else \
	    echo "chromium is missing and we are not root: the admin page's browser test will be skipped"; \
	  fi; }

$(JAEGER): tools/jaeger/go.mod
	@mkdir -p $(BIN)
	cd tools/jaeger && GOFLAGS=-mod=mod $(GO) build -o $(JAEGER) github.com/jaegertracing/jaeger/cmd/jaeger
	@touch $(JAEGER)

$(PROMTOOL): tools/promtool/go.mod
	@mkdir -p $(BIN)
	cd tools/promtool && GOFLAGS=-mod=mod $(GO) build -o $(PROMTOOL) github.com/prometheus/prometheus/cmd/promtool
	@touch $(PROMTOOL)

$(CONSUL): tools/consul/go.mod
	@mkdir -p $(BIN)
	cd tools/consul && $(CONSUL_ENV) $(GO) build -o $(CONSUL) github.com/hashicorp/consul
	@touch $(CONSUL)

$(SPIRE) &: tools/spire/go.mod
	@mkdir -p $(BIN)
	cd tools/spire && GOFLAGS=-mod=mod $(GO) build -o $(BIN)/ github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
	@touch $(SPIRE)

## vet: gofmt, go vet and staticcheck (pinned as a tool in go.mod) on every module.
vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	cd benchmarks && $(GO) vet ./... && "$$($(GO) -C .. tool -n staticcheck)" ./...
	cd examples/observability && $(GO) vet ./... && "$$($(GO) -C ../.. tool -n staticcheck)" ./...

unit:
	$(GO) test -race -count=1 -timeout 20m $(TESTFLAGS) ./...
	cd benchmarks && $(GO) test -race -count=1 -timeout 20m $(TESTFLAGS) ./...
	cd examples/observability && $(GO) test -race -count=1 -timeout 5m $(TESTFLAGS) ./...

## examples: build every example, then run each to completion with a time
## bound on its run alone (not on its build).
examples: $(addprefix example-,$(EXAMPLES))

build-examples: tools
	$(GO) build -o $(BIN)/examples/ $(addprefix ./examples/,$(filter-out observability,$(EXAMPLES)))
	cd examples/observability && $(GO) build -o $(BIN)/examples/observability .

example-%: build-examples
	timeout 150 $(BIN)/examples/$*

## stress: run the examples and every module's tests N times (default 5)
## with two busy CPU loops in the background; print which tests failed
## and how often. Not part of `make test`.
stress: tools
	./tools/stress.sh $(N)

## bench: run the benchmarks and print medians and ratios to their baselines.
bench:
	cd benchmarks && ./run.sh
