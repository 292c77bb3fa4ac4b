#!/usr/bin/env bash
# pg_cep benchmarks: each case runs next to its baselines in the same run; ratios are printed.
#   bench/run.sh PORT        (make bench starts the cluster and calls this)
# Environment: BENCH_SECONDS (default 20), BENCH_CLIENTS (default 2).
set -euo pipefail
cd "$(dirname "$0")"
port=$1
secs=${BENCH_SECONDS:-20}
clients=${BENCH_CLIENTS:-2}
BIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PSQL="$BIN/psql -X -q -h 127.0.0.1 -p $port -U postgres"
db=pg_cep_bench
$PSQL -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 || $PSQL -d postgres -c "CREATE DATABASE $db"

tps() { # script [clients] -> transactions per second
    local c=${2:-$clients}
    $BIN/pgbench -h 127.0.0.1 -p "$port" -U postgres -n -M prepared -c "$c" -j "$c" -T "$secs" -f "$1" "$db" 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# COMMIT-to-LISTEN latency: 500 sequential commits of a single-row INSERT (with $1) that notifies.
latency() { # channel insert [prepared]
    ( cd .. && cargo run -q --release -p pg_cep_e2e --bin notify_latency -- "$port" "$db" "$1" 500 "$2" ${3:-} )
}
mean2() { awk -v x="$1" -v y="$2" 'BEGIN { print (x + y) / 2 }'; }

# A case that follows another starts on a restarted server, after a checkpoint, with the earlier
# cases' tables gone: their autovacuum and checkpoint work would otherwise fall in its runs.
fresh_server() { # tables to drop first
    [ $# -gt 0 ] && $PSQL -d $db -c "SET client_min_messages = warning; DROP TABLE IF EXISTS $(IFS=,; echo "$*") CASCADE" >/dev/null
    bash ../scripts/cluster.sh restart "${PG_CEP_CLUSTER:-bench}" >/dev/null
    $PSQL -d $db -c "CHECKPOINT" >/dev/null
}

run_case() { # label kind [floor]: two rounds in opposite orders, so no case always runs first; the mean.
    # With "floor", the table whose statement trigger does nothing runs in the same rounds.
    local b1 p1 c1 b2 p2 c2 b p c f1=0 f2=0
    b1=$(tps "$work/$2_bare.pgbench"); p1=$(tps "$work/$2_plpgsql.pgbench"); c1=$(tps "$work/$2_cep.pgbench")
    [ "${3:-}" = floor ] && { f1=$(tps "$work/$2_floor.pgbench"); f2=$(tps "$work/$2_floor.pgbench"); }
    c2=$(tps "$work/$2_cep.pgbench"); p2=$(tps "$work/$2_plpgsql.pgbench"); b2=$(tps "$work/$2_bare.pgbench")
    b=$(mean2 "$b1" "$b2"); p=$(mean2 "$p1" "$p2"); c=$(mean2 "$c1" "$c2")
    printf '%-34s bare %9.0f   PL/pgSQL %9.0f   pg_cep %9.0f   pg_cep/bare %sx   pg_cep/PL/pgSQL %sx\n' \
        "$1" "$b" "$p" "$c" "$(ratio "$c" "$b")" "$(ratio "$c" "$p")"
    if [ "${3:-}" = floor ]; then
        local f; f=$(mean2 "$f1" "$f2")
        printf '   empty statement trigger (the floor of the monitor'"'"'s trigger): %.0f, floor/bare %sx, pg_cep/floor %sx\n' \
            "$f" "$(ratio "$f" "$b")" "$(ratio "$c" "$f")"
    fi
    eval "last_$2=$c"
}
only=${BENCH_ONLY:-all}   # all, or a comma-separated list of: evaluate, inserts, storm, engine, patterns, capture, stats, bridge
want() { [ "$only" = all ] || [[ ",$only," == *",$1,"* ]]; }
if want evaluate; then
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
# Two rounds in opposite orders, so no case always runs first; the mean of each.
a1=$(tps select1.pgbench); p1=$(tps evaluate_plpgsql.pgbench); c1=$(tps evaluate_cep.pgbench)
c2=$(tps evaluate_cep.pgbench); p2=$(tps evaluate_plpgsql.pgbench); a2=$(tps select1.pgbench)
t_select1=$(mean2 "$a1" "$a2"); t_plpgsql=$(mean2 "$p1" "$p2"); t_cep=$(mean2 "$c1" "$c2")
printf '%-44s %12.0f calls/s\n' "SELECT 1 (ceiling)" "$t_select1" \
    "seed's PL/pgSQL evaluate_risk_rules" "$t_plpgsql" "cep.evaluate_risk_rules" "$t_cep"
echo "ratio pg_cep / PL/pgSQL: $(ratio "$t_cep" "$t_plpgsql")x   pg_cep / SELECT 1: $(ratio "$t_cep" "$t_select1")x"
fi

# Insert path: the same rows into a bare table, a pg_cep-watched table and a table with a
# seed-style PL/pgSQL trigger, on sparse keys and on dense keys.
if want inserts || want storm; then
# The night rule would flag every row when the bench runs at night: run it at local noon.
h=$(date -u +%-H); off=$((12 - h))
if [ $off -gt 0 ]; then tz="Etc/GMT-$off"; else tz="Etc/GMT+$((-off))"; fi
$PSQL -d postgres -c "ALTER DATABASE $db SET TimeZone = '$tz'" >/dev/null
$PSQL -d $db -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS pg_cep" >/dev/null
work=$(mktemp -d)
scripts() { # keys -> pgbench scripts in $work
    for t in bare cep plpgsql floor; do
        cat > "$work/single_$t.pgbench" <<EOS
\\set k random(0, $1 - 1)
\\set r random(1, 1000)
\\set x random(1, 100000)
INSERT INTO tx_$t (user_id, amount, location, created_at) VALUES (:k, CASE WHEN :r <= 10 THEN 20000 ELSE :r END, CASE WHEN :x = 1 THEN 'X' ELSE 'L' || (:k % 50) END, now());
EOS
        cat > "$work/batch_$t.pgbench" <<EOS
INSERT INTO tx_$t (user_id, amount, location, created_at)
SELECT k, CASE WHEN random() < 0.01 THEN 20000 ELSE round((1 + random() * 999)::numeric, 2) END, 'L' || (k % 50), now()
FROM (SELECT (random() * ($1 - 1))::int AS k FROM generate_series(1, 1000)) s;
EOS
    done
}
load() { # rows keys span count_limit [rollups: false]
    # A fresh server for every case: the set-up drops and recreates the tables, and the shared
    # window cache would otherwise start full of the dropped tables' events.
    fresh_server
    echo "loading $1 rows over $3 for $2 keys into four tables..."
    sed "s/__COUNT_LIMIT__/$4/" setup_inserts.sql | $PSQL -d $db -v ON_ERROR_STOP=1 -v rows="$1" -v keys="$2" -v span="$3" -v count_limit="$4" -v rollups="${5:-false}" -f - >/dev/null
    scripts "$2"
    local t0=$(date +%s.%N)
    local keys=$($PSQL -d $db -tAc "SELECT cep.window_cache_warm('tx_cep')")
    echo "   cep.window_cache_warm('tx_cep'): $keys keys in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
}
alert_rate() { # of the pg_cep runs since the last load
    $PSQL -d $db -tAc "SELECT round(100.0 * alerts / greatest(rows_seen, 1), 2) || '% of ' || rows_seen || ' rows' FROM cep.stats() WHERE table_name = 'tx_cep'"
}
fi
if want inserts; then
echo
echo "== Insert path (tps, mean of two rounds; $clients clients, $secs s per run; session time zone $tz) =="
load 1000000 100000 "2 hours" 40
run_case "sparse: single-row INSERT" single
sparse_single=$last_single
echo "   pg_cep alert rate: $(alert_rate)"
# The single-row runs added millions of rows: keys would now pass the count rule on most rows.
# Start the batches from the same data set.
load 1000000 100000 "2 hours" 40
run_case "sparse: 1,000-row INSERT" batch
echo "   pg_cep alert rate: $(alert_rate)"
load 500000 1000 "1 hour" 5000
run_case "dense: single-row INSERT" single
echo "   pg_cep alert rate: $(alert_rate)"
echo "   pg_cep dense/sparse single-row: $(ratio "$last_single" "$sparse_single")x"
# Rollups on: the first case again, from the same data set, with the monitor keeping the table's
# rollups. A case of its own, with its own baselines. Alternating on and off on one table, as an
# earlier version did, measured the switches as much as the rollups: a profile of the runs right
# after a switch showed keys read from the table again.
load 1000000 100000 "2 hours" 40 true
run_case "sparse: single-row INSERT, rollups on" single
echo "   pg_cep alert rate: $(alert_rate)"
echo "   rollups on / off (this case's pg_cep against the first's): $(ratio "$last_single" "$sparse_single")x"
echo
echo "== COMMIT to LISTEN receipt (pg_cep, 500 sequential alerting commits) =="
latency bench_alerts "INSERT INTO tx_cep (user_id, amount, location, created_at) VALUES (\$1, 50000, 'L0', now())"
echo "== COMMIT PREPARED to LISTEN receipt (pg_cep, 500 sequential prepared alerting transactions) =="
latency bench_alerts "INSERT INTO tx_cep (user_id, amount, location, created_at) VALUES (\$1, 50000, 'L0', now())" prepared
rm -rf "$work"
fi

# Alert storm: seed 003's rules as written (more than 10 rows of a key in an hour is "high
# frequency"), dense keys (about 500 rows per key-hour), so nearly every row alerts; pg_cep's
# default settings (not the cache sizes this script's server starts with) and a cold start (no
# cache warm-up). Without a cooldown every alert is a row and a notification; with one, repeats
# are counted on the key's open alert.
if want storm; then
echo
echo "== Alert storm (tps, mean of two rounds; $clients clients, $secs s per run; default pg_cep settings, cold start) =="
for setting in cep.window_cache_keys cep.window_cache_events cep.rollup_records; do
    default=$($PSQL -d postgres -tAc "SELECT boot_val FROM pg_settings WHERE name = '$setting'")
    $PSQL -d postgres -c "ALTER SYSTEM SET $setting = '$default'" >/dev/null
done
work=$(mktemp -d)
storm_load() {
    fresh_server
    echo "loading 500000 rows over 1 hour for 1000 keys into four tables (no warm-up)..."
    sed "s/__COUNT_LIMIT__/10/" setup_inserts.sql | $PSQL -d $db -v ON_ERROR_STOP=1 -v rows=500000 -v keys=1000 -v span="1 hour" -v count_limit=10 -v rollups=false -f - >/dev/null
    scripts 1000
}
storm_rate() {
    $PSQL -d $db -tAc "SELECT round(100.0 * (SELECT coalesce(sum(repeats + 1), 0) FROM cep.alerts WHERE relid = 'tx_cep'::regclass) / greatest(rows_seen, 1), 1)
                              || '% of ' || rows_seen || ' rows alerted; ' || alerts || ' alerts written and notified' FROM cep.stats() WHERE table_name = 'tx_cep'"
}
storm_load
run_case "alert storm: no cooldown" single floor
storm_nocool=$last_single
echo "   $(storm_rate)"
storm_load
$PSQL -d $db -c "SELECT cep.alter_watch('tx_cep', cooldown => '10 minutes')" >/dev/null
run_case "alert storm: cooldown 10 minutes" single floor
echo "   $(storm_rate)"
echo "   cooldown / no cooldown (pg_cep): $(ratio "$last_single" "$storm_nocool")x"
# The same storm from 8 sessions at once: each counts repeats on the same open alerts, and their
# database's counts are written by one flush per interval (not one per session).
storm_load
$PSQL -d $db -c "SELECT cep.alter_watch('tx_cep', cooldown => '10 minutes')" >/dev/null
saved_clients=$clients; clients=8
run_case "alert storm: cooldown, 8 sessions" single floor
clients=$saved_clients
echo "   $(storm_rate)"
$PSQL -d postgres -c "ALTER SYSTEM RESET ALL" >/dev/null
bash ../scripts/cluster.sh restart "${PG_CEP_CLUSTER:-bench}" >/dev/null
rm -rf "$work"
fi

# Sequence patterns: the engine alone (one core, no Postgres), then live inserts into a table with
# one pattern attached, next to a bare table and a PL/pgSQL state machine for the same pattern.
if want engine; then
echo
echo "== Pattern engine alone: 'a b+ c', skip_till_next, within 30 minutes, 1M events over 100k keys =="
( cd .. && cargo test -q --release -p cep-core pattern_engine_throughput -- --ignored --nocapture 2>/dev/null | grep 'events/s' )
fi
if want patterns; then
echo
echo "== Pattern 'login browse+ purchase' live (tps, mean of two rounds; $clients clients, $secs s per run; 10k users) =="
$PSQL -d $db -v ON_ERROR_STOP=1 -f setup_patterns.sql >/dev/null
work=$(mktemp -d)
# A shop's stream: 10% logins, 70% page views, 3% purchases, 10% logouts, 7% searches.
kind="CASE WHEN e < 10 THEN 'login' WHEN e < 80 THEN 'browse' WHEN e < 83 THEN 'purchase' WHEN e < 93 THEN 'logout' ELSE 'search' END"
for t in bare cep plpgsql; do
    cat > "$work/single_$t.pgbench" <<EOS
\\set k random(0, 9999)
\\set e random(0, 99)
INSERT INTO ev_$t (user_id, event_type, amount) SELECT :k, $kind, e FROM (SELECT CAST(:e AS int) AS e) s;
EOS
    cat > "$work/batch_$t.pgbench" <<EOS
INSERT INTO ev_$t (user_id, event_type, amount)
SELECT (random() * 9999)::int, $kind, e FROM (SELECT (random() * 99)::int AS e FROM generate_series(1, 1000)) s;
EOS
done
run_case "single-row INSERT" single
run_case "1,000-row INSERT" batch
echo "   matches: pg_cep $($PSQL -d $db -tAc "SELECT count(*) FROM cep.pattern_matches WHERE pattern_name = 'bench_checkout'"), PL/pgSQL $($PSQL -d $db -tAc "SELECT count(*) FROM ev_plpgsql_matches")"
# The standard's semantics live: strict contiguity, emit => 'final' (the same baselines).
cp "$work/single_bare.pgbench" "$work/final_bare.pgbench"; cp "$work/single_plpgsql.pgbench" "$work/final_plpgsql.pgbench"
sed 's/ev_cep/ev_final/' "$work/single_cep.pgbench" > "$work/final_cep.pgbench"
run_case "single-row, strict, emit final" final
echo "   matches: pg_cep final $($PSQL -d $db -tAc "SELECT count(*) FROM cep.pattern_matches WHERE pattern_name = 'bench_checkout_final'")"
rm -rf "$work"
fi

# Change capture: the overhead of cep.capture on single-row and 1,000-row INSERTs, next to a bare
# table and the usual PL/pgSQL audit trigger (a log row and a NOTIFY per row).
if want capture; then
echo
echo "== Change capture (tps, mean of two rounds; $clients clients, $secs s per run) =="
fresh_server tx_bare tx_cep tx_plpgsql tx_floor plpgsql_alerts ev_bare ev_cep ev_plpgsql ev_plpgsql_state ev_plpgsql_matches
$PSQL -d $db -v ON_ERROR_STOP=1 -f setup_capture.sql >/dev/null
work=$(mktemp -d)
for t in bare cep plpgsql; do
    cat > "$work/single_$t.pgbench" <<EOS
\\set n random(1, 1000000)
INSERT INTO cap_$t (label, properties) VALUES ('Person', jsonb_build_object('n', CAST(:n AS int)));
EOS
    cat > "$work/batch_$t.pgbench" <<EOS
INSERT INTO cap_$t (label, properties) SELECT 'Person', jsonb_build_object('n', g) FROM generate_series(1, 1000) g;
EOS
done
run_case "single-row INSERT" single
run_case "1,000-row INSERT" batch
echo "   logged: pg_cep $($PSQL -d $db -tAc "SELECT count(*) FROM cep.change_log WHERE table_name = 'public.cap_cep'"), PL/pgSQL $($PSQL -d $db -tAc "SELECT count(*) FROM cap_plpgsql_log")"
echo "   COMMIT to LISTEN receipt, 500 sequential commits, sent by the database's sender (pg_cep notifier):"
latency bench_changes "INSERT INTO cap_cep (label, properties) VALUES ('Person', jsonb_build_object('n', \$1::int))"
rm -rf "$work"
fi

# Real-time statistics over 10M rows: cep.realtime_stats from the shared rollups, next to seed 003's
# real_time_stats view over the rows (with an index on created_at), last 5 minutes, top 10 users.
if want stats; then
echo
echo "== realtime_stats over 10M rows, last 5 minutes (calls/s, mean of two rounds; $clients clients) =="
echo "loading 10M rows and rebuilding their rollups (a few minutes)..."
$PSQL -d $db -v ON_ERROR_STOP=1 -f setup_stats.sql >/dev/null
agree=$($PSQL -d $db -tAc "SELECT (SELECT total_transactions FROM cep.realtime_stats('st_tx', '5 minutes'))
                                 - (SELECT count(*) FROM st_tx WHERE created_at >= date_trunc('minute', now() - interval '5 minutes'))")
echo "rows counted by realtime_stats minus rows in its window: $agree"
echo "cep.realtime_stats answers from: $($PSQL -d $db -tAc "SELECT source FROM cep.realtime_stats('st_tx', '5 minutes')")"
s1=$(tps stats_seed.pgbench); c1=$(tps stats_cep.pgbench); c2=$(tps stats_cep.pgbench); s2=$(tps stats_seed.pgbench)
s=$(mean2 "$s1" "$s2"); c=$(mean2 "$c1" "$c2")
printf '%-44s %12.1f calls/s\n' "seed 003's real_time_stats view" "$s" "cep.realtime_stats" "$c"
echo "ratio pg_cep / seed view: $(ratio "$c" "$s")x"
fi

# The bridge (crates/pg_cep-bridge): COMMIT to an SSE client receiving the alert, at 1,000 alerts
# a second, with one client and with 100 (fan-out), next to a plain LISTEN client on the same alerts.
if want bridge; then
echo
echo "== Bridge: COMMIT to receipt over SSE, next to plain LISTEN (1,000 alerts/s for 5 s; in its own database) =="
( cd .. && cargo run -q --release -p pg_cep-bridge --example bridge_latency -- "$port" 1000 5 100 )
fi
