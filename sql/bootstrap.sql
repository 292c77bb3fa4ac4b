-- pg_cep bootstrap: the tables every later object builds on.

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
