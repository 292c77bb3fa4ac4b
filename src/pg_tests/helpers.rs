//! What several test files share: running SQL, reading one value, and the seed's rules and table.

use pgrx::prelude::*;

pub(super) fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub(super) fn one<T: IntoDatum + FromDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs `stmt` in a subtransaction: "ok", or "SQLSTATE: message".
pub(super) fn outcome(stmt: &str) -> String {
    run("CREATE OR REPLACE FUNCTION pg_temp.outcome(stmt text) RETURNS text LANGUAGE plpgsql AS $$ \
             BEGIN EXECUTE stmt; RETURN 'ok'; \
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$");
    Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[stmt.into()]).unwrap().unwrap()
}

pub(super) const SEED_RULES: &str = r#"
        INSERT INTO cep.risk_rules (rule_name, rule_type, rule_condition, risk_score) VALUES
        ('高频交易检测', 'threshold',
         '{"metric": "transaction_count", "operator": ">", "value": 10, "window": "1_hour"}', 0.8),
        ('大额交易检测', 'threshold',
         '{"metric": "amount", "operator": ">", "value": 10000}', 0.6),
        ('异常时间交易', 'pattern',
         '{"pattern": "night_transaction", "time_range": ["22:00", "06:00"]}', 0.4),
        ('异地登录检测', 'pattern',
         '{"pattern": "location_change", "time_window": "5_minutes"}', 0.7)"#;

/// A transactions table like the seed's, watched, with the seed's rules, in a UTC session.
pub(super) fn seed_setup() {
    run("SET TimeZone = 'UTC'");
    // Each test rolls back, but sequences do not: number the seed's rules 1 to 4 every time.
    run("ALTER SEQUENCE cep.risk_rules_rule_id_seq RESTART");
    run("CREATE TABLE transactions (id bigserial PRIMARY KEY, user_id integer NOT NULL, \
             amount numeric(12,2) NOT NULL, location text, created_at timestamptz NOT NULL DEFAULT now(), note text)");
    run(SEED_RULES);
    run("SELECT cep.watch('transactions')");
}

/// `n` rows for `user_id`, one a minute, ending at `last` (inclusive), in `location`.
pub(super) fn add_rows(user_id: i32, n: i32, last: &str, location: &str) {
    run(&format!(
        "INSERT INTO transactions (user_id, amount, location, created_at) \
             SELECT {user_id}, 100, '{location}', timestamptz '{last}' - make_interval(mins => g) \
             FROM generate_series(0, {n} - 1) g"
    ));
}

pub(super) fn triggered(sql: &str) -> Vec<i32> {
    let mut v = Vec::new();
    Spi::connect(|c| {
        for row in c.select(sql, None, &[]).unwrap() {
            if row.get::<bool>(3).unwrap().unwrap() {
                v.push(row.get::<i32>(1).unwrap().unwrap());
            }
        }
    });
    v
}

/// A monthly-partitioned transactions table, empty, in a UTC session.
pub(super) fn partitioned_setup(name: &str) {
    run("SET TimeZone = 'UTC'");
    run(&format!(
        "CREATE TABLE {name} (id bigserial, user_id integer NOT NULL, amount numeric(12,2) NOT NULL, \
             location text, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"
    ));
}

/// Rows in pg_cep's configuration tables, to show a refused call wrote nothing.
pub(super) fn configured() -> i64 {
    one::<i64>(
        "SELECT (SELECT count(*) FROM cep.watches) + (SELECT count(*) FROM cep.captures) + (SELECT count(*) FROM cep.patterns)
                  + (SELECT count(*) FROM cep.partition_config WHERE parent <> 'cep.change_log'::regclass)",
    )
    .unwrap()
}
