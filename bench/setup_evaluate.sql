-- Data for the evaluate_risk_rules benchmark: 1M rows over the last 2 hours, 10k keys.
SET client_min_messages = warning;
DROP TABLE IF EXISTS transactions CASCADE;
DROP TABLE IF EXISTS risk_rules CASCADE;
DROP EXTENSION IF EXISTS pg_cep CASCADE;
CREATE EXTENSION pg_cep;
CREATE TABLE transactions (
    id         bigserial PRIMARY KEY,
    user_id    integer       NOT NULL,
    amount     numeric(12,2) NOT NULL,
    location   text,
    created_at timestamptz   NOT NULL
);
INSERT INTO transactions (user_id, amount, location, created_at)
SELECT (random() * 9999)::int,
       round((random() * 2000)::numeric, 2),
       (ARRAY['Shanghai', 'Beijing', 'Shenzhen', 'Hangzhou'])[1 + (random() * 3)::int],
       now() - random() * interval '2 hours'
FROM generate_series(1, 1000000);
-- cep.watch creates the covering index (user_id, created_at) INCLUDE (amount, location); both functions use it.

-- pg_cep: the seed's four rules.
INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
('高频交易检测', 'threshold', '{"metric": "transaction_count", "operator": ">", "value": 10, "window": "1_hour"}', 0.8),
('大额交易检测', 'threshold', '{"metric": "amount", "operator": ">", "value": 10000}', 0.6),
('异常时间交易', 'pattern', '{"pattern": "night_transaction", "time_range": ["22:00", "06:00"]}', 0.4),
('异地登录检测', 'pattern', '{"pattern": "location_change", "time_window": "5_minutes"}', 0.7);
SELECT cep.watch('transactions');

-- The PL/pgSQL baseline: seed 003's risk_rules table and evaluate_risk_rules, as written there.
CREATE TABLE risk_rules (
    rule_id SERIAL PRIMARY KEY,
    rule_name VARCHAR(100) NOT NULL,
    rule_type VARCHAR(50) NOT NULL,
    rule_condition JSONB NOT NULL,
    risk_score FLOAT NOT NULL,
    is_active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMP DEFAULT NOW()
);
INSERT INTO risk_rules (rule_name, rule_type, rule_condition, risk_score)
SELECT rule_name, rule_type, rule_condition, risk_score FROM cep.risk_rules ORDER BY rule_id;

CREATE OR REPLACE FUNCTION evaluate_risk_rules_plpgsql(
    p_user_id INTEGER, p_amount DECIMAL, p_location TEXT, p_timestamp TIMESTAMP
)
RETURNS TABLE(rule_id INTEGER, risk_score FLOAT, triggered BOOLEAN) AS $$
DECLARE
    rule_record RECORD;
    condition_met BOOLEAN;
    recent_count INTEGER;
BEGIN
    FOR rule_record IN SELECT * FROM risk_rules WHERE is_active = TRUE LOOP
        condition_met := FALSE;
        CASE rule_record.rule_type
            WHEN 'threshold' THEN
                IF rule_record.rule_condition->>'metric' = 'transaction_count' THEN
                    SELECT COUNT(*) INTO recent_count FROM transactions
                    WHERE user_id = p_user_id AND created_at >= NOW() - INTERVAL '1 hour';
                    condition_met := recent_count > (rule_record.rule_condition->>'value')::INTEGER;
                ELSIF rule_record.rule_condition->>'metric' = 'amount' THEN
                    condition_met := p_amount > (rule_record.rule_condition->>'value')::DECIMAL;
                END IF;
            WHEN 'pattern' THEN
                IF rule_record.rule_condition->>'pattern' = 'night_transaction' THEN
                    condition_met := EXTRACT(HOUR FROM p_timestamp) >= 22 OR EXTRACT(HOUR FROM p_timestamp) <= 6;
                ELSIF rule_record.rule_condition->>'pattern' = 'location_change' THEN
                    SELECT COUNT(*) INTO recent_count FROM transactions
                    WHERE user_id = p_user_id AND location != p_location
                      AND created_at >= p_timestamp - INTERVAL '5 minutes';
                    condition_met := recent_count > 0;
                END IF;
        END CASE;
        rule_id := rule_record.rule_id;
        risk_score := rule_record.risk_score;
        triggered := condition_met;
        RETURN NEXT;
    END LOOP;
END;
$$ LANGUAGE plpgsql;

VACUUM (FREEZE, ANALYZE);
