#!/usr/bin/env bash
# Loads sql/demo.sql into the demo cluster while a second connection LISTENs, then shows both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$1
PSQL="${PGBIN:-/usr/lib/postgresql/15/bin}/psql -X -q -h 127.0.0.1 -p $port -U postgres"
db=pg_cep_demo
# The demo's own database, made afresh on every run: the demo shows a clean install.
$PSQL -d postgres -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
$PSQL -d $db -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; CREATE EXTENSION pg_cep"
last=$($PSQL -d $db -tAc "SELECT coalesce(max(alert_id), 0) FROM cep.alerts")
last_match=$($PSQL -d $db -tAc "SELECT coalesce(max(match_id), 0) FROM cep.pattern_matches")

# The listener: a separate session that LISTENs while the stream is written.
out=$(mktemp)
printf 'LISTEN transaction_alerts;\nSELECT pg_sleep(4);\n' | $PSQL -d $db >"$out" 2>&1 &
listener=$!
sleep 1
$PSQL -d $db -v ON_ERROR_STOP=1 -f sql/demo.sql >/dev/null
wait $listener

echo
echo "== Alerts written by the monitor in this run (cep.alerts) =="
$PSQL -d $db -P pager=off -c "
  SELECT alert_id, key AS user_id, round(score::numeric, 2) AS score, level,
         (SELECT string_agg(format('rule %s v%s: %s', r->>'rule_id', r->>'version', r->'evidence'), E'\n')
            FROM jsonb_array_elements(rules) r) AS why
  FROM cep.alerts WHERE alert_id > $last ORDER BY alert_id"
echo "== Notifications received by the LISTEN session =="
sed -n 's/.*with payload "\(.*\)" received from server.*/  \1/p' "$out"
grep -c 'Asynchronous notification' "$out" | sed 's/^/  notifications received: /'
rm -f "$out"
echo
echo "== Sequence pattern 'login browse+ purchase' matched live in this run (cep.pattern_matches) =="
$PSQL -d $db -P pager=off -c "
  SELECT match_id, key AS user_id, rows, match_end - match_start AS took
  FROM cep.pattern_matches WHERE match_id > $last_match ORDER BY match_id"
echo "== cep.realtime_stats('transactions', '5 minutes', top => 3), from the monitor's rollups in shared memory =="
$PSQL -d $db -P pager=off -c "SELECT total_transactions, total_volume, active_users, top_users, source FROM cep.realtime_stats('transactions', '5 minutes', 3)"
echo
echo "== cep.assess_transaction(8, 25000, 'Shanghai', now()) =="
$PSQL -d $db -P pager=off -c "SELECT * FROM cep.assess_transaction(8, 25000, 'Shanghai', now())"
echo "Open a prompt with 'make psql'; stop the cluster with 'make stop'."
