# steward — build, test and demo entry points.
#
#   make demo   run a live local cluster (etcd + 3 PostgreSQL members + agents)
#   make test   install what is missing (Debian packages), then run every test
#   make chaos  the long fault-injection schedule (docs/reliability.md)
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
# haproxy and mariadb-server are started by the API and MySQL tests; tmux runs
# the CLI's terminal session in e2e/cli_test.go).
DEB_PKGS   := postgresql-15 etcd-server etcd-client haproxy mariadb-server mariadb-client tmux
FUZZTIME   ?= 60s
STATICCHECK_VERSION ?= v0.8.2

export PATH := $(dir $(GO)):$(PATH)

.PHONY: all build test deps lint fuzz demo bench bench-quick clean chaos

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
	if [ $$status -ne 0 ]; then awk -f scripts/test-failures.awk $(OUT)/test.log; echo "FAILED: see $(OUT)/test.log"; exit $$status; fi; \
	echo "== all tests passed"
	@echo "== bench-quick (log: $(OUT)/bench-quick.log)"; $(BENCH_QUICK)

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

## bench: every benchmark (long: failover 10x per profile, ...). Agents are
## built without the race detector. Not part of make test.
bench: deps
	@# BenchmarkAgentOverhead reads etcd's gRPC counters, which an embedded
	@# etcd registers once per process: it runs in a process of its own.
	@set -o pipefail; STEWARD_E2E_RACE=0 $(GO) test -count=1 -timeout 20m -run '^$$' -bench '^BenchmarkAgentOverhead$$' -benchtime 1x ./e2e/ 2>&1 \
		| grep -vE '^\s+(time=|harness.go)'
	@set -o pipefail; STEWARD_E2E_RACE=0 $(GO) test -count=1 -timeout 120m -run '^$$' \
		-bench '^Benchmark(HealthEndpoints|DCSScale|StressNoFalseFailover|SyncModes|MySQLSyncModes|Failover|Switchover)$$' -benchtime 1x ./e2e/ 2>&1 \
		| grep -vE '^\s+(time=|harness.go)'

## bench-quick: a couple of minutes, run by make test too: 3 failovers in
## the fast profile (ttl 3s) and 3 switchovers, through HAProxy.
BENCH_QUICK = set -o pipefail; STEWARD_E2E_RACE=0 STEWARD_BENCH_RUNS=3 $(GO) test -count=1 -timeout 30m -run '^$$' \
		-bench '^Benchmark(Failover|Switchover)$$/^ttl3s-loop500ms-sync-off$$' -benchtime 1x ./e2e/ 2>&1 \
		| tee $(OUT)/bench-quick.log | grep --line-buffered -E '^(ok|FAIL|---|Benchmark)|MEASURED|^  [ a-z]|\.go:[0-9]+: '
bench-quick: deps
	@mkdir -p $(OUT); $(BENCH_QUICK)

## chaos: the long fault-injection schedule of e2e/chaos (docs/reliability.md):
## COUNT faults drawn from SEED (default: random, printed), run in chunks of
## CHUNK faults, each chunk on a fresh cluster; a chunk's seed and step range
## replay it exactly (printed). SYNC=off|on|strict|quorum, FENCING=required|
## best-effort|off, KINDS=kill-agent,... (default all), BACKEND=postgres|mysql
## (MariaDB members, SYNC=off only). LOCK=FILE runs each
## chunk under flock FILE, released between chunks. The reports go to
## $(OUT)/chaos/ and the summary tables are printed at the end.
COUNT   ?= 200
CHUNK   ?= 25
SEED    ?=
SYNC    ?= off
FENCING ?= required
KINDS   ?= all
BACKEND ?= postgres
LOCK    ?=
CHAOS_PREFIX = $(if $(filter mysql,$(BACKEND)),mysql-,)
chaos: deps
	@mkdir -p $(OUT)/chaos
	@$(GO) test -c -o $(OUT)/chaos.test ./e2e/chaos/
	@set -o pipefail; seed="$(SEED)"; [ -n "$$seed" ] || seed=$$(( $$(date +%s%N) / 1000 % 1000000000 )); \
	echo "== chaos: $(BACKEND), seed $$seed, $(COUNT) faults in chunks of $(CHUNK), synchronous_mode $(SYNC), fencing $(FENCING), kinds $(KINDS)"; \
	rm -f $(OUT)/chaos/$(CHAOS_PREFIX)seed$$seed-*.json; rc=0; \
	for ((from=0; from<$(COUNT); from+=$(CHUNK))); do to=$$((from+$(CHUNK))); [ $$to -gt $(COUNT) ] && to=$(COUNT); \
		echo "== chaos: steps [$$from,$$to) (log: $(OUT)/chaos/$(CHAOS_PREFIX)seed$$seed.log)"; \
		(cd e2e/chaos && STEWARD_CHAOS_SEED=$$seed STEWARD_CHAOS_COUNT=$(COUNT) STEWARD_CHAOS_FROM=$$from STEWARD_CHAOS_TO=$$to \
			STEWARD_CHAOS_SYNC=$(SYNC) STEWARD_CHAOS_FENCING=$(FENCING) STEWARD_CHAOS_KINDS=$(KINDS) STEWARD_CHAOS_BACKEND=$(BACKEND) STEWARD_CHAOS_OUT=$(abspath $(OUT))/chaos \
			$(if $(LOCK),flock $(LOCK)) ../../$(OUT)/chaos.test -test.run '^TestChaos$$' -test.v -test.count=1 -test.timeout 90m) 2>&1 \
			| tee -a $(OUT)/chaos/$(CHAOS_PREFIX)seed$$seed.log | grep --line-buffered -E 'CHAOS (result|VIOLATION|done)|^(--- |FAIL|ok|PASS)|panic:' \
			|| rc=1; \
	done; \
	$(GO) run ./e2e/chaos/chaosreport $(OUT)/chaos/$(CHAOS_PREFIX)seed$$seed-*.json; \
	if [ $$rc -ne 0 ]; then echo "chaos: FAILED (seed $$seed): see $(OUT)/chaos/$(CHAOS_PREFIX)seed$$seed.log"; fi; exit $$rc

