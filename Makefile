# weft's build and test entry points. `make test` is what CI runs.

GO      ?= go
BIN     := $(CURDIR)/.bin
CONSUL  := $(BIN)/consul
# Consul is built from the Go module proxy: some of its nested modules
# are not in the checksum database, so sums come from the module itself.
CONSUL_ENV := GOFLAGS=-mod=mod GOSUMDB=off

export WEFT_CONSUL := $(CONSUL)

.PHONY: test tools vet unit examples bench fuzz

## test: install what the tests need, then vet and race-test every module and run the examples.
test: tools vet examples unit

## tools: build the Consul agent the tests run against (once; reused after).
tools: $(CONSUL)

$(CONSUL): tools/consul/go.mod
	@mkdir -p $(BIN)
	cd tools/consul && $(CONSUL_ENV) $(GO) build -o $(CONSUL) github.com/hashicorp/consul
	@touch $(CONSUL)

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	cd benchmarks && $(GO) vet ./...
	cd examples/observability && $(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 20m ./...
	cd benchmarks && $(GO) test -race -count=1 -timeout 20m ./...
	cd examples/observability && $(GO) test -race -count=1 -timeout 5m ./...

## examples: build every example, then run each to completion with a time
## bound of its own run (the build is not counted).
EXAMPLES := quickstart grpc consul resilience
examples: tools
	$(GO) build -o $(BIN)/examples/ $(addprefix ./examples/,$(EXAMPLES))
	cd examples/observability && $(GO) build -o $(BIN)/examples/observability .
	timeout 90 $(BIN)/examples/quickstart
	timeout 90 $(BIN)/examples/grpc
	timeout 150 $(BIN)/examples/consul
	timeout 90 $(BIN)/examples/resilience
	timeout 90 $(BIN)/examples/observability

## bench: run the benchmarks and print medians and ratios to their baselines.
bench:
	cd benchmarks && ./run.sh
