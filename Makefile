# steward — build, test and demo entry points.
#
#   make demo   run a live local cluster (etcd + 3 PostgreSQL members + agents)
#   make test   install what is missing (Debian packages), then run every test
#
# Everything runs on a fresh Debian 12 machine with Go; `make deps` installs the
# Debian packages the tests and the demo need, quietly when they are present.

SHELL      := /bin/bash
GO         ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS    := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN        := bin/steward
OUT        := .test-output
# Debian packages the tests need (postgresql-15 provides /usr/lib/postgresql/15/bin;
# haproxy and mariadb-server are started by the API and MySQL tests).
DEB_PKGS   := postgresql-15 etcd-server etcd-client haproxy mariadb-server mariadb-client
FUZZTIME   ?= 60s
STATICCHECK_VERSION ?= 2025.1.1

export PATH := $(dir $(GO)):$(PATH)

.PHONY: all build test deps lint fuzz demo clean

all: build

build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/steward

## deps: install missing Debian packages (idempotent, quiet when present).
deps:
	@scripts/deps.sh $(DEB_PKGS)

## test: everything, as CI runs it. Full output goes to .test-output/test.log;
## the console shows package results, failures and MEASURED figures.
test: deps
	@mkdir -p $(OUT)
	@echo "== go vet"; $(GO) vet ./...
	@echo "== go test (log: $(OUT)/test.log)"
	@set -o pipefail; $(GO) test -race -count=1 -timeout 30m -v ./... 2>&1 \
		| tee $(OUT)/test.log \
		| grep --line-buffered -E '^(ok|FAIL|panic:|--- FAIL|=== NAME)|MEASURED|^\s+--- FAIL|\.go:[0-9]+: ' \
		| grep --line-buffered -vE '^\s+--- (PASS|SKIP)' ; \
	status=$${PIPESTATUS[0]}; \
	if [ $$status -ne 0 ]; then echo "FAILED: see $(OUT)/test.log"; exit $$status; fi; \
	echo "== all tests passed"

## lint: formatting, vet and staticcheck.
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

## demo: a live local cluster (in-process etcd, 3 PostgreSQL members and
## their agents). Ctrl-C stops it and removes everything. DEMO_ARGS passes
## flags, e.g. make demo DEMO_ARGS="--kill-primary-after 20s".
demo: deps build
	@./$(BIN) demo $(DEMO_ARGS)

## fuzz: run every fuzz target for FUZZTIME each (default 60s).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config/

clean:
	rm -rf bin $(OUT)
