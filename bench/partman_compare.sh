#!/usr/bin/env bash
# pg_cep's monthly partition maintenance next to pg_partman's, on one throwaway cluster.
#   bash bench/partman_compare.sh          (as root or postgres; needs postgresql-15-partman and an
#                                           installed pg_cep; not part of CI or `make bench`)
# Shows, for two identical tables tx_partman and tx_cep:
#   1. rows in months without a partition: where they land, what each maintenance does with them;
#   2. locks: does maintenance wait in the lock queue (so new INSERTs queue behind it) or skip?
#   3. retention against a watched table's 90-day rule.
# Environment: PORT (default 55440).
set -uo pipefail
BIN=/usr/lib/postgresql/15/bin
PORT=${PORT:-55440}
cd /tmp
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres "$@"; fi; }

dir=$(mktemp -d /tmp/pg_cep_partman.XXXXXX)
chown postgres "$dir" 2>/dev/null || true
cleanup() {
    as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

as_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
cat >> "$dir/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_cep'
timezone = 'UTC'
EOF
as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null || { cat "$dir/server.log"; exit 1; }
as_pg "$BIN/createdb" -h "$dir" -p "$PORT" cmp

conn() { echo "host=$dir port=$PORT dbname=cmp application_name=$1"; }
# Q [name] <<SQL : run SQL, echoing statements, errors shown but not fatal.
Q() { as_pg "$BIN/psql" -X -q -e "$(conn "${1:-cmp_main}")" -v VERBOSITY=terse -P pager=off; }
V() { as_pg "$BIN/psql" -X -qtA "$(conn cmp_main)" -c "$1"; }    # one value
hr() { printf '\n==================== %s ====================\n' "$*"; }
now_ms() { date +%s%3N; }

# pg_cep may be mid-reinstall by a concurrent build: retry a little.
for i in 1 2 3 4 5 6; do
    err=$(as_pg "$BIN/psql" -X -q "$(conn cmp_main)" -v ON_ERROR_STOP=1 \
        -c "CREATE EXTENSION pg_cep; CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman" 2>&1) && break
    echo "setup failed ($err), retrying in 20 s"; sleep 20
    as_pg "$BIN/psql" -X -q "$(conn cmp_main)" -c "DROP EXTENSION IF EXISTS pg_cep CASCADE; DROP EXTENSION IF EXISTS pg_partman CASCADE; DROP SCHEMA IF EXISTS partman CASCADE" >/dev/null 2>&1
    [ $i = 6 ] && exit 1
done
echo "PostgreSQL: $(V 'SHOW server_version')   pg_partman: $(V "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'")   pg_cep: $(V "SELECT extversion FROM pg_extension WHERE extname = 'pg_cep'")   today: $(V 'SELECT current_date')"

# Each partition of a table with its bounds and exact row count.
Q >/dev/null <<'SQL'
CREATE FUNCTION parts(p regclass) RETURNS TABLE (partition text, bounds text, rows bigint)
LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM (SELECT c.oid::regclass AS rel, pg_get_expr(c.relpartbound, c.oid) AS b
                            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = p) s
             ORDER BY s.b = 'DEFAULT', s.b LOOP
        partition := r.rel; bounds := r.b;
        EXECUTE format('SELECT count(*) FROM ONLY %s', r.rel) INTO rows;
        RETURN NEXT;
    END LOOP;
END $$;
-- One line per table: how many partitions, first and last month, rows left in DEFAULT.
CREATE FUNCTION summary(p regclass) RETURNS TABLE (tbl text, months int, first_month text, last_month text, rows_in_default bigint)
LANGUAGE sql AS $$
    SELECT p::text, count(*) FILTER (WHERE bounds <> 'DEFAULT')::int,
           min(substring(bounds FROM $r$FROM \('(\d{4}-\d{2})$r$)), max(substring(bounds FROM $r$FROM \('(\d{4}-\d{2})$r$)),
           coalesce(sum(rows) FILTER (WHERE bounds = 'DEFAULT'), 0)
    FROM parts(p)
$$;
-- The calendar months from `a` to `b` months from now that have no partition of their own.
CREATE FUNCTION missing_months(p regclass, a int, b int) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(to_char(m, 'YYYY-MM'), ' ' ORDER BY m), 'none')
    FROM generate_series(date_trunc('month', now()) + make_interval(months => a),
                         date_trunc('month', now()) + make_interval(months => b), '1 month') m
    WHERE NOT EXISTS (SELECT 1 FROM parts(p) WHERE bounds LIKE '%FROM (''' || to_char(m, 'YYYY-MM-DD') || '%')
$$;
SQL

# (Re)creates both tables and sets each tool up on its own; $1 = months back of the first partition
# (0 = the tools' defaults).
setup() {
    local back=$1
    Q >/dev/null 2>&1 <<SQL
DROP TABLE IF EXISTS tx_partman, tx_cep CASCADE;
DELETE FROM partman.part_config WHERE parent_table = 'public.tx_partman';
SQL
    for t in tx_partman tx_cep; do
        Q >/dev/null <<SQL
CREATE TABLE $t (id bigserial, user_id int, amount numeric, created_at timestamptz NOT NULL,
                 PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
SQL
    done
    if [ "$back" = 0 ]; then
        Q <<'SQL'
SELECT partman.create_parent('public.tx_partman', 'created_at', 'native', 'monthly', p_premake := 3);
SELECT * FROM cep.manage_partitions('tx_cep', premake => 3);
SQL
    else
        Q <<SQL
SELECT partman.create_parent('public.tx_partman', 'created_at', 'native', 'monthly', p_premake := 3,
       p_start_partition := (date_trunc('month', now()) - interval '$back months')::text);
SELECT cep.create_monthly_partition('tx_cep', (date_trunc('month', now()) - interval '$back months')::date);
SELECT action, count(*), min(partition), max(partition) FROM cep.manage_partitions('tx_cep', premake => 3) GROUP BY 1;
SQL
    fi
}
show() { Q <<'SQL'
SELECT * FROM summary('tx_partman') UNION ALL SELECT * FROM summary('tx_cep');
SQL
}

###########################################################################################
hr "1. Rows for months that have no partition"
setup 0
show
Q <<'SQL'
-- 100 rows 6 months ago, 100 rows 5 months ahead, 10 rows now, into each table.
INSERT INTO tx_partman (user_id, amount, created_at)
SELECT g % 10, g, date_trunc('month', now()) + make_interval(months => m, hours => g)
FROM (VALUES (-6), (5)) v(m), generate_series(1, 100) g;
INSERT INTO tx_partman (user_id, amount, created_at) SELECT g, g, now() FROM generate_series(1, 10) g;
INSERT INTO tx_cep SELECT * FROM tx_partman;
SELECT tableoid::regclass AS landed_in, to_char(created_at, 'YYYY-MM') AS month, count(*)
FROM tx_partman GROUP BY 1, 2 UNION ALL
SELECT tableoid::regclass, to_char(created_at, 'YYYY-MM'), count(*) FROM tx_cep GROUP BY 1, 2 ORDER BY 1, 2;
SELECT * FROM partman.check_default();
SQL
echo "--- pg_partman: run_maintenance() (all partition sets)"
Q <<'SQL'
SELECT partman.run_maintenance();
SQL
echo "--- pg_cep: run_maintenance() (all registered tables)"
Q <<'SQL'
SELECT * FROM cep.run_maintenance();
SQL
echo "--- after one maintenance run each"
show
Q <<'SQL'
SELECT 'tx_partman' AS tbl, missing_months('tx_partman', -6, 5) AS missing_months_in_minus6_to_plus5
UNION ALL SELECT 'tx_cep', missing_months('tx_cep', -6, 5);
SQL
echo "--- pg_partman: the documented manual fix, partition_data_proc (moves DEFAULT rows, creates their months)"
Q <<'SQL'
CALL partman.partition_data_proc('public.tx_partman');
SELECT partman.run_maintenance('public.tx_partman');
SELECT * FROM partman.check_default();
SELECT * FROM summary('tx_partman');
SELECT 'tx_partman' AS tbl, missing_months('tx_partman', -6, 5) AS missing_months_in_minus6_to_plus5;
SQL
echo "--- pg_cep log of that run"
Q <<'SQL'
SELECT action, partition, rows_moved, detail FROM cep.partition_log ORDER BY id;
SQL

###########################################################################################
hr "2. Locks: does maintenance queue (and block INSERTs behind it) or skip?"
# A holds a lock for 6 s; B runs maintenance at 0.5 s; C inserts one current-month row at 1.5 s
# with lock_timeout 3 s; pg_locks is sampled at 2.5 s.
race() { # label, A's SQL, B's SQL, C's SQL
    local label=$1 a=$2 b=$3 c=$4 t0 tb tc
    echo "--- $label"
    as_pg "$BIN/psql" -X -q "$(conn cmp_A)" -c "BEGIN; $a; SELECT pg_sleep(6); COMMIT;" >/dev/null 2>&1 &
    local pa=$!
    sleep 0.5
    ( t0=$(now_ms); out=$(as_pg "$BIN/psql" -X -qtA -v VERBOSITY=terse "$(conn cmp_B)" -c "$b" 2>&1)
      echo "B maintenance finished after $(( $(now_ms) - t0 )) ms: $(echo "$out" | tr '\n' ';' | cut -c1-400)" ) > "$dir/b.out" &
    local pb=$!
    sleep 1
    ( t0=$(now_ms); out=$(as_pg "$BIN/psql" -X -qtA -v VERBOSITY=terse "$(conn cmp_C)" -c "SET lock_timeout = '3s'" -c "$c" 2>&1)
      echo "C insert   finished after $(( $(now_ms) - t0 )) ms: $(echo "$out" | tr '\n' ' ')" ) > "$dir/c.out" &
    local pc=$!
    sleep 1
    echo "pg_locks at 2.5 s (relation locks of A, B, C that are waiting, or stronger than ROW EXCLUSIVE):"
    as_pg "$BIN/psql" -X -q "$(conn cmp_main)" -P pager=off -c "
        SELECT a.application_name AS session, l.relation::regclass AS relation, l.mode, l.granted
        FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'relation' AND a.application_name IN ('cmp_A', 'cmp_B', 'cmp_C')
          AND l.relation::regclass::text LIKE 'tx\_%'
          AND (NOT l.granted OR l.mode NOT IN ('AccessShareLock', 'RowExclusiveLock'))
        ORDER BY 1, 2::text, 3"
    wait $pa $pb $pc
    cat "$dir/b.out" "$dir/c.out"
}

setup 14
Q >/dev/null <<'SQL'
-- One row an hour from 14 months ago until now.
INSERT INTO tx_partman (user_id, amount, created_at)
SELECT extract(hour FROM t)::int, 10, t FROM generate_series(date_trunc('month', now()) - interval '14 months', now(), '1 hour') t;
INSERT INTO tx_cep SELECT * FROM tx_partman;
SQL
show

echo
echo "### 2a. A new month is due (premake 3 -> 4) while session A reads the table (ACCESS SHARE)"
Q >/dev/null <<'SQL'
UPDATE partman.part_config SET premake = 4 WHERE parent_table = 'public.tx_partman';
UPDATE cep.partition_config SET premake = 4 WHERE parent = 'tx_cep'::regclass;
SQL
race "pg_partman" "SELECT count(*) FROM tx_partman" \
    "SELECT partman.run_maintenance('public.tx_partman')" \
    "INSERT INTO tx_partman (user_id, amount, created_at) VALUES (1, 1, now())"
race "pg_cep" "SELECT count(*) FROM tx_cep" \
    "SELECT action, partition, detail FROM cep.run_maintenance('tx_cep')" \
    "INSERT INTO tx_cep (user_id, amount, created_at) VALUES (1, 1, now())"

echo
echo "### 2b. Same, but A is a long-running INSERT transaction (ROW EXCLUSIVE on the table)"
Q >/dev/null <<'SQL'
UPDATE partman.part_config SET premake = 5 WHERE parent_table = 'public.tx_partman';
UPDATE cep.partition_config SET premake = 5 WHERE parent = 'tx_cep'::regclass;
SQL
race "pg_partman" "INSERT INTO tx_partman (user_id, amount, created_at) VALUES (2, 2, now())" \
    "SELECT partman.run_maintenance('public.tx_partman')" \
    "INSERT INTO tx_partman (user_id, amount, created_at) VALUES (1, 1, now())"
race "pg_cep" "INSERT INTO tx_cep (user_id, amount, created_at) VALUES (2, 2, now())" \
    "SELECT action, partition, detail FROM cep.run_maintenance('tx_cep')" \
    "INSERT INTO tx_cep (user_id, amount, created_at) VALUES (1, 1, now())"
echo "--- settle: maintenance again with nothing in the way"
Q <<'SQL'
SELECT partman.run_maintenance('public.tx_partman');
SELECT action, partition, detail FROM cep.run_maintenance('tx_cep');
SQL
show

echo
echo "### 2c. Retention 12 months (detach) is due while session A reads the table"
Q >/dev/null <<'SQL'
UPDATE partman.part_config SET retention = '12 months', retention_keep_table = true WHERE parent_table = 'public.tx_partman';
UPDATE cep.partition_config SET retention = '12 months' WHERE parent = 'tx_cep'::regclass;
SQL
race "pg_partman" "SELECT count(*) FROM tx_partman" \
    "SELECT partman.run_maintenance('public.tx_partman')" \
    "INSERT INTO tx_partman (user_id, amount, created_at) VALUES (1, 1, now())"
race "pg_cep" "SELECT count(*) FROM tx_cep" \
    "SELECT action, partition, detail FROM cep.run_maintenance('tx_cep')" \
    "INSERT INTO tx_cep (user_id, amount, created_at) VALUES (1, 1, now())"
echo "--- settle"
Q <<'SQL'
SELECT partman.run_maintenance('public.tx_partman');
SELECT action, partition, detail FROM cep.run_maintenance('tx_cep');
SQL
show

echo
echo "### 2d. Retention 11 months is due while session A reads only the month being retired"
old=$(V "SELECT to_char(date_trunc('month', now()) - interval '12 months', 'YYYY_MM')")
pm_old=$(V "SELECT partition FROM parts('tx_partman') WHERE bounds LIKE '%FROM (''' || to_char(date_trunc('month', now()) - interval '12 months', 'YYYY-MM-DD') || '%'")
Q >/dev/null <<'SQL'
UPDATE partman.part_config SET retention = '11 months' WHERE parent_table = 'public.tx_partman';
UPDATE cep.partition_config SET retention = '11 months' WHERE parent = 'tx_cep'::regclass;
SQL
race "pg_partman" "SELECT count(*) FROM $pm_old" \
    "SELECT partman.run_maintenance('public.tx_partman')" \
    "INSERT INTO tx_partman (user_id, amount, created_at) VALUES (1, 1, now())"
race "pg_cep" "SELECT count(*) FROM tx_cep_$old" \
    "SELECT action, partition, detail FROM cep.run_maintenance('tx_cep')" \
    "INSERT INTO tx_cep (user_id, amount, created_at) VALUES (1, 1, now())"
echo "--- settle"
Q <<'SQL'
SELECT partman.run_maintenance('public.tx_partman');
SELECT action, partition, detail FROM cep.run_maintenance('tx_cep');
SQL
show

echo
echo "### 2e. A new month is due (premake -> 6) while pgbench inserts current-month rows non-stop (2 clients, 8 s)"
Q >/dev/null <<'SQL'
UPDATE partman.part_config SET premake = 6 WHERE parent_table = 'public.tx_partman';
UPDATE cep.partition_config SET premake = 6 WHERE parent = 'tx_cep'::regclass;
SQL
for t in partman cep; do
    echo "INSERT INTO tx_$t (user_id, amount, created_at) VALUES (3, 3, now());" > "$dir/ins_$t.sql"
    chown postgres "$dir/ins_$t.sql" 2>/dev/null || true
    as_pg "$BIN/pgbench" -h "$dir" -p "$PORT" -n -c 2 -j 2 -T 8 -P 1 -f "$dir/ins_$t.sql" cmp > "$dir/pgbench_$t.out" 2>&1 &
    pp=$!
    sleep 2
    if [ $t = partman ]; then m="SELECT partman.run_maintenance('public.tx_partman')"
    else m="SELECT action, partition, detail FROM cep.run_maintenance('tx_cep')"; fi
    t0=$(now_ms); out=$(as_pg "$BIN/psql" -X -qtA -v VERBOSITY=terse "$(conn cmp_B)" -c "$m" 2>&1)
    echo "--- $t: maintenance finished after $(( $(now_ms) - t0 )) ms: $(echo "$out" | tr '\n' ';' | cut -c1-300)"
    wait $pp
    echo "pgbench, per second (a stall shows as ~0 tps):"
    grep -E '^progress' "$dir/pgbench_$t.out" | sed 's/^/    /'
    grep -E '^(number of transactions actually processed|latency average)' "$dir/pgbench_$t.out" | sed 's/^/    /'
done
Q <<'SQL'
SELECT * FROM summary('tx_partman') UNION ALL SELECT * FROM summary('tx_cep');
SQL

###########################################################################################
hr "3. Retention shorter than a rule's window on a watched table"
Q <<'SQL'
INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
('90-day spend', 'threshold', '{"metric": "total_amount", "operator": ">", "value": 1000000, "window": "90 days"}', 0.5);
SELECT cep.watch('tx_cep', key_column => 'user_id', amount_column => 'amount', time_column => 'created_at');
\set VERBOSITY default
-- pg_cep: refused (22023) unless force => true.
SELECT * FROM cep.manage_partitions('tx_cep', premake => 5, retention => '30 days');
\set VERBOSITY terse
-- With force the setting is stored; months still inside the 90-day window are kept and reported.
SELECT action, partition, detail FROM cep.manage_partitions('tx_cep', premake => 5, retention => '30 days', force => true)
WHERE action <> 'create';
-- pg_partman: any retention is accepted; it has no notion of what the rows are used for.
UPDATE partman.part_config SET retention = '30 days' WHERE parent_table = 'public.tx_partman';
SELECT partman.run_maintenance('public.tx_partman');
SQL
show

hr "done"