## fuzz: run every fuzz target for FUZZTIME each (default 60s).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config/
	for f in FuzzLagQuery FuzzTagQuery FuzzHealthQuery FuzzPatchConfig FuzzStateChangingBodies; do \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./api/ || exit 1; done

clean:
	rm -rf bin $(OUT)

# ---------------------------------------------------------------------------
# Install and Debian package (docs/operations.md "Installing").
#
#   make install                 binary, units, example config, completions,
#                                docs under PREFIX (default /usr), into DESTDIR
#   make deb                     $(DEB_DIR)/steward_<version>_<arch>.deb
#
# install never writes /etc/steward/steward.yml (only steward.yml.example),
# and the units' ExecStart follows PREFIX.

PREFIX      ?= /usr
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
DATADIR     ?= $(PREFIX)/share
SYSCONFDIR  ?= /etc
UNITDIR     ?= /lib/systemd/system
INSTALL_BIN ?= $(BIN)
DOCS        := README.md $(wildcard docs/*.md)

DEB_DIR        ?= bin
DEB_ARCH       ?= $(shell $(GO) env GOARCH)
DEB_VERSION    ?= $(shell packaging/debian-version.sh '$(VERSION)')
DEB_MAINTAINER ?= steward developers <steward@example.org>
DEB_ROOT       := $(DEB_DIR)/steward_$(DEB_VERSION)_$(DEB_ARCH)
DEB_FILE       := $(DEB_ROOT).deb

.PHONY: install install-files deb

# e2e/chaos builds its test hosts with ip netns, partitions them with nft and
# runs agents as the postgres user with setpriv (util-linux).
DEB_PKGS += iproute2 nftables procps util-linux

# e2e/getting_started_test.go runs docs/getting-started.md, which uses curl;
# systemd/units_test.go runs systemd-analyze (package systemd).
DEB_PKGS += curl systemd

install: build install-files
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@if [ ! -e "$(DESTDIR)$(SYSCONFDIR)/steward/steward.yml" ]; then \
		echo "next: write $(SYSCONFDIR)/steward/steward.yml (from steward.yml.example), then systemctl enable --now steward"; fi

## install-files: copy what is already built ($(INSTALL_BIN)); no build.
install-files:
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/steward \
		$(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/vendor-completions \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d $(DESTDIR)$(DATADIR)/doc/steward
	install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/steward
	for u in steward.service steward@.service; do \
		sed -e 's|/usr/bin/steward|$(BINDIR)/steward|g' -e 's|/usr/share/doc/steward|$(DATADIR)/doc/steward|g' systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -m 0644 packaging/steward.yml.example $(DESTDIR)$(SYSCONFDIR)/steward/steward.yml.example
	$(INSTALL_BIN) completion bash > $(DESTDIR)$(DATADIR)/bash-completion/completions/steward
	$(INSTALL_BIN) completion zsh > $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_steward
	$(INSTALL_BIN) completion fish > $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/steward.fish
	chmod 0644 $(DESTDIR)$(DATADIR)/bash-completion/completions/steward \
		$(DESTDIR)$(DATADIR)/zsh/vendor-completions/_steward $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/steward.fish
	install -m 0644 $(DOCS) $(DESTDIR)$(DATADIR)/doc/steward/

## deb: a Debian package built with dpkg-deb (static binary, no Depends).
deb:
	@command -v dpkg-deb >/dev/null || { echo "make deb needs dpkg-deb (apt-get install dpkg)"; exit 1; }
	rm -rf $(DEB_ROOT) $(DEB_FILE)
	mkdir -p $(DEB_ROOT)/DEBIAN
	CGO_ENABLED=0 GOARCH=$(DEB_ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DEB_ROOT).bin ./cmd/steward
	$(MAKE) --no-print-directory install-files DESTDIR=$(abspath $(DEB_ROOT)) PREFIX=/usr INSTALL_BIN=$(abspath $(DEB_ROOT)).bin
	rm -f $(DEB_ROOT).bin
	cd $(DEB_ROOT) && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort | xargs md5sum > DEBIAN/md5sums
	sed -e 's|@VERSION@|$(DEB_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' -e 's|@MAINTAINER@|$(DEB_MAINTAINER)|' \
		-e "s|@SIZE@|$$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)|" packaging/deb/control.in > $(DEB_ROOT)/DEBIAN/control
	install -m 0644 packaging/deb/conffiles $(DEB_ROOT)/DEBIAN/conffiles
	install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm $(DEB_ROOT)/DEBIAN/
	dpkg-deb --root-owner-group -Zxz --build $(DEB_ROOT) $(DEB_FILE) >/dev/null
	rm -rf $(DEB_ROOT)
	@echo "built $(DEB_FILE)"

## bench-api: health-endpoint capacity of a real member with wrk
## (-t2 -c32 -d10s on /primary and /replica; agents built without -race).
.PHONY: bench-api
bench-api: deps
	@command -v wrk >/dev/null || scripts/deps.sh wrk
	@set -o pipefail; STEWARD_E2E_RACE=0 $(GO) test -run '^$$' -bench '^BenchmarkHealthEndpoints$$' -benchtime 1x -timeout 20m ./e2e/ \
		| grep -E 'MEASURED|^(ok|FAIL|---)'
