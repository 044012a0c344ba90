# certmail: build, test, run and measure. `make help` lists the targets.

GO       ?= go
BIN      ?= bin/certmail
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The same flags build the binary here and in the Dockerfile (checked by a test).
LDFLAGS  := -s -w -X github.com/certmail/certmail/internal/buildinfo.Version=$(VERSION)
GOLANGCI ?= github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
GREMLINS ?= github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0
# The packages that hold certmail's guarantees; `make mutants MUTANT_PKGS=tasks` picks fewer.
MUTANT_PKGS ?= tasks internal/enqueue internal/digicert internal/ratelimit internal/worker internal/schedule internal/scheduler
# The least share of a package's mutants its tests must kill.
MUTANT_MIN  ?= 85
# 0 tests every mutant. N tests a sample of N mutants per package, drawn by
# MUTANT_SEED (the same each time), and prints the share killed with its 95 %
# interval: `make mutants MUTANT_PKGS=internal/worker MUTANT_SAMPLE=40`.
MUTANT_SAMPLE ?= 0
MUTANT_SEED   ?= 1

.PHONY: help build test test-deps lint run bench screenshots mutants clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build a static bin/certmail with the version stamped in.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/certmail

test-deps: ## Install what the tests need (redis-server, ...) when missing and running as root.
	@.ci/test-deps

test: test-deps ## go vet and the whole test suite with the race detector.
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

lint: ## golangci-lint (errcheck, govet, staticcheck, revive, funlen at 80 lines, goimports).
	$(GO) run $(GOLANGCI) run ./...

run: build ## The one-process demo (certmail dev): see README.md.
	$(BIN) dev

bench: build test-deps ## certmail against hand-written baselines: throughput, CPU, Redis round trips, pickup, API, rate limit, memory (BENCH lines); see README "Performance".
	$(GO) run ./cmd/certmail-bench -certmail $(BIN)

screenshots: test-deps ## Take the README's dashboard screenshots again (internal/dev/screenshots/*.png).
	$(GO) test -count=1 -run '^TestDashboardInBrowser$$' ./internal/dev -screenshots

mutants: test-deps ## Mutation testing (gremlins) of the guarantee packages: the share of mutants killed per package, exit 1 under MUTANT_MIN %. Slow: not part of make test.
	$(GO) run ./cmd/certmail-mutants -gremlins $(GREMLINS) -min $(MUTANT_MIN) -sample $(MUTANT_SAMPLE) -seed $(MUTANT_SEED) $(MUTANT_PKGS)

clean: ## Remove build output.
	rm -rf bin
