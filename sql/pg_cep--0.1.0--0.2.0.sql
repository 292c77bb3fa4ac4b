-- pg_cep 0.1.0 -> 0.2.0: monthly partitions, sequence patterns, change capture and correlation,
-- rollups with cep.realtime_stats and cep.streaming_performance. Written by hand from the
-- objects 0.2.0 adds; never edited once released.
\echo Use "ALTER EXTENSION pg_cep UPDATE TO '0.2.0'" to load this file. \quit

-- Tables (and the SQL functions over them) added to the bootstrap.
-- Tables whose monthly partitions pg_cep maintains (see cep.manage_partitions).
CREATE TABLE partition_config (
    parent            oid         PRIMARY KEY,  -- oid, not regclass, so that pg_upgrade accepts the table
    control_column    name        NOT NULL,
    control_type      text        NOT NULL CHECK (control_type IN ('timestamptz', 'timestamp', 'date')),
    premake           integer     NOT NULL DEFAULT 3 CHECK (premake BETWEEN 0 AND 120),
    retention         interval    CHECK (retention > interval '0'),
    retention_mode    text        NOT NULL DEFAULT 'detach' CHECK (retention_mode IN ('detach', 'drop')),
    default_partition boolean     NOT NULL DEFAULT true,
    force_retention   boolean     NOT NULL DEFAULT false,
    batch_size        integer     NOT NULL DEFAULT 10000 CHECK (batch_size > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_run          timestamptz
);
COMMENT ON TABLE partition_config IS 'pg_cep partition management settings (see cep.manage_partitions)';
SELECT pg_catalog.pg_extension_config_dump('partition_config', '');

-- Every step partition maintenance took or skipped, and why.
CREATE TABLE partition_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    parent      text        NOT NULL,
    action      text        NOT NULL,
    partition   text,
    rows_moved  bigint      NOT NULL DEFAULT 0,
    detail      text,
    duration_ms float8
);
CREATE INDEX partition_log_parent_idx ON partition_log (parent, at);

-- Each partition of a table, with its bounds, estimated rows and size.
CREATE FUNCTION partitions(parent regclass)
RETURNS TABLE (partition regclass, is_default boolean, range_from text, range_to text,
               estimated_rows bigint, total_bytes bigint)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::regclass,
           b.expr = 'DEFAULT',
           coalesce(r[1], CASE WHEN b.expr <> 'DEFAULT' THEN 'MINVALUE' END),
           coalesce(r[2], CASE WHEN b.expr <> 'DEFAULT' THEN 'MAXVALUE' END),
           greatest(c.reltuples, 0)::bigint,
           pg_total_relation_size(c.oid)
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS expr) b
    LEFT JOIN LATERAL regexp_match(b.expr, $re$FROM \((?:'([^']*)'|MINVALUE)\) TO \((?:'([^']*)'|MAXVALUE)\)$re$) r ON true
    WHERE i.inhparent = parent
    ORDER BY b.expr = 'DEFAULT', r[1] NULLS FIRST
$$;

