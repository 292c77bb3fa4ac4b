-- pg_cep bootstrap: the tables every later object builds on.

-- pg_cep's functions run as their callers and its triggers as the writers of watched tables, all
-- resolving names in this schema: a schema that another role created first, and may have filled
-- or may change later, would let that role run code as them. Refuse it.
DO $$
DECLARE
    owner name := (SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace WHERE nspname = '@extschema@');
BEGIN
    IF owner IS DISTINCT FROM current_user THEN
        RAISE EXCEPTION 'schema @extschema@ already exists and is owned by %, not by %', owner, current_user
            USING ERRCODE = '42501',
                  HINT = 'pg_cep installs into its own schema. Check what the schema holds, then drop it or ALTER SCHEMA @extschema@ OWNER TO the installing role.';
    END IF;
END $$;

-- Risk rules, with the seed's columns plus what a rule's lifecycle needs.
CREATE TABLE risk_rules (
    rule_id        serial PRIMARY KEY,
    rule_name      varchar(100) NOT NULL,
    rule_type      varchar(50)  NOT NULL,   -- 'threshold', 'pattern', 'anomaly'
    rule_condition jsonb        NOT NULL,
    risk_score     float        NOT NULL,
    is_active      boolean      NOT NULL DEFAULT true,
    created_at     timestamptz  NOT NULL DEFAULT now(),
    updated_at     timestamptz  NOT NULL DEFAULT now(),
    version        integer      NOT NULL DEFAULT 1
);
COMMENT ON TABLE risk_rules IS 'pg_cep risk rules; checked on write, compiled once per backend';
SELECT pg_catalog.pg_extension_config_dump('risk_rules', '');
SELECT pg_catalog.pg_extension_config_dump('risk_rules_rule_id_seq', '');

-- Tables registered with cep.watch, and how their columns map.
-- relid is an oid rather than regclass so that pg_upgrade accepts the table.
CREATE TABLE watches (
    relid           oid         PRIMARY KEY,
    key_column      name        NOT NULL,
    amount_column   name        NOT NULL,
    time_column     name        NOT NULL,
    location_column name,
    pk_column       name,
    channel         text        NOT NULL DEFAULT 'transaction_alerts',
    alert_level     text        NOT NULL DEFAULT 'medium' CHECK (alert_level IN ('low', 'medium', 'high')),
    block_at        float8,
    on_block        text        NOT NULL DEFAULT 'error' CHECK (on_block IN ('error', 'skip')),
    log_assessments text        NOT NULL DEFAULT 'none' CHECK (log_assessments IN ('none', 'alerts', 'all')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE watches IS 'pg_cep watched tables (see cep.watch)';
SELECT pg_catalog.pg_extension_config_dump('watches', '');

-- Explainable alerts written by the monitor: what fired, with which versions, and why.
CREATE TABLE alerts (
    alert_id   bigserial   PRIMARY KEY,
    relid      oid         NOT NULL,
    table_name text        NOT NULL,
    key        text        NOT NULL,
    row_pk     text,
    score      float8      NOT NULL,
    level      text        NOT NULL,
    action     text        NOT NULL DEFAULT 'alert',
    rules      jsonb       NOT NULL,
    event_time timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_table_key_idx ON alerts (relid, key, created_at);
COMMENT ON TABLE alerts IS 'pg_cep alerts; rules holds each fired rule with its version and evidence';

-- Every assessment the monitor made, as the seed's RealTimeRiskMonitor.log_risk_assessment
-- records them, when the table is watched with log_assessments => 'alerts' or 'all'.
CREATE TABLE risk_assessments (
    assessment_id   bigserial   PRIMARY KEY,
    relid           oid         NOT NULL,
    table_name      text        NOT NULL,
    key             text        NOT NULL,
    row_pk          text,
    score           float8      NOT NULL,
    level           text        NOT NULL,
    triggered_rules integer[]   NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- A consumer that was away catches up from here: alerts after the last id it saw, oldest first.
CREATE FUNCTION alerts_since(last_id bigint, max_rows integer DEFAULT 1000)
RETURNS SETOF alerts LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM @extschema@.alerts WHERE alert_id > last_id ORDER BY alert_id LIMIT max_rows
$$;

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
