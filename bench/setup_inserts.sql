-- Data for the insert-path benchmark. psql variables: rows, keys, span (an interval), count_limit, rollups.
-- Four tables with the same rows: bare, watched by pg_cep, with a seed-style PL/pgSQL trigger, and
-- with a statement trigger that does nothing (the floor of the monitor's trigger kind).
SET client_min_messages = warning;
DROP TABLE IF EXISTS tx_bare, tx_cep, tx_plpgsql, tx_floor, plpgsql_alerts CASCADE;
DROP FUNCTION IF EXISTS plpgsql_monitor();
DROP FUNCTION IF EXISTS empty_statement_trigger();
DROP EXTENSION IF EXISTS pg_cep CASCADE;
CREATE EXTENSION pg_cep;
SELECT cep.stats_reset();

CREATE TABLE tx_bare (
    id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric(12,2) NOT NULL,
    location text, created_at timestamptz NOT NULL);
-- Each key has a home location; about 1% of rows are large, 0.01% come from elsewhere.
INSERT INTO tx_bare (user_id, amount, location, created_at)
SELECT k, CASE WHEN random() < 0.01 THEN 20000 ELSE round((1 + random() * 999)::numeric, 2) END,
       CASE WHEN random() < 0.0001 THEN 'X' ELSE 'L' || (k % 50) END,
       now() - random() * :'span'::interval
FROM (SELECT (random() * (:keys - 1))::int AS k FROM generate_series(1, :rows)) s;
CREATE TABLE tx_cep (LIKE tx_bare INCLUDING ALL);
CREATE TABLE tx_plpgsql (LIKE tx_bare INCLUDING ALL);
CREATE TABLE tx_floor (LIKE tx_bare INCLUDING ALL);
INSERT INTO tx_cep SELECT * FROM tx_bare;
INSERT INTO tx_plpgsql SELECT * FROM tx_bare;
INSERT INTO tx_floor SELECT * FROM tx_bare;
SELECT setval(pg_get_serial_sequence('tx_bare', 'id'), :rows + 1);
-- The same index on every table: the one cep.watch creates.
CREATE INDEX ON tx_bare (user_id, created_at) INCLUDE (amount, location);
CREATE INDEX ON tx_plpgsql (user_id, created_at) INCLUDE (amount, location);
CREATE INDEX ON tx_floor (user_id, created_at) INCLUDE (amount, location);
-- The trigger cep.watch makes, with an empty body: what any statement trigger that reads its rows
-- costs before it does anything.
CREATE FUNCTION empty_statement_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER empty_statement_trigger AFTER INSERT ON tx_floor REFERENCING NEW TABLE AS cep_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION empty_statement_trigger();

-- Seed 003's four rules and an anomaly rule. count_limit replaces the seed's 10 so that the
-- benchmark's own inserts do not make every busy key alert; about 1% of rows alert.
INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
('high frequency', 'threshold', jsonb_build_object('metric', 'transaction_count', 'operator', '>', 'value', :count_limit, 'window', '1_hour'), 0.8),
('large amount', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 0.6),
('night', 'pattern', '{"pattern": "night_transaction", "time_range": ["22:00", "06:00"]}', 0.4),
('location change', 'pattern', '{"pattern": "location_change", "time_window": "5_minutes"}', 0.7),
('spike', 'anomaly', '{"method": "zscore", "threshold": 5, "window": "24 hours", "min_samples": 5}', 0.5);
-- Rollups off unless psql variable rollups is true: most cases measure the monitor alone.
SELECT cep.watch('tx_cep', channel => 'bench_alerts');
SELECT cep.watch_rollups('tx_cep', :rollups);

-- The same rules in a straightforward PL/pgSQL trigger, in the seed's style: one query per rule.
CREATE TABLE plpgsql_alerts (
    id bigserial PRIMARY KEY, user_id integer, transaction_id bigint, risk_score float8,
    message text, created_at timestamptz DEFAULT now());
CREATE FUNCTION plpgsql_monitor() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    score float8 := 0; n integer; others integer; mean float8; sd float8;
BEGIN
    SELECT count(*) INTO n FROM tx_plpgsql
    WHERE user_id = NEW.user_id AND created_at >= NEW.created_at - interval '1 hour' AND created_at <= NEW.created_at;
    IF n > __COUNT_LIMIT__ THEN score := score + 0.8; END IF;
    IF NEW.amount > 10000 THEN score := score + 0.6; END IF;
    IF extract(hour FROM NEW.created_at) >= 22 OR extract(hour FROM NEW.created_at) < 6 THEN score := score + 0.4; END IF;
    SELECT count(*) INTO others FROM tx_plpgsql
    WHERE user_id = NEW.user_id AND location <> NEW.location
      AND created_at >= NEW.created_at - interval '5 minutes' AND created_at <= NEW.created_at;
    IF others > 0 THEN score := score + 0.7; END IF;
    SELECT count(*), avg(amount), stddev_samp(amount) INTO n, mean, sd FROM tx_plpgsql
    WHERE user_id = NEW.user_id AND created_at >= NEW.created_at - interval '24 hours'
      AND created_at <= NEW.created_at AND id <> NEW.id;
    IF n >= 5 AND sd > 0 AND (NEW.amount - mean) / sd > 5 THEN score := score + 0.5; END IF;
    IF score >= 0.4 THEN
        INSERT INTO plpgsql_alerts (user_id, transaction_id, risk_score, message)
        VALUES (NEW.user_id, NEW.id, score, format('High risk transaction detected: User %s, Amount %s', NEW.user_id, NEW.amount));
        PERFORM pg_notify('plpgsql_alerts', json_build_object('user_id', NEW.user_id, 'id', NEW.id, 'score', score)::text);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER plpgsql_monitor AFTER INSERT ON tx_plpgsql FOR EACH ROW EXECUTE FUNCTION plpgsql_monitor();
VACUUM (FREEZE, ANALYZE) tx_bare, tx_cep, tx_plpgsql, tx_floor;
