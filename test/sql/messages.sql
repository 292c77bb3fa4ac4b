-- What users read: pg_cep's errors and WARNINGs (and no NOTICE about its internals), and the
-- layout of its tables. Golden output in test/expected; `make test` runs it with pg_regress.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = notice;
SET TimeZone = 'UTC';
CREATE EXTENSION pg_cep;

-- Rules are checked when written: nothing is stored.
INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
VALUES ('bad', 'threshold', '{"metric": "transaction_count", "operator": "=>", "value": 10, "window": "1_hour"}', 0.5);
INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
VALUES ('bad', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 1.5);
SELECT count(*) AS rules FROM cep.risk_rules;
SELECT cep.validate_rule('{"rule_type": "pattern", "rule_condition": {"pattern": "night_transaction", "time_range": ["25:00", "06:00"]}, "risk_score": 0.4}');

-- Watching a table: its columns are checked, and a watch is written once.
CREATE TABLE transactions (id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric(12,2) NOT NULL,
                           location text, created_at timestamptz NOT NULL DEFAULT now(), note text);
SELECT cep.watch('transactions', key_column => 'customer');
SELECT cep.watch('transactions', amount_column => 'note');
SELECT cep.watch('transactions', alert_level => 'severe');
SELECT cep.watch('no_such_table');
SELECT cep.watch('transactions', channel => repeat('c', 64));
SELECT count(*) AS watches FROM cep.watches;
SELECT cep.watch('transactions');
SELECT count(*) AS watches FROM cep.watches;

-- Blocking: the row is refused with its own SQLSTATE, the rules that fired and what to do.
INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
VALUES ('large amount', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 0.6);
SELECT cep.alter_watch('transactions', block_at => 0.5) ->> 'block_at' AS block_at;
INSERT INTO transactions (user_id, amount, location, created_at) VALUES (8, 25000, 'Shanghai', '2026-01-15 12:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS stored FROM transactions;

-- Patterns: syntax errors point at the position; options are checked.
CREATE TABLE user_events (id bigserial PRIMARY KEY, user_id int, event_type text, amount numeric, created_at timestamptz DEFAULT now());
SELECT cep.define_pattern('p', 'user_events', 'user_id', 'created_at', 'login (browse+ purchase', '{}');
SELECT cep.define_pattern('p', 'user_events', 'user_id', 'created_at', 'login browse+', '{"buy": {"event_type": "purchase"}}');
SELECT cep.define_pattern('p', 'user_events', 'user_id', 'created_at', 'login browse+', '{}', contiguity => 'sometimes');
SELECT cep.define_pattern('p', 'user_events', 'user_id', 'created_at', 'login browse+', '{}', emit => 'final');
SELECT cep.define_pattern('p', 'user_events', 'user_id', 'created_at', 'login browse+?', '{}');
SELECT cep.define_pattern('p', 'user_events', 'user_id', 'created_at', 'login browse+', '{}', after_match => 'to_last browse');
SELECT cep.define_pattern('p', 'user_events', 'user_id', 'created_at', 'reset !login', '{}');
SELECT cep.match_recognize('user_events', 'user_id', 'no_such_column', 'a', '{}');
SELECT count(*) AS patterns FROM cep.patterns;

-- A key over max_partials: the WARNING, and the flag on its matches.
SELECT cep.define_pattern('many', 'user_events', 'user_id', 'created_at', 'a b', '{"a": {"event_type": "a"}, "b": {"event_type": "b"}}',
                          max_partials => 2) AS pattern_id;
INSERT INTO user_events (user_id, event_type, created_at) SELECT 1, 'a', timestamptz '2026-01-15 12:00+00' + g * interval '1 second'
FROM generate_series(1, 4) g;
INSERT INTO user_events (user_id, event_type, created_at) VALUES (1, 'b', '2026-01-15 12:01+00');
SELECT key, rows, dropped_partials FROM cep.pattern_matches ORDER BY match_id;

-- pg_cep's own tables, as \d shows them.
\d cep.alerts
\d cep.patterns
\d cep.pattern_matches
