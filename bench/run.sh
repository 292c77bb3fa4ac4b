#!/usr/bin/env bash
# pg_cep benchmarks: each case runs next to its baselines in the same run; ratios are printed.
#   bench/run.sh PORT        (make bench starts the cluster and calls this)
# Environment: BENCH_SECONDS (default 20), BENCH_CLIENTS (default 2).
set -euo pipefail
cd "$(dirname "$0")"
port=$1
secs=${BENCH_SECONDS:-20}
clients=${BENCH_CLIENTS:-2}
BIN=/usr/lib/postgresql/15/bin
PSQL="$BIN/psql -X -q -h 127.0.0.1 -p $port -U postgres"
db=pg_cep_bench
$PSQL -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 || $PSQL -d postgres -c "CREATE DATABASE $db"

tps() { # script -> transactions per second
    $BIN/pgbench -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c "$clients" -j "$clients" -T "$secs" -f "$1" "$db" 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "== evaluate_risk_rules: 1M rows over 2 hours, 10k keys, seed 003's four rules =="
echo "loading data (about a minute)..."
$PSQL -d $db -v ON_ERROR_STOP=1 -f setup_evaluate.sql >/dev/null
# Both functions must agree on what they can both see (the seed's night rule reads the hour of a
# timestamp and its count looks back from now(), so compare rules 1, 2 and 4 at now()).
diff=$($PSQL -d $db -tAc "
  SELECT count(*) FROM generate_series(0, 999, 7) k,
  LATERAL (SELECT rule_id, triggered FROM cep.evaluate_risk_rules(k, 500, 'Shanghai', now()) WHERE rule_id <> 3
           EXCEPT
           SELECT rule_id, triggered FROM evaluate_risk_rules_plpgsql(k, 500, 'Shanghai', now()::timestamp) WHERE rule_id <> 3) d")
echo "keys where pg_cep and the seed's function disagree: $diff"
t_select1=$(tps select1.pgbench)
t_plpgsql=$(tps evaluate_plpgsql.pgbench)
t_cep=$(tps evaluate_cep.pgbench)
printf '%-44s %12s calls/s\n' "SELECT 1 (ceiling)" "$t_select1" \
    "seed's PL/pgSQL evaluate_risk_rules" "$t_plpgsql" "cep.evaluate_risk_rules" "$t_cep"
echo "ratio pg_cep / PL/pgSQL: $(ratio "$t_cep" "$t_plpgsql")x   pg_cep / SELECT 1: $(ratio "$t_cep" "$t_select1")x"
