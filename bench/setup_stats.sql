-- 10M transactions over the last 24 hours for 100k users, watched (with no rules: only the
-- rollups matter here), rollups rebuilt from the rows into memory; and seed 003's real_time_stats view.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cep;
DROP VIEW IF EXISTS real_time_stats;
DROP TABLE IF EXISTS st_tx;
CREATE TABLE st_tx (id bigserial PRIMARY KEY, user_id integer NOT NULL, amount numeric(12,2) NOT NULL,
                    location text, created_at timestamptz NOT NULL);
INSERT INTO st_tx (user_id, amount, location, created_at)
SELECT (random() * 99999)::int, round((1 + random() * 999)::numeric, 2), 'L' || (g % 50),
       now() - make_interval(secs => random() * 86400)
FROM generate_series(1, 10000000) g;
CREATE INDEX ON st_tx (created_at);
ANALYZE st_tx;
SELECT cep.watch('st_tx', create_index => false);
SELECT cep.rollup_rebuild('st_tx');

-- Seed 003's view, verbatim but for the table's name.
CREATE VIEW real_time_stats AS
WITH recent_transactions AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at DESC) as rn
    FROM st_tx WHERE created_at >= NOW() - INTERVAL '5 minutes'
),
user_stats AS (
    SELECT user_id, COUNT(*) as transaction_count, SUM(amount) as total_amount, AVG(amount) as avg_amount,
           MAX(amount) as max_amount, MIN(created_at) as first_transaction, MAX(created_at) as last_transaction
    FROM recent_transactions GROUP BY user_id
),
global_stats AS (
    SELECT COUNT(*) as total_transactions, SUM(amount) as total_volume, AVG(amount) as avg_transaction,
           COUNT(DISTINCT user_id) as active_users
    FROM recent_transactions
)
SELECT gs.*, us.user_id, us.transaction_count as user_transactions, us.total_amount as user_total, us.avg_amount as user_avg
FROM global_stats gs CROSS JOIN user_stats us ORDER BY us.total_amount DESC;