-- Sequence patterns matched live by a trigger on their source table (see cep.define_pattern).
CREATE TABLE patterns (
    pattern_id   serial      PRIMARY KEY,
    name         text        NOT NULL UNIQUE,
    source       oid         NOT NULL,
    partition_by name        NOT NULL,
    order_by     name        NOT NULL,
    id_column    name        NOT NULL,
    pattern      text        NOT NULL,
    define       jsonb       NOT NULL,
    within       interval    CHECK (within > interval '0'),
    contiguity   text        NOT NULL,
    after_match  text        NOT NULL,
    channel      text        NOT NULL,
    max_partials integer     NOT NULL CHECK (max_partials > 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE patterns IS 'pg_cep sequence patterns (see cep.define_pattern)';
SELECT pg_catalog.pg_extension_config_dump('patterns', '');
SELECT pg_catalog.pg_extension_config_dump('patterns_pattern_id_seq', '');

-- Each key's partial matches, so they follow transactions and survive a restart. `deadline` is
-- when cep.fire_timeouts() has something to do for the key: complete an absence, drop expired runs.
CREATE TABLE pattern_state (
    pattern_id integer     NOT NULL,  -- no foreign key: its check would lock the pattern's row on every insert
    key        text        NOT NULL,
    state      text        NOT NULL,
    deadline   timestamptz,
    PRIMARY KEY (pattern_id, key)
) WITH (fillfactor = 70);
-- No index on deadline: every advance rewrites it, and without one the rewrite stays a HOT
-- update. cep.fire_timeouts() scans the states, which are one row per key with partial matches.
-- A busy key's state can pass the 2 kB at which Postgres compresses it, on every event: use lz4,
-- several times faster than the default pglz, where the server is built with it.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE @extschema@.pattern_state ALTER COLUMN state SET COMPRESSION lz4;
    END IF;
END $$;

-- Completed matches: the rows each symbol matched, by id.
CREATE TABLE pattern_matches (
    match_id     bigserial   PRIMARY KEY,
    pattern_id   integer     NOT NULL,
    pattern_name text        NOT NULL,
    key          text        NOT NULL,
    rows         jsonb       NOT NULL,
    match_start  timestamptz NOT NULL,
    match_end    timestamptz NOT NULL,
    completed_by text        NOT NULL DEFAULT 'event' CHECK (completed_by IN ('event', 'timeout')),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pattern_matches_pattern_idx ON pattern_matches (pattern_id, match_id);

-- Tables whose changes pg_cep records (see cep.capture).
CREATE TABLE captures (
    relid                 oid         PRIMARY KEY,
    kind                  text        CHECK (kind IN ('node', 'relationship')),
    channel               text        NOT NULL,
    changed_columns_only  boolean     NOT NULL DEFAULT true,
    key_column            name,
    from_column           name,
    to_column             name,
    high_frequency        integer     CHECK (high_frequency > 0),
    high_frequency_window interval    NOT NULL DEFAULT '1 minute' CHECK (high_frequency_window > interval '0'),
    mass_deletion         integer     CHECK (mass_deletion > 0),
    mass_deletion_window  interval    NOT NULL DEFAULT '1 minute' CHECK (mass_deletion_window > interval '0'),
    anomaly_channel       text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE captures IS 'pg_cep change capture settings (see cep.capture)';
SELECT pg_catalog.pg_extension_config_dump('captures', '');

-- Every captured change. Monthly partitions, kept by pg_cep's own partition management; set
-- the retention with cep.manage_partitions('cep.change_log', retention => ...).
CREATE TABLE change_log (
    change_id      bigserial,
    changed_at     timestamptz NOT NULL DEFAULT now(),
    relid          oid         NOT NULL,
    table_name     text        NOT NULL,
    op             "char"      NOT NULL,  -- I, U, D or T. No CHECK: only pg_cep writes it, and a CHECK is
                                          -- prepared again for every statement that inserts
    event_type     text        NOT NULL,
    pk             text,
    key            text,
    from_id        text,
    to_id          text,
    new_row        jsonb,
    old_row        jsonb,
    correlation_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (change_id, changed_at)
) PARTITION BY RANGE (changed_at);
CREATE TABLE change_log_default PARTITION OF change_log DEFAULT;
-- Few indexes, each paid on every captured row: time per table (anomaly counts, entities,
-- endpoints), transaction then id (correlation, and the order cep.changes_since reads in), and
-- only where they are set: key, from and to ids; and the primary key, for lookups by change id.
CREATE INDEX change_log_table_time_idx ON change_log (relid, changed_at);
CREATE INDEX change_log_key_idx ON change_log (relid, key, changed_at) WHERE key IS NOT NULL;
CREATE INDEX change_log_correlation_idx ON change_log (correlation_id, change_id);
CREATE INDEX change_log_from_idx ON change_log (from_id) WHERE from_id IS NOT NULL;
CREATE INDEX change_log_to_idx ON change_log (to_id) WHERE to_id IS NOT NULL;
INSERT INTO partition_config (parent, control_column, control_type, premake, retention, retention_mode)
VALUES ('change_log'::regclass, 'changed_at', 'timestamptz', 2, '3 months', 'drop');

-- 0.2.0: whether the monitor keeps a watched table's rollups (see cep.watch_rollups).
ALTER TABLE watches ADD COLUMN rollups boolean NOT NULL DEFAULT true;

-- Functions implemented in Rust.
-- src/api/capture.rs:27
-- pg_cep::api::capture::capture
CREATE  FUNCTION "capture"(
	"table" regclass, /* PgRelation */
	"kind" TEXT DEFAULT NULL, /* Option < & str > */
	"channel" TEXT DEFAULT 'cep_changes', /* & str */
	"changed_columns_only" bool DEFAULT true, /* bool */
	"key_column" TEXT DEFAULT NULL, /* Option < & str > */
	"from_column" TEXT DEFAULT NULL, /* Option < & str > */
	"to_column" TEXT DEFAULT NULL, /* Option < & str > */
	"high_frequency" INT DEFAULT 100, /* Option < i32 > */
	"high_frequency_window" interval DEFAULT '1 minute', /* pgrx :: datum :: Interval */
	"mass_deletion" INT DEFAULT 20, /* Option < i32 > */
	"mass_deletion_window" interval DEFAULT '1 minute', /* pgrx :: datum :: Interval */
	"anomaly_channel" TEXT DEFAULT 'cep_anomalies' /* & str */
) RETURNS TEXT /* String */
VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'capture_wrapper';

-- src/api/partitions.rs:24
-- pg_cep::api::partitions::create_monthly_partition
CREATE  FUNCTION "create_monthly_partition"(
	"parent" regclass, /* PgRelation */
	"month" date /* pgrx :: datum :: Date */
) RETURNS regclass /* RegClass */
STRICT VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_monthly_partition_wrapper';

-- src/api/patterns.rs:44
-- pg_cep::api::patterns::define_pattern
CREATE  FUNCTION "define_pattern"(
	"name" TEXT, /* & str */
	"source" regclass, /* PgRelation */
	"partition_by" TEXT, /* & str */
	"order_by" TEXT, /* & str */
	"pattern" TEXT, /* & str */
	"define" jsonb, /* pgrx :: JsonB */
	"within" interval DEFAULT NULL, /* Option < pgrx :: datum :: Interval > */
	"contiguity" TEXT DEFAULT 'skip_till_next', /* & str */
	"after_match" TEXT DEFAULT 'past_last_row', /* & str */
	"channel" TEXT DEFAULT 'pattern_matches', /* & str */
	"id_column" TEXT DEFAULT 'id', /* & str */
	"max_partials" INT DEFAULT 1000 /* i32 */
) RETURNS INT /* i32 */
VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'define_pattern_wrapper';

-- src/api/patterns.rs:125
-- pg_cep::api::patterns::drop_pattern
CREATE  FUNCTION "drop_pattern"(
	"name" TEXT /* & str */
) RETURNS bool /* bool */
STRICT VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'drop_pattern_wrapper';

-- src/api/patterns.rs:159
-- pg_cep::api::patterns::fire_timeouts
CREATE  FUNCTION "fire_timeouts"(
	"max_keys" bigint DEFAULT 10000 /* i64 */
) RETURNS bigint /* i64 */
STRICT VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'fire_timeouts_wrapper';

-- src/api/partitions.rs:71
-- pg_cep::api::partitions::manage_partitions
CREATE  FUNCTION "manage_partitions"(
	"parent" regclass, /* PgRelation */
	"premake" INT DEFAULT 3, /* i32 */
	"retention" interval DEFAULT NULL, /* Option < pgrx :: datum :: Interval > */
	"retention_mode" TEXT DEFAULT 'detach', /* & str */
	"default_partition" bool DEFAULT true, /* bool */
	"force" bool DEFAULT false, /* bool */
	"batch_size" INT DEFAULT 10000 /* i32 */
) RETURNS TABLE (
	"parent" TEXT,  /* String */
	"action" TEXT,  /* String */
	"partition" TEXT,  /* Option < String > */
	"rows_moved" bigint,  /* i64 */
	"detail" TEXT  /* Option < String > */
)
VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'manage_partitions_wrapper';

-- src/api/patterns.rs:209
-- pg_cep::api::patterns::match_recognize
CREATE  FUNCTION "match_recognize"(
	"relation" regclass, /* PgRelation */
	"partition_by" TEXT, /* & str */
	"order_by" TEXT, /* & str */
	"pattern" TEXT, /* & str */
	"define" jsonb, /* pgrx :: JsonB */
	"within" interval DEFAULT NULL, /* Option < pgrx :: datum :: Interval > */
	"contiguity" TEXT DEFAULT 'skip_till_next', /* & str */
	"after_match" TEXT DEFAULT 'past_last_row', /* & str */
	"rows_per_match" TEXT DEFAULT 'one', /* & str */
	"id_column" TEXT DEFAULT 'id', /* & str */
	"max_partials" INT DEFAULT 1000 /* i32 */
) RETURNS TABLE (
	"match_number" bigint,  /* i64 */
	"key" TEXT,  /* String */
	"match_start" timestamp with time zone,  /* pgrx :: datum :: TimestampWithTimeZone */
	"match_end" timestamp with time zone,  /* pgrx :: datum :: TimestampWithTimeZone */
	"symbol" TEXT,  /* Option < String > */
	"row_id" bigint,  /* Option < i64 > */
	"rows" jsonb  /* Option < pgrx :: JsonB > */
)
VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'match_recognize_wrapper';

-- src/api/partitions.rs:119
-- pg_cep::api::partitions::run_maintenance
CREATE  FUNCTION "run_maintenance"(
	"parent" regclass DEFAULT NULL /* Option < PgRelation > */
) RETURNS TABLE (
	"parent" TEXT,  /* String */
	"action" TEXT,  /* String */
	"partition" TEXT,  /* Option < String > */
	"rows_moved" bigint,  /* i64 */
	"detail" TEXT  /* Option < String > */
)
VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'run_maintenance_wrapper';

-- src/api/capture.rs:140
-- pg_cep::api::capture::uncapture
CREATE  FUNCTION "uncapture"(
	"table" regclass /* PgRelation */
) RETURNS bool /* bool */
STRICT VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'uncapture_wrapper';

-- src/api/partitions.rs:101
-- pg_cep::api::partitions::unmanage_partitions
CREATE  FUNCTION "unmanage_partitions"(
	"parent" regclass /* PgRelation */
) RETURNS bool /* bool */
STRICT VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'unmanage_partitions_wrapper';

-- src/api/watch.rs:199
-- pg_cep::api::watch::watch_rollups
CREATE  FUNCTION "watch_rollups"(
	"table" regclass, /* PgRelation */
	"enabled" bool /* bool */
) RETURNS bool /* bool */
STRICT VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'watch_rollups_wrapper';

-- src/api/rollups.rs:29
-- pg_cep::api::rollups::rollup_window
CREATE  FUNCTION "rollup_window"(
	"relation" oid, /* pg_sys :: Oid */
	"since" timestamp with time zone, /* TimestampWithTimeZone */
	"top" INT /* i32 */
) RETURNS TABLE (
	"window_start" timestamp with time zone,  /* TimestampWithTimeZone */
	"total_transactions" bigint,  /* i64 */
	"total_volume" double precision,  /* f64 */
	"avg_transaction" double precision,  /* Option < f64 > */
	"min_amount" double precision,  /* Option < f64 > */
	"max_amount" double precision,  /* Option < f64 > */
	"active_users" bigint,  /* i64 */
	"top_users" jsonb,  /* JsonB */
	"source" TEXT  /* String */
)
STRICT STABLE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rollup_window_wrapper';

-- src/api/rollups.rs:76
-- pg_cep::api::rollups::rollup_totals
CREATE  FUNCTION "rollup_totals"(
	"relation" oid, /* pg_sys :: Oid */
	"since" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS TABLE (
	"row_count" bigint,  /* i64 */
	"avg_delay_s" double precision  /* Option < f64 > */
)
STRICT STABLE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rollup_totals_wrapper';

-- src/api/rollups.rs:92
-- pg_cep::api::rollups::rollup_load
CREATE  FUNCTION "rollup_load"(
	"relation" oid, /* pg_sys :: Oid */
	"totals_since" timestamp with time zone, /* TimestampWithTimeZone */
	"keys_since" timestamp with time zone, /* TimestampWithTimeZone */
	"minutes" timestamp with time zone[], /* Vec < TimestampWithTimeZone > */
	"counts" bigint[], /* Vec < i64 > */
	"sums" double precision[], /* Vec < f64 > */
	"mins" double precision[], /* Vec < Option < f64 > > */
	"maxs" double precision[], /* Vec < Option < f64 > > */
	"key_minutes" timestamp with time zone[], /* Vec < TimestampWithTimeZone > */
	"keys" TEXT[], /* Vec < String > */
	"key_counts" bigint[], /* Vec < i64 > */
	"key_sums" double precision[] /* Vec < f64 > */
) RETURNS void
STRICT VOLATILE
SET search_path TO pg_catalog
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rollup_load_wrapper';

-- src/api/rollups.rs:128
-- pg_cep::api::rollups::rollup_memory
CREATE  FUNCTION "rollup_memory"() RETURNS TABLE (
	"enabled" bool,  /* bool */
	"tables" bigint,  /* i64 */
	"records" bigint,  /* i64 */
	"capacity" bigint,  /* i64 */
	"dropped_minutes" bigint  /* i64 */
)
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rollup_memory_wrapper';

-- src/api/capture.rs:167
-- pg_cep::api::capture::capture_trigger
CREATE FUNCTION "capture_trigger"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'capture_trigger_wrapper';

-- src/api/patterns.rs:166
-- pg_cep::api::patterns::pattern_trigger
CREATE FUNCTION "pattern_trigger"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'pattern_trigger_wrapper';

-- Triggers, functions and views that use the functions above.
CREATE TRIGGER patterns_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON patterns
    FOR EACH STATEMENT EXECUTE FUNCTION invalidate_cep_cache();

CREATE TRIGGER captures_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON captures
    FOR EACH STATEMENT EXECUTE FUNCTION invalidate_cep_cache();

-- A consumer that was away catches up from the last change it saw. Changes come in transaction
-- order (then id), and only once every older transaction has ended: a transaction that commits
-- later can take a smaller change id, but never an earlier place in this order, so reading on
-- from the last change seen misses nothing.
CREATE FUNCTION changes_since(last_id bigint, max_rows integer DEFAULT 1000, relation regclass DEFAULT NULL)
RETURNS SETOF change_log LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH last AS (
        SELECT coalesce((SELECT correlation_id FROM @extschema@.change_log WHERE change_id = last_id), '0'::xid8) AS xid)
    SELECT c.* FROM @extschema@.change_log c, last
    WHERE (c.correlation_id, c.change_id) > (last.xid, last_id)
      AND c.correlation_id < pg_snapshot_xmin(pg_current_snapshot())
      AND (relation IS NULL OR c.relid = relation)
    ORDER BY c.correlation_id, c.change_id
    LIMIT max_rows
$$;

-- The changes related to one change within a time window, under seed 000's three relations: the
-- same transaction, the same entity (table and primary key), and a relationship whose from or to
-- id is a node's id.
CREATE FUNCTION correlated_events(event_id bigint, time_window interval DEFAULT '300 seconds')
RETURNS TABLE (change_id bigint, relation text, event_type text, table_name text, pk text,
               changed_at timestamptz, correlation_id xid8)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH e AS (SELECT * FROM @extschema@.change_log WHERE change_id = event_id),
    nodes AS (SELECT relid FROM @extschema@.captures WHERE kind = 'node'),
    related AS (
        SELECT c.*, 1 AS rank, 'same_correlation' AS relation
        FROM e JOIN @extschema@.change_log c ON c.correlation_id = e.correlation_id
        UNION ALL
        SELECT c.*, 2, 'same_entity'
        FROM e JOIN @extschema@.change_log c ON c.relid = e.relid AND c.pk = e.pk
                                            AND c.changed_at BETWEEN e.changed_at - time_window AND e.changed_at + time_window
        UNION ALL
        SELECT c.*, 3, 'relationship_endpoint'
        FROM e JOIN @extschema@.change_log c ON e.event_type LIKE 'node%' AND c.event_type LIKE 'relationship%'
                                              AND (c.from_id = e.pk OR c.to_id = e.pk)
        UNION ALL
        SELECT c.*, 3, 'relationship_endpoint'
        FROM e JOIN @extschema@.change_log c ON e.event_type LIKE 'relationship%' AND c.relid IN (SELECT relid FROM nodes)
                                              AND c.pk IN (e.from_id, e.to_id)
                                              AND c.changed_at BETWEEN e.changed_at - time_window AND e.changed_at + time_window
    )
    SELECT DISTINCT ON (r.change_id) r.change_id, r.relation, r.event_type, r.table_name, r.pk, r.changed_at, r.correlation_id
    FROM related r, e
    WHERE r.change_id <> e.change_id
      AND r.changed_at BETWEEN e.changed_at - time_window AND e.changed_at + time_window
    ORDER BY r.change_id, r.rank
$$;

-- Groups of changes made by one transaction, labelled as seed 000's correlation processor labels
-- them: transaction_pattern (several changes in one transaction), cascade_operation (node and
-- relationship changes together).
CREATE FUNCTION correlation_patterns(since timestamptz DEFAULT now() - interval '1 hour', until timestamptz DEFAULT 'infinity')
RETURNS TABLE (correlation_id xid8, changes bigint, first_change bigint, last_change bigint, started timestamptz,
               node_changes bigint, relationship_changes bigint, patterns text[])
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT correlation_id, count(*), min(change_id), max(change_id), min(changed_at),
           count(*) FILTER (WHERE event_type LIKE 'node%'),
           count(*) FILTER (WHERE event_type LIKE 'relationship%'),
           array_remove(ARRAY[
               'transaction_pattern',
               CASE WHEN count(*) FILTER (WHERE event_type LIKE 'node%') > 0
                     AND count(*) FILTER (WHERE event_type LIKE 'relationship%') > 0 THEN 'cascade_operation' END], NULL)
    FROM @extschema@.change_log
    WHERE changed_at >= since AND changed_at < until
    GROUP BY correlation_id
    HAVING count(*) > 1
    ORDER BY min(change_id)
$$;

-- Seed 003's real_time_stats: totals, volume, average, active keys and the top keys by amount in
-- the window, which is whole minutes from the minute that holds now() - time_window. Answered
-- from the shared rollups (source 'memory') when they are exact for the window, in time
-- proportional to the keys active in it, not its rows; otherwise from the rows (source 'rows').
CREATE FUNCTION realtime_stats(relation regclass, time_window interval DEFAULT '5 minutes', top integer DEFAULT 10)
RETURNS TABLE (window_start timestamptz, total_transactions bigint, total_volume float8, avg_transaction float8,
               min_amount float8, max_amount float8, active_users bigint, top_users jsonb, source text)
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    since timestamptz := date_bin('1 minute', now() - time_window, '2000-01-01 00:00:00+00');
    w @extschema@.watches;
BEGIN
    SELECT * INTO w FROM @extschema@.watches WHERE relid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched', relation USING ERRCODE = '55000',
            HINT = 'realtime_stats reads what the monitor keeps for watched tables: cep.watch it first.';
    END IF;
    IF top < 0 THEN
        RAISE EXCEPTION 'top must be 0 or more, not %', top USING ERRCODE = '22023';
    END IF;
    IF w.rollups THEN
        RETURN QUERY SELECT * FROM @extschema@.rollup_window(relation, since, top);
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH k AS (
             SELECT %3$I::text AS key, count(*) AS n, coalesce(sum(%2$I), 0)::float8 AS total,
                    min(%2$I)::float8 AS lo, max(%2$I)::float8 AS hi
             FROM %4$s WHERE %1$I >= $1 AND %3$I IS NOT NULL GROUP BY 1)
         SELECT $1, coalesce(sum(n), 0)::bigint, coalesce(sum(total), 0)::float8, sum(total) / nullif(sum(n), 0)::float8,
                min(lo), max(hi), count(*),
                coalesce((SELECT jsonb_agg(jsonb_build_object(''key'', x.key, ''transactions'', x.n, ''total'', x.total,
                                                              ''avg'', x.total / x.n) ORDER BY x.total DESC, x.key COLLATE "C")
                          FROM (SELECT * FROM k ORDER BY k.total DESC, k.key COLLATE "C" LIMIT $2) x), ''[]''::jsonb),
                ''rows''::text
         FROM k',
        w.time_column, w.amount_column, w.key_column, relation) USING since, top;
END $$;

-- Puts a watched table's rollups in memory, read from its rows from `since` on (whole minutes):
-- after a restart, after UPDATEs or DELETEs (which the rollups do not follow), or for rows loaded
-- before the table was watched. Memory keeps the last hour of totals and the last minutes per key,
-- so no more than that is read. Returns the minutes read.
CREATE FUNCTION rollup_rebuild(relation regclass, since timestamptz DEFAULT '-infinity')
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w @extschema@.watches;
    origin constant timestamptz := '2000-01-01 00:00:00+00';
    this_minute constant timestamptz := date_bin('1 minute', now(), '2000-01-01 00:00:00+00');
    totals_since timestamptz;
    keys_since timestamptz;
    m timestamptz[]; c int8[]; s float8[]; lo float8[]; hi float8[];
    km timestamptz[]; k text[]; kc int8[]; ks float8[];
BEGIN
    SELECT * INTO w FROM @extschema@.watches WHERE relid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched', relation USING ERRCODE = '55000', HINT = 'Watch it with cep.watch first.';
    ELSIF NOT w.rollups THEN
        RAISE EXCEPTION 'the monitor keeps no rollups for %', relation USING ERRCODE = '55000',
            HINT = 'Turn them on with cep.watch_rollups first.';
    ELSIF current_setting('transaction_isolation') <> 'read committed' THEN
        -- An older snapshot would miss rows committed before the lock below.
        RAISE EXCEPTION 'cep.rollup_rebuild needs READ COMMITTED, not %', upper(current_setting('transaction_isolation'))
            USING ERRCODE = '25000';
    END IF;
    -- No rows commit while the rollups are read from them: INSERTs wait until this commits.
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', relation);
    totals_since := greatest(CASE WHEN isfinite(since) THEN date_bin('1 minute', since, origin) END,
                             this_minute - interval '63 minutes');
    keys_since := greatest(totals_since, this_minute - interval '7 minutes');
    EXECUTE format(
        'SELECT array_agg(m ORDER BY m), array_agg(n ORDER BY m), array_agg(s ORDER BY m), array_agg(lo ORDER BY m),
                array_agg(hi ORDER BY m)
         FROM (SELECT date_bin(''1 minute'', %1$I::timestamptz, $2) AS m, count(*) AS n, coalesce(sum(%2$I), 0)::float8 AS s,
                      min(%2$I)::float8 AS lo, max(%2$I)::float8 AS hi
               FROM %4$s WHERE %1$I >= $1 AND %3$I IS NOT NULL GROUP BY 1) g',
        w.time_column, w.amount_column, w.key_column, relation) USING totals_since, origin INTO m, c, s, lo, hi;
    EXECUTE format(
        'SELECT array_agg(m), array_agg(k), array_agg(n), array_agg(s)
         FROM (SELECT date_bin(''1 minute'', %1$I::timestamptz, $2) AS m, %3$I::text AS k, count(*) AS n,
                      coalesce(sum(%2$I), 0)::float8 AS s
               FROM %4$s WHERE %1$I >= $1 AND %3$I IS NOT NULL GROUP BY 1, 2) g',
        w.time_column, w.amount_column, w.key_column, relation) USING keys_since, origin INTO km, k, kc, ks;
    PERFORM @extschema@.rollup_load(relation, totals_since, keys_since, coalesce(m, '{}'), coalesce(c, '{}'),
        coalesce(s, '{}'), coalesce(lo, '{}'), coalesce(hi, '{}'), coalesce(km, '{}'), coalesce(k, '{}'),
        coalesce(kc, '{}'), coalesce(ks, '{}'));
    RETURN coalesce(cardinality(m), 0);
END $$;

-- A watched table's rows from `since` on, and their mean age in seconds (from the middle of each
-- minute, as the rollups see them): from memory when it is exact, otherwise from the rows.
CREATE FUNCTION rollup_activity(relation regclass, since timestamptz, OUT row_count bigint, OUT avg_delay_s float8)
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w @extschema@.watches;
BEGIN
    SELECT * INTO w FROM @extschema@.watches WHERE relid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched', relation USING ERRCODE = '55000', HINT = 'Watch it with cep.watch first.';
    END IF;
    IF w.rollups THEN
        SELECT t.row_count, t.avg_delay_s INTO row_count, avg_delay_s FROM @extschema@.rollup_totals(relation, since) t;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    EXECUTE format(
        'SELECT count(*), avg(extract(epoch FROM now() - (date_bin(''1 minute'', %1$I::timestamptz, ''2000-01-01 00:00:00+00'')
                                                       + interval ''30 seconds'')))::float8
         FROM %3$s WHERE %1$I >= $1 AND %2$I IS NOT NULL',
        w.time_column, w.key_column, relation) USING since INTO row_count, avg_delay_s;
