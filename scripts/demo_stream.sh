#!/usr/bin/env bash
# A live stream for the demo's dashboard: a few transactions a second into the demo database's
# `transactions` table, with now and then a large payment or a city hop that alerts. Stop it with
# Ctrl-C (or give a number of seconds).
#   bash scripts/demo_stream.sh PORT [SECONDS]
set -euo pipefail
port=$1 secs=${2:-0}
PSQL="${PGBIN:-/usr/lib/postgresql/15/bin}/psql -X -q -h 127.0.0.1 -p $port -U postgres -d pg_cep_demo -v ON_ERROR_STOP=1"
start=$(date +%s)
echo "streaming into pg_cep_demo.transactions (Ctrl-C stops)"
while [ "$secs" -eq 0 ] || [ $(( $(date +%s) - start )) -lt "$secs" ]; do
    # One batch a second, each row its own transaction: ordinary spending, and about one row in
    # thirty alerting (a large amount, or the same user in another city).
    $PSQL <<'SQL'
DO $$
DECLARE u int;
BEGIN
  FOR i IN 1..5 LOOP
    u := 100 + (random() * 40)::int;
    INSERT INTO transactions (user_id, amount, location)
    VALUES (u,
            CASE WHEN random() < 0.03 THEN 12000 + (random() * 20000)::int ELSE 20 + (random() * 300)::int END,
            CASE WHEN random() < 0.02 THEN 'Beijing' ELSE 'Shanghai' END);
    COMMIT;
  END LOOP;
END $$;
SQL
    sleep 1
done
