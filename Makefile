# pg_cep: `make run` starts a demo cluster, `make test` runs every test suite, `make bench` measures.
# Each target installs what it lacks (apt packages, cargo-pgrx 0.18.1, `cargo pgrx init`).
SHELL        := /bin/bash
PG_MAJOR     := 15
PGBIN        := /usr/lib/postgresql/$(PG_MAJOR)/bin
PG_CONFIG    := $(PGBIN)/pg_config
PGRX_VERSION := 0.18.1
RUN_PORT     := 55432
TEST_PORT    := 55433
BENCH_PORT   := 55434
PGRX_PGDATA  := /tmp/pg_cep-pgrx-test
CLUSTER      := scripts/cluster.sh
export PATH  := $(HOME)/.cargo/bin:$(PATH)

.PHONY: deps install run stop psql test unit pgrx-test e2e fuzz bench clean

## Install what is missing: Debian packages, cargo-pgrx, pgrx's config for the system Postgres.
deps:
	@pkgs="postgresql-$(PG_MAJOR) postgresql-server-dev-$(PG_MAJOR) libclang-dev clang sudo"; \
	missing=$$(for p in $$pkgs; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@cargo pgrx --version 2>/dev/null | grep -q "$(PGRX_VERSION)" || \
	  cargo install cargo-pgrx --version $(PGRX_VERSION) --locked
	@grep -qs "pg$(PG_MAJOR)" $(HOME)/.pgrx/config.toml || \
	  cargo pgrx init --pg$(PG_MAJOR)=$(PG_CONFIG)

# A running server has pg_cep.so mapped: unlink it before installing, so the copy makes a new
# file instead of overwriting the mapped one (which crashes that server).
UNLINK_SO    := rm -f $$($(PG_CONFIG) --pkglibdir)/pg_cep.so

## Build (release) and install the extension into the system Postgres.
install: deps
	@$(UNLINK_SO)
	cargo pgrx install --release --pg-config $(PG_CONFIG)

## Start the demo cluster, create the demo database and show the monitor at work.
run: install
	@$(CLUSTER) start run $(RUN_PORT)
	@bash scripts/demo.sh $(RUN_PORT)

stop:
	@$(CLUSTER) stop run
	@$(CLUSTER) stop e2e
	@$(CLUSTER) stop bench

psql:
	@$(PGBIN)/psql -h 127.0.0.1 -p $(RUN_PORT) -U postgres pg_cep_demo

## Every test suite: plain unit tests, #[pg_test]s, and the end-to-end suite over the wire.
test: deps pgrx-test e2e

pgrx-test: deps
	@mkdir -p $(PGRX_PGDATA) && chown postgres $(PGRX_PGDATA)
	@$(UNLINK_SO)
	cargo pgrx test pg$(PG_MAJOR) --runas postgres --pgdata $(PGRX_PGDATA)/data

e2e: deps
	@$(UNLINK_SO)
	cargo pgrx install --pg-config $(PG_CONFIG)
	@# The install scripts of released versions, so that the upgrade test can start from them.
	install -m 644 sql/released/*.sql "$$($(PG_CONFIG) --sharedir)/extension/"
	@$(CLUSTER) stop e2e >/dev/null; rm -rf "$$($(CLUSTER) dir e2e)"
	@$(CLUSTER) start e2e $(TEST_PORT) "cep.window_cache_keys = 8" "cep.window_cache_events = 1500" \
	  "cep.maintenance_interval = 1" "cep.maintenance_database = 'e2e_worker'" "max_prepared_transactions = 10"
	@set -o pipefail; PG_CEP_TEST_PORT=$(TEST_PORT) PG_CEP_CLUSTER=e2e \
	  cargo test -p pg_cep_e2e -- --test-threads=1; rc=$$?; \
	  $(CLUSTER) stop e2e; exit $$rc

## The seeded property tests of the parsers and window arithmetic (src/engine/fuzz.rs) with many
## more cases than `make test` runs; FUZZ_CASES and FUZZ_SEED change them.
FUZZ_CASES   ?= 5000
FUZZ_SEED    ?= 20261205
fuzz: deps
	@mkdir -p $(PGRX_PGDATA) && chown postgres $(PGRX_PGDATA)
	@$(UNLINK_SO)
	PG_CEP_FUZZ_CASES=$(FUZZ_CASES) PG_CEP_FUZZ_SEED=$(FUZZ_SEED) \
	  cargo pgrx test pg$(PG_MAJOR) fuzz_ --runas postgres --pgdata $(PGRX_PGDATA)/data

## Benchmarks: pg_cep next to the bare and PL/pgSQL baselines, on a cluster of their own.
bench: install
	@$(CLUSTER) stop bench >/dev/null; rm -rf "$$($(CLUSTER) dir bench)"
	@$(CLUSTER) start bench $(BENCH_PORT) "shared_buffers = 1GB" "max_wal_size = 8GB" "synchronous_commit = off" \
	  "cep.window_cache_keys = 200000" "cep.window_cache_events = 16000000" "cep.rollup_records = 1000000"
	@bash bench/run.sh $(BENCH_PORT); rc=$$?; $(CLUSTER) stop bench; exit $$rc

clean: stop
	rm -rf .pgcep target