END $$;

-- What seed 003's streaming_performance view wanted, for each watched table: rows in the last
-- minute and hour, active keys and the average delay between a row's time and now (from the
-- rollups, or the rows), the monitor's own counters (cep.stats()), and the notification queue's
-- usage.
CREATE VIEW streaming_performance AS
    SELECT w.relid::regclass::text AS table_name,
           last_minute.row_count AS rows_last_minute,
           last_hour.row_count AS rows_last_hour,
           (SELECT r.active_users FROM @extschema@.realtime_stats(w.relid, interval '5 minutes', 0) r) AS active_keys_last_5_minutes,
           last_hour.avg_delay_s AS avg_processing_delay_s,
           coalesce(s.rows_seen, 0) AS monitor_rows_seen,
           coalesce(s.total_ms, 0) AS monitor_total_ms,
           s.total_ms / nullif(s.rows_seen, 0) AS monitor_ms_per_row,
           s.max_ms AS monitor_max_ms,
           coalesce(s.alerts, 0) AS alerts,
           w.channel,
           coalesce(s.notifications, 0) AS notifications_sent,
           coalesce(s.rows_blocked, 0) AS rows_blocked,
           coalesce(s.rule_errors, 0) AS rule_errors,
           pg_notification_queue_usage() AS notification_queue_usage
    FROM @extschema@.watches w
    CROSS JOIN LATERAL @extschema@.rollup_activity(w.relid, date_bin('1 minute', now() - interval '1 minute', '2000-01-01 00:00:00+00')) last_minute
    CROSS JOIN LATERAL @extschema@.rollup_activity(w.relid, date_bin('1 minute', now() - interval '1 hour', '2000-01-01 00:00:00+00')) last_hour
    LEFT JOIN @extschema@.stats() s ON to_regclass(s.table_name) = w.relid;
