-- pg_cep demo: the seed's rules, a watched table, and a stream of transactions.
-- Safe to run again: objects are created once, and each run adds a fresh stream.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cep;
ALTER EXTENSION pg_cep UPDATE;  -- a demo database made by an older pg_cep moves forward

CREATE TABLE IF NOT EXISTS transactions (
    id         bigserial PRIMARY KEY,
    user_id    integer       NOT NULL,
    amount     numeric(12,2) NOT NULL,
    location   text,
    created_at timestamptz   NOT NULL DEFAULT now()
);

-- Seed 003's four rules, verbatim, and an anomaly rule; only when no rules exist yet.
INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score)
SELECT * FROM (VALUES
    ('高频交易检测', 'threshold', '{"metric": "transaction_count", "operator": ">", "value": 10, "window": "1_hour"}'::jsonb, 0.8),
    ('大额交易检测', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 0.6),
    ('异常时间交易', 'pattern', '{"pattern": "night_transaction", "time_range": ["22:00", "06:00"], "timezone": "Asia/Shanghai"}', 0.4),
    ('异地登录检测', 'pattern', '{"pattern": "location_change", "time_window": "5_minutes"}', 0.7),
    ('amount spike', 'anomaly', '{"method": "zscore", "threshold": 3, "window": "24 hours", "min_samples": 5}', 0.5)
) AS r(rule_name, rule_type, rule_condition, risk_score)
WHERE NOT EXISTS (SELECT 1 FROM cep.risk_rules);

SELECT cep.watch('transactions');
-- Memory's rollups of the (empty) table, exact from now on: cep.realtime_stats answers from them.
SELECT cep.rollup_rebuild('transactions');

-- The stream: ordinary spending, then a burst, a large payment, a city hop and a spike.
INSERT INTO transactions (user_id, amount, location, created_at)
SELECT 100 + g % 20, 50 + (g * 37) % 200, 'Shanghai', now() - make_interval(mins => 120 - g)
FROM generate_series(1, 120) g;
INSERT INTO transactions (user_id, amount, location, created_at)
SELECT 7, 120, 'Shanghai', now() - make_interval(secs => 12 - g) FROM generate_series(1, 12) g;
INSERT INTO transactions (user_id, amount, location) VALUES (8, 25000, 'Shanghai');
INSERT INTO transactions (user_id, amount, location) VALUES (9, 80, 'Shanghai');
INSERT INTO transactions (user_id, amount, location) VALUES (9, 95, 'Beijing');
INSERT INTO transactions (user_id, amount, location) VALUES (101, 9000, 'Shanghai');

-- Seed 003's login -> browse -> purchase, matched live per user within 30 minutes.
CREATE TABLE IF NOT EXISTS user_events (
    id         bigserial PRIMARY KEY,
    user_id    integer NOT NULL,
    event_type text    NOT NULL,
    amount     numeric(12,2),
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT cep.define_pattern('checkout', 'user_events', 'user_id', 'created_at', 'login browse+ purchase',
    '{"login": {"event_type": "login"}, "browse": {"event_type": "browse"},
      "purchase": {"event_type": "purchase", "amount": {">": 0}}}',
    within => '30 minutes', channel => 'transaction_alerts')
WHERE NOT EXISTS (SELECT 1 FROM cep.patterns WHERE name = 'checkout');
INSERT INTO user_events (user_id, event_type, amount, created_at) VALUES
    (1, 'login', NULL, now() - interval '20 minutes'),
    (2, 'login', NULL, now() - interval '19 minutes'),
    (1, 'browse', NULL, now() - interval '15 minutes'),
    (1, 'browse', NULL, now() - interval '10 minutes');
INSERT INTO user_events (user_id, event_type, amount) VALUES (1, 'purchase', 99.50);
