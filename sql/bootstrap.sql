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
    channel         text        NOT NULL DEFAULT 'transaction_alerts',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE watches IS 'pg_cep watched tables (see cep.watch)';
SELECT pg_catalog.pg_extension_config_dump('watches', '');
