//! Patterns: `define_pattern` (live matching, final emission, absences) and `match_recognize`.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

    const CHECKOUT_DEFINE: &str =
        r#"{"login": {"event_type": "login"}, "browse": {"event_type": "browse"}, "purchase": {"event_type": "purchase", "amount": {">": 0}}}"#;

    fn events_setup() {
        run("SET TimeZone = 'UTC'");
        run("CREATE TABLE user_events (id bigserial PRIMARY KEY, user_id integer NOT NULL, event_type text NOT NULL, \
             amount numeric, location text, created_at timestamptz NOT NULL DEFAULT now())");
    }

    fn event(user: i32, kind: &str, amount: i32, minutes_ago: i32) -> String {
        format!("INSERT INTO user_events (user_id, event_type, amount, created_at) VALUES ({user}, '{kind}', {amount}, now() - make_interval(mins => {minutes_ago}))")
    }

    #[pg_test]
    fn login_browse_purchase_is_matched_live_per_user() {
        events_setup();
        run(&format!("SELECT cep.define_pattern('checkout', 'user_events', 'user_id', 'created_at', 'login browse+ purchase', '{CHECKOUT_DEFINE}', within => '30 minutes')"));
        // User 1 completes in 20 minutes; user 2's events interleave but never purchase; user 3 is too slow.
        for sql in [
            event(1, "login", 0, 50),
            event(2, "login", 0, 49),
            event(1, "browse", 0, 45),
            event(2, "browse", 0, 44),
            event(1, "browse", 0, 40),
            event(3, "login", 0, 45),
            event(3, "browse", 0, 30),
            event(1, "purchase", 99, 30),
            event(3, "purchase", 10, 1),
        ] {
            run(&sql);
        }
        assert_eq!(
            one::<String>("SELECT string_agg(key || ' ' || rows::text || ' ' || (match_end - match_start)::text, '; ') FROM cep.pattern_matches")
                .unwrap(),
            r#"1 {"login": [1], "browse": [3, 5], "purchase": [8]} 00:20:00"#
        );
        // Users 2 and 3 still have partial runs; user 1's ended with the match.
        assert_eq!(one::<String>("SELECT string_agg(key, ',' ORDER BY key) FROM cep.pattern_state"), Some("2".into()));
        // A multi-row INSERT is one statement: its rows are taken in time order per key.
        run("INSERT INTO user_events (user_id, event_type, amount, created_at) VALUES \
             (4, 'purchase', 5, now()), (4, 'browse', 0, now() - interval '1 minute'), (4, 'login', 0, now() - interval '2 minutes')");
        assert_eq!(
            one::<String>("SELECT rows::text FROM cep.pattern_matches WHERE key = '4'"),
            Some(r#"{"login": [12], "browse": [11], "purchase": [10]}"#.into())
        );
    }

    /// Live patterns emit eagerly; with `strict` contiguity `cep.match_recognize` gives the
    /// standard's preferred matches instead (see `match_recognize_with_strict_contiguity_...`).
    #[pg_test]
    fn live_matches_equal_match_recognize_over_the_same_rows() {
        events_setup();
        let patterns = [
            ("p_next", "a b+ c", "skip_till_next", "past_last_row"),
            ("p_any", "a b+ c", "skip_till_any", "to_next_row"),
            ("p_absent", "a !c b", "skip_till_next", "to_next_row"),
        ];
        let define = r#"{"a": {"event_type": "login"}, "b": {"event_type": "browse", "amount": {">": "PREV.amount"}}, "c": {"event_type": {"in": ["purchase", "logout"]}}}"#;
        for (name, pattern, contiguity, after) in patterns {
            run(&format!("SELECT cep.define_pattern('{name}', 'user_events', 'user_id', 'created_at', '{pattern}', '{define}', within => '1 hour', contiguity => '{contiguity}', after_match => '{after}')"));
        }
        // Random events, single rows and batches, some with equal times.
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let kinds = ["login", "browse", "browse", "purchase", "logout"];
        let mut minute = 600i64;
        for _ in 0..60 {
            let n = 1 + next(4);
            let values: Vec<String> = (0..n)
                .map(|_| {
                    minute -= next(3) as i64;
                    format!("({}, '{}', {}, now() - make_interval(mins => {minute}))", next(3), kinds[next(5) as usize], next(100))
                })
                .collect();
            run(&format!("INSERT INTO user_events (user_id, event_type, amount, created_at) VALUES {}", values.join(", ")));
        }
        for (name, pattern, contiguity, after) in patterns {
            let live = one::<String>(&format!(
                "SELECT coalesce(string_agg(key || rows::text, ';' ORDER BY key, match_end, rows::text), '') FROM cep.pattern_matches WHERE pattern_name = '{name}'"
            ))
            .unwrap();
            let history = one::<String>(&format!(
                "SELECT coalesce(string_agg(key || rows::text, ';' ORDER BY key, match_end, rows::text), '') FROM cep.match_recognize('user_events', 'user_id', 'created_at', \
                 '{pattern}', '{define}', within => '1 hour', contiguity => '{contiguity}', after_match => '{after}')"
            ))
            .unwrap();
            assert_eq!(live, history, "{name}");
            assert!(!live.is_empty(), "{name} found matches");
        }
        // rows_per_match => 'all' lists each matched row with its symbol (CLASSIFIER).
        let classified = one::<i64>(&format!(
            "SELECT count(*) FROM cep.match_recognize('user_events', 'user_id', 'created_at', 'a b+ c', '{define}', within => '1 hour', rows_per_match => 'all') \
             WHERE symbol IN ('a', 'b', 'c') AND row_id IS NOT NULL"
        ))
        .unwrap();
        let ids =
            one::<i64>("SELECT sum(jsonb_array_length(v))::bigint FROM cep.pattern_matches, jsonb_each(rows) e(k, v) WHERE pattern_name = 'p_next'")
                .unwrap();
        assert_eq!(classified, ids);
    }

    #[pg_test]
    fn match_recognize_with_strict_contiguity_gives_the_standards_preferred_matches() {
        run("CREATE TABLE ticker (id int PRIMARY KEY, symbol text, price int, ts timestamptz)");
        // Oracle's ACME ticker, 1 to 20 April 2011, and a second symbol rising throughout.
        run("INSERT INTO ticker SELECT d, 'ACME', (ARRAY[12, 17, 19, 21, 25, 12, 15, 20, 24, 25, 19, 15, 25, 25, 14, 12, 14, 24, 23, 22])[d], \
             timestamptz '2011-04-01 00:00+00' + make_interval(days => d - 1) FROM generate_series(1, 20) d");
        run("INSERT INTO ticker SELECT 100 + d, 'UP', d, timestamptz '2011-04-01 00:00+00' + make_interval(days => d - 1) FROM generate_series(1, 6) d");
        let v_shapes_sql = |contiguity: &str, after: &str| {
            format!(
                r#"SELECT string_agg(key || ':' || (rows->'strt'->>0) || '-' || (SELECT max(x::int) FROM jsonb_array_elements_text(rows->'up') x), ',' ORDER BY key, match_number)
                   FROM cep.match_recognize('ticker', 'symbol', 'ts', 'strt down+ up+',
                        '{{"down": {{"price": {{"<": "PREV.price"}}}}, "up": {{"price": {{">": "PREV.price"}}}}}}',
                        contiguity => '{contiguity}', after_match => '{after}', id_column => 'id')"#
            )
        };
        let v_shapes = |contiguity: &str, after: &str| one::<String>(&v_shapes_sql(contiguity, after));
        // Greedy UP+ runs to each top: three V-shapes, where eager emission stops at the first UP.
        assert_eq!(v_shapes("strict", "past_last_row"), Some("ACME:5-10,ACME:11-13,ACME:14-18".into()));
        assert_eq!(v_shapes("strict", "to_next_row"), Some("ACME:5-10,ACME:10-13,ACME:11-13,ACME:14-18,ACME:15-18".into()));
        // Oracle's query as published, AFTER MATCH SKIP TO LAST UP: the rows its guide prints.
        assert_eq!(v_shapes("strict", "to_last up"), Some("ACME:5-10,ACME:10-13,ACME:14-18".into()));
        assert_eq!(v_shapes("strict", "to up"), v_shapes("strict", "to_last up"), "SKIP TO var is SKIP TO LAST var");
        // What only the standard's matching gives a meaning to is refused elsewhere, and nothing runs.
        assert_eq!(
            outcome(&v_shapes_sql("skip_till_next", "to_last up")),
            "0A000: invalid pattern: after_match 'to_first <symbol>' and 'to_last <symbol>' need the SQL standard's matching: contiguity => 'strict' and \
             emit => 'final' (the default for a strict pattern), or cep.match_recognize with contiguity => 'strict'"
        );
        let unknown = outcome(&v_shapes_sql("strict", "to_last nope"));
        assert!(
            unknown.starts_with("22023: invalid pattern: after_match: ")
                && unknown.contains("nope")
                && unknown.ends_with("is not a symbol of the pattern or a subset"),
            "{unknown}"
        );
        // The other contiguities keep the live engine's eager matches (unchanged from 0.2.0).
        assert_eq!(v_shapes("skip_till_next", "past_last_row"), Some("ACME:2-7,ACME:8-13,ACME:14-17".into()));
        // PREV on a match's first row reads the row before the match; greedy B* takes every row.
        assert_eq!(
            one::<String>(
                r#"SELECT string_agg(key || ':' || rows::text, ',' ORDER BY match_number)
                   FROM cep.match_recognize('ticker', 'symbol', 'ts', 'up up*', '{"up": {"price": {">": "PREV.price"}}}',
                        contiguity => 'strict', id_column => 'id') WHERE key = 'UP'"#
            ),
            Some(r#"UP:{"up": [102, 103, 104, 105, 106]}"#.into())
        );
        // MATCH_NUMBER() restarts in every partition, as the standard numbers matches.
        assert_eq!(
            one::<String>(
                r#"SELECT string_agg(key || ':' || match_number, ',' ORDER BY key, match_number)
                   FROM cep.match_recognize('ticker', 'symbol', 'ts', 'up up*', '{"up": {"price": {">": "PREV.price"}}}',
                        contiguity => 'strict', id_column => 'id')"#
            ),
            Some("ACME:1,ACME:2,ACME:3,ACME:4,UP:1".into())
        );
        // A reluctant quantifier takes the fewest rows the rest allows: UP*? leaves them to LAST.
        let split = |pattern: &str| {
            one::<String>(&format!(
                r#"SELECT string_agg(rows::text, ';' ORDER BY match_number) FROM cep.match_recognize('ticker', 'symbol', 'ts', '{pattern}',
                        '{{"up": {{"price": {{">": "PREV.price"}}}}, "last": {{"price": {{">": "PREV.price"}}}}}}',
                        contiguity => 'strict', id_column => 'id') WHERE key = 'UP'"#
            ))
        };
        assert_eq!(split("up up* last"), Some(r#"{"up": [102, 103, 104, 105], "last": [106]}"#.into()));
        assert_eq!(split("up up*? last"), Some(r#"{"up": [102], "last": [103]};{"up": [104], "last": [105]}"#.into()));
        assert!(outcome(
            "SELECT * FROM cep.match_recognize('ticker', 'symbol', 'ts', 'up up*? last', '{\"up\": {\"price\": {\">\": 0}}, \"last\": {\"price\": {\">\": 0}}}', id_column => 'id')"
        )
        .starts_with("0A000: invalid pattern: reluctant quantifiers (*? +? ?? {n,m}?) need the SQL standard's matching"));
    }

    /// Oracle's example 20-5 as published (SQL DEFINE, MEASURES, SUBSET), one row per match and
    /// one per row; bad expressions are refused with their position, and nothing runs.
    #[pg_test]
    fn match_recognize_reports_measures_and_reads_define_written_as_sql() {
        run("CREATE TABLE ticker (id int PRIMARY KEY, symbol text, price int, ts timestamptz)");
        run("INSERT INTO ticker SELECT d, 'ACME', (ARRAY[12, 17, 19, 21, 25, 12, 15, 20, 24, 25, 19, 15, 25, 25, 14, 12, 14, 24, 23, 22])[d], \
             timestamptz '2011-04-01 00:00+00' + make_interval(days => d - 1) FROM generate_series(1, 20) d");
        let query = |rows: &str, measures: &str| {
            format!(
                r#"SELECT string_agg(coalesce(row_id::text, '') || measures::text, ';' ORDER BY match_number, row_id)
                   FROM cep.match_recognize('ticker', 'symbol', 'ts', 'STRT DOWN+ UP+',
                        '{{"UP": "UP.price > PREV(UP.price)", "DOWN": "DOWN.price < PREV(DOWN.price)"}}',
                        contiguity => 'strict', after_match => 'to_last UP', id_column => 'id', rows_per_match => '{rows}',
                        measures => '{measures}', subset => '{{"STDN": ["STRT", "DOWN"]}}')"#
            )
        };
        let oracle = r#"{"strt_time": "FIRST(STRT.id)", "bottom": "LAST(DOWN.id)", "stdn_avgprice": "ROUND(AVG(STDN.price), 7)"}"#;
        assert_eq!(
            one::<String>(&query("one", oracle)).as_deref(),
            Some(
                r#"{"bottom": 6, "strt_time": 5, "stdn_avgprice": 18.5};{"bottom": 12, "strt_time": 10, "stdn_avgprice": 19.6666667};{"bottom": 16, "strt_time": 14, "stdn_avgprice": 17.0}"#
            )
        );
        // ALL ROWS PER MATCH: running, unless FINAL; MATCH_NUMBER() and CLASSIFIER() per row.
        let running = r#"{"n": "MATCH_NUMBER()", "var": "CLASSIFIER()", "days": "COUNT(*)", "of": "FINAL COUNT(*)", "drop": "price - STRT.price"}"#;
        let all = one::<String>(&format!("{} WHERE match_number = 1", query("all", running).replace(") WHERE", ") x WHERE"))).unwrap_or_default();
        assert!(
            all.starts_with(r#"5{"n": 1, "of": 6, "var": "STRT", "days": 1, "drop": 0};6{"n": 1, "of": 6, "var": "DOWN", "days": 2, "drop": -13};"#),
            "{all}"
        );
        assert!(all.ends_with(r#"10{"n": 1, "of": 6, "var": "UP", "days": 6, "drop": 0}"#), "{all}");
        // Without measures the column is NULL, as in 0.2.0's rows.
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM cep.match_recognize('ticker', 'symbol', 'ts', 'strt down+ up+', '{\"down\": \"price < PREV(price)\", \"up\": \"price > PREV(price)\"}', \
                 contiguity => 'strict', id_column => 'id') WHERE measures IS NULL"
            ),
            Some(3)
        );
        // Refused when written, with the expression and the position.
        let bad = outcome(&query("one", r#"{"x": "LAST(DOWN.price"}"#));
        assert_eq!(bad, "42804: invalid pattern: measures.x: unexpected end of expression at position 15: \"LAST(DOWN.price\"", "{bad}");
        let bad = outcome(&query("one", r#"{"x": "SUM(PREV(price))"}"#));
        assert!(bad.starts_with("0A000: invalid pattern: measures.x: PREV inside an aggregate at position 4"), "{bad}");
        let bad = outcome(&query("one", r#"{"x": "LAST(DOWN.volume)"}"#));
        assert!(bad.starts_with("42703: define or measures: column \"volume\" is not a column"), "{bad}");
        // Expressions that read other rows need the standard's matching, live and over history.
        let bad =
            outcome("SELECT * FROM cep.match_recognize('ticker', 'symbol', 'ts', 'a b', '{\"b\": \"price > PREV(price)\"}', id_column => 'id')");
        assert!(bad.starts_with("0A000: invalid pattern: DEFINE expressions that read other rows"), "{bad}");
    }

    /// A live pattern whose DEFINE is SQL reading other rows (Flink's ticker as published) emits
    /// what `cep.match_recognize` finds over the same rows.
    #[pg_test]
    fn a_live_pattern_with_navigating_define_equals_match_recognize() {
        run("CREATE TABLE ticker (id int PRIMARY KEY, symbol text, price int, ts timestamptz)");
        let define = r#"{"PRICE_DOWN": "(LAST(PRICE_DOWN.price, 1) IS NULL AND PRICE_DOWN.price < START_ROW.price) OR PRICE_DOWN.price < LAST(PRICE_DOWN.price, 1)",
                         "PRICE_UP": "PRICE_UP.price > LAST(PRICE_DOWN.price, 1)"}"#;
        run(&format!(
            "SELECT cep.define_pattern('flink', 'ticker', 'symbol', 'ts', 'START_ROW PRICE_DOWN+ PRICE_UP', '{define}', contiguity => 'strict', \
             after_match => 'to_last PRICE_UP')"
        ));
        for (second, price) in [12, 17, 19, 21, 25, 18, 15, 14, 24, 25, 19].iter().enumerate() {
            run(&format!(
                "INSERT INTO ticker VALUES ({}, 'ACME', {price}, timestamptz '2011-04-01 10:00+00' + make_interval(secs => {second}))",
                second + 1
            ));
        }
        let live = one::<String>("SELECT string_agg(rows::text, ';' ORDER BY match_end) FROM cep.pattern_matches WHERE pattern_name = 'flink'");
        let history = one::<String>(&format!(
            "SELECT string_agg(rows::text, ';' ORDER BY match_end) FROM cep.match_recognize('ticker', 'symbol', 'ts', 'START_ROW PRICE_DOWN+ PRICE_UP', \
             '{define}', contiguity => 'strict', after_match => 'to_last PRICE_UP', id_column => 'id')"
        ));
        assert_eq!(live, history);
        assert_eq!(history.as_deref(), Some(r#"{"PRICE_UP": [9], "START_ROW": [5], "PRICE_DOWN": [6, 7, 8]}"#));
    }

    #[pg_test]
    fn a_live_pattern_emitting_final_matches_equals_match_recognize() {
        run("CREATE TABLE ticker (id int PRIMARY KEY, symbol text, price int, ts timestamptz)");
        let define = r#"{"down": {"price": {"<": "PREV.price"}}, "up": {"price": {">": "PREV.price"}}}"#;
        // Strict contiguity: final by default; eager when asked.
        run(&format!("SELECT cep.define_pattern('v_final', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', contiguity => 'strict')"));
        run(&format!(
            "SELECT cep.define_pattern('v_eager', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', contiguity => 'strict', emit => 'eager')"
        ));
        // Oracle's query as published (SKIP TO LAST UP) runs live too, final by default; eagerly it
        // would mean something else, so it is refused and nothing is registered.
        run(&format!(
            "SELECT cep.define_pattern('v_skip', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', contiguity => 'strict', after_match => 'to_last up')"
        ));
        assert!(outcome(&format!(
            "SELECT cep.define_pattern('v_skip_eager', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', contiguity => 'strict', \
             after_match => 'to_last up', emit => 'eager')"
        ))
        .starts_with("0A000: invalid pattern: after_match 'to_first <symbol>' and 'to_last <symbol>' need the SQL standard's matching"));
        assert_eq!(
            one::<String>("SELECT string_agg(name || ':' || emit, ',' ORDER BY name) FROM cep.patterns"),
            Some("v_eager:eager,v_final:final,v_skip:final".into())
        );
        // One row per statement, as a live feed: Oracle's ACME ticker.
        for (day, price) in [12, 17, 19, 21, 25, 12, 15, 20, 24, 25, 19, 15, 25, 25, 14, 12, 14, 24, 23, 22].iter().enumerate() {
            run(&format!(
                "INSERT INTO ticker VALUES ({}, 'ACME', {price}, timestamptz '2011-04-01 00:00+00' + make_interval(days => {day}))",
                day + 1
            ));
        }
        let live = |name: &str| {
            one::<String>(&format!("SELECT string_agg(rows::text, ';' ORDER BY match_end) FROM cep.pattern_matches WHERE pattern_name = '{name}'"))
        };
        let history = one::<String>(&format!(
            "SELECT string_agg(rows::text, ';' ORDER BY match_end) FROM cep.match_recognize('ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', \
             contiguity => 'strict', id_column => 'id')"
        ));
        assert_eq!(live("v_final"), history, "each V-shape once it has reached its top, as history has it");
        let skipping = one::<String>(&format!(
            "SELECT string_agg(rows::text, ';' ORDER BY match_end) FROM cep.match_recognize('ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', \
             contiguity => 'strict', after_match => 'to_last up', id_column => 'id')"
        ));
        assert_eq!(live("v_skip"), skipping, "SKIP TO LAST UP live as in history");
        assert!(skipping.as_deref().is_some_and(|s| s.contains(r#"{"up": [13], "down": [11, 12], "strt": [10]}"#)), "{skipping:?}");
        assert_eq!(
            history.as_deref(),
            Some(
                r#"{"up": [7, 8, 9, 10], "down": [6], "strt": [5]};{"up": [13], "down": [12], "strt": [11]};{"up": [17, 18], "down": [15, 16], "strt": [14]}"#
            )
        );
        assert_eq!(
            live("v_eager").as_deref(),
            Some(
                r#"{"up": [7], "down": [6], "strt": [5]};{"up": [13], "down": [11, 12], "strt": [10]};{"up": [17], "down": [15, 16], "strt": [14]}"#
            ),
            "eager: each match at its first UP"
        );
        // The last rows (23, 22: a descent) wait for a row that may still turn up.
        assert_eq!(
            one::<bool>("SELECT state LIKE '%\"q\"%' FROM cep.pattern_state s JOIN cep.patterns p USING (pattern_id) WHERE p.name = 'v_final'"),
            Some(true)
        );
        // 'final' needs the standard's kind of pattern: refused, and nothing is registered.
        let refused = outcome(&format!(
            "SELECT cep.define_pattern('v_next', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', contiguity => 'skip_till_next', emit => 'final')"
        ));
        assert!(
            refused.starts_with("22023: invalid pattern: emit: 'final' gives the SQL standard's matches, which need contiguity => 'strict'"),
            "{refused}"
        );
        assert!(outcome(&format!("SELECT cep.define_pattern('v_bad', 'ticker', 'symbol', 'ts', 'strt down+ up+', '{define}', emit => 'later')"))
            .starts_with("22023: invalid pattern: emit: \"later\" is not one of eager, final"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(3));
    }

    #[pg_test]
    fn an_absence_at_the_end_fires_when_its_time_has_passed() {
        events_setup();
        run(r#"SELECT cep.define_pattern('reset_no_login', 'user_events', 'user_id', 'created_at', 'reset !login',
               '{"reset": {"event_type": "password_reset"}, "login": {"event_type": "login"}}', within => '10 minutes')"#);
        run(&event(1, "password_reset", 0, 30)); // no login since: due
        run(&event(2, "password_reset", 0, 30));
        run(&event(2, "login", 0, 25)); // logged in within 10 minutes: no match
        run(&event(3, "password_reset", 0, 2)); // not yet due
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_matches"), Some(0));
        assert_eq!(one::<i64>("SELECT cep.fire_timeouts()"), Some(1));
        assert_eq!(
            one::<String>("SELECT key || ':' || completed_by || ':' || (match_end - match_start)::text FROM cep.pattern_matches"),
            Some("1:timeout:00:10:00".into())
        );
        assert_eq!(one::<i64>("SELECT cep.fire_timeouts()"), Some(0));
        assert_eq!(one::<String>("SELECT string_agg(key, ',') FROM cep.pattern_state"), Some("3".into()));
        // History agrees: the same single match.
        assert_eq!(
            one::<String>(
                r#"SELECT string_agg(key, ',') FROM cep.match_recognize('user_events', 'user_id', 'created_at', 'reset !login',
               '{"reset": {"event_type": "password_reset"}, "login": {"event_type": "login"}}', within => '10 minutes')"#
            ),
            Some("1".into())
        );
    }

    #[pg_test]
    fn bad_patterns_are_refused_when_defined_and_nothing_is_registered() {
        events_setup();
        let define = |pattern: &str, define: &str, extra: &str| {
            outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'created_at', '{pattern}', '{define}'{extra})"))
        };
        let d = r#"{"a": {"event_type": "login"}}"#;
        let syntax = define("a (b", d, "");
        assert!(syntax.starts_with("42601: invalid pattern: pattern:") && syntax.contains("position"), "{syntax}");
        let unused = define("a", r#"{"a": {"event_type": "login"}, "zz": {"event_type": "x"}}"#, "");
        assert!(unused.starts_with("42704: invalid pattern:") && unused.contains("zz"), "{unused}");
        let op = define("a", r#"{"a": {"amount": {"=>": 5}}}"#, "");
        assert!(op.starts_with("42804: invalid pattern: define.a.amount") && op.contains("=>"), "{op}");
        assert!(define("a", r#"{"a": {"colour": "red"}}"#, "").starts_with("42703: define or measures: column \"colour\" is not a column"));
        assert!(define("a !b", d, "").starts_with("22023: invalid pattern:"), "an absence at the end needs within");
        assert!(define("a", d, ", contiguity => 'loose'").starts_with("22023: invalid pattern: contiguity"));
        assert!(outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'event_type', 'a', '{d}')"))
            .starts_with("42804: order_by \"event_type\" has type text"));
        assert!(outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'created_at', 'a', '{d}', id_column => 'location')"))
            .starts_with("42804: id_column"));
        assert!(outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'nobody', 'created_at', 'a', '{d}')"))
            .starts_with("42703: partition_by \"nobody\""));
        assert!(outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'created_at', 'a', '{d}', within => '-1 minute')"))
            .starts_with("22023: within"));
        // A channel NOTIFY refuses would fail every insert that completes a match, at commit.
        let long = "c".repeat(64);
        assert_eq!(
            outcome(&format!("SELECT cep.define_pattern('bad', 'user_events', 'user_id', 'created_at', 'a', '{d}', channel => '{long}')")),
            format!("22023: channel \"{long}\" must be 1 to 63 bytes long, not only spaces")
        );
        assert_eq!(
            outcome(&format!("SELECT cep.define_pattern(' ', 'user_events', 'user_id', 'created_at', 'a', '{d}')")),
            "22023: name must not be empty"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'user_events'::regclass"), Some(0));
        // Names are unique; a second definition under the same name is refused.
        run(&format!("SELECT cep.define_pattern('good', 'user_events', 'user_id', 'created_at', 'a', '{d}')"));
        assert!(outcome(&format!("SELECT cep.define_pattern('good', 'user_events', 'user_id', 'created_at', 'a', '{d}')"))
            .starts_with("42710: pattern \"good\" already exists"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(1));
        // Inserts go on when a column the pattern reads is dropped later: the pattern is skipped.
        run("SELECT cep.define_pattern('by_place', 'user_events', 'user_id', 'created_at', 'p', '{\"p\": {\"location\": \"x\"}}')");
        run("ALTER TABLE user_events DROP COLUMN location");
        assert_eq!(outcome(&event(1, "login", 0, 0)), "ok");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_matches WHERE pattern_name = 'good'"), Some(1));
        // Dropping the last patterns removes the trigger and the partial matches.
        assert_eq!(one::<bool>("SELECT cep.drop_pattern('good') AND cep.drop_pattern('by_place') AND NOT cep.drop_pattern('good')"), Some(true));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'user_events'::regclass"), Some(0));
    }

    #[pg_test]
    fn a_rolled_back_insert_leaves_no_partial_match() {
        events_setup();
        run(&format!("SELECT cep.define_pattern('checkout', 'user_events', 'user_id', 'created_at', 'login browse+ purchase', '{CHECKOUT_DEFINE}')"));
        run(&event(1, "login", 0, 10));
        // A failing statement after the browse rolls its subtransaction back, browse included.
        assert!(outcome(&format!("{}; SELECT 1/0", event(1, "browse", 0, 9))).starts_with("22012"));
        run(&event(1, "purchase", 5, 8));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_matches"), Some(0));
        run(&event(1, "browse", 0, 7));
        run(&event(1, "purchase", 5, 6));
        assert_eq!(one::<String>("SELECT rows::text FROM cep.pattern_matches"), Some(r#"{"login": [1], "browse": [4], "purchase": [5]}"#.into()));
    }

    /// A key's state is inserted, rewritten and deleted without the executor, and reads back as
    /// written; a table the executor must act on (here a trigger on it) gets SPI's statements.
    #[pg_test]
    fn a_keys_state_is_written_in_place_unless_the_table_needs_the_executor() {
        use crate::pg::patterns::states_written_directly;
        events_setup();
        run(&format!("SELECT cep.define_pattern('checkout', 'user_events', 'user_id', 'created_at', 'login browse+ purchase', '{CHECKOUT_DEFINE}', within => '30 minutes')"));
        let before = states_written_directly();
        run(&event(1, "login", 0, 10));
        run(&event(1, "browse", 0, 9));
        run(&event(1, "browse", 0, 8));
        assert_eq!(states_written_directly() - before, 3, "the login stored the key's state, each browse rewrote it");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_state WHERE key = '1' AND deadline IS NOT NULL"), Some(1));
        run("CREATE TABLE state_log (n int)");
        run("CREATE FUNCTION log_state() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.state_log VALUES (1); RETURN NEW; END $$");
        run("CREATE TRIGGER log_state BEFORE UPDATE ON cep.pattern_state FOR EACH ROW EXECUTE FUNCTION log_state()");
        let before = states_written_directly();
        run(&event(1, "browse", 0, 7));
        assert_eq!(states_written_directly(), before, "a trigger on the states table sends the write through SPI");
        assert_eq!(one::<i64>("SELECT count(*) FROM state_log"), Some(1));
        run("DROP TRIGGER log_state ON cep.pattern_state");
        run(&event(1, "purchase", 5, 6));
        assert_eq!(states_written_directly() - before, 1, "the match emptied the key's state: its row was deleted in place");
        assert_eq!(
            one::<String>("SELECT rows::text FROM cep.pattern_matches WHERE key = '1'"),
            Some(r#"{"login": [1], "browse": [2, 3, 4], "purchase": [5]}"#.into())
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_state"), Some(0));
        // A key's next run starts from a new row, as after a DELETE through SPI.
        run(&event(1, "login", 0, 5));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_state WHERE key = '1'"), Some(1));
    }

    #[pg_test]
    fn a_live_pattern_reports_measures_as_match_recognize_does() {
        run("CREATE TABLE acme (id int PRIMARY KEY, symbol text, price int, ts timestamptz)");
        let define = r#"{"DOWN": "DOWN.price < PREV(DOWN.price)", "UP": "UP.price > PREV(UP.price)"}"#;
        let measures = r#"{"bottom": "LAST(DOWN.id)", "avg_down": "AVG(STDN.price)", "n": "MATCH_NUMBER()", "ups": "COUNT(UP.*)"}"#;
        let subset = r#"{"STDN": ["STRT", "DOWN"]}"#;
        run(&format!(
            "SELECT cep.define_pattern('v', 'acme', 'symbol', 'ts', 'STRT DOWN+ UP+', '{define}', contiguity => 'strict', \
             after_match => 'to_last UP', measures => '{measures}', subset => '{subset}')"
        ));
        assert_eq!(
            one::<String>("SELECT measures::text || subset::text FROM cep.patterns WHERE name = 'v'"),
            Some(format!(
                "{}{}",
                one::<String>(&format!("SELECT '{measures}'::jsonb::text")).unwrap(),
                one::<String>(&format!("SELECT '{subset}'::jsonb::text")).unwrap()
            ))
        );
        // Oracle's ACME ticker, one row per statement as a live feed.
        for (day, price) in [12, 17, 19, 21, 25, 12, 15, 20, 24, 25, 19, 15, 25, 25, 14, 12, 14, 24, 23, 22].iter().enumerate() {
            run(&format!("INSERT INTO acme VALUES ({}, 'ACME', {price}, timestamptz '2011-04-01 00:00+00' + make_interval(days => {day}))", day + 1));
        }
        let live = one::<String>("SELECT string_agg(measures::text, ';' ORDER BY match_end) FROM cep.pattern_matches WHERE pattern_name = 'v'");
        let history = one::<String>(&format!(
            "SELECT string_agg(measures::text, ';' ORDER BY match_end) FROM cep.match_recognize('acme', 'symbol', 'ts', 'STRT DOWN+ UP+', \
             '{define}', contiguity => 'strict', after_match => 'to_last UP', measures => '{measures}', subset => '{subset}')"
        ));
        assert_eq!(live, history);
        // Oracle's example 20-5 prints these averages (18.5, 19.67, 17) and bottoms (6, 12, 16).
        assert_eq!(
            live.as_deref(),
            Some(
                r#"{"n": 1, "ups": 4, "bottom": 6, "avg_down": 18.5};{"n": 2, "ups": 1, "bottom": 12, "avg_down": 19.666666666666668};{"n": 3, "ups": 2, "bottom": 16, "avg_down": 17.0}"#
            )
        );
        // MATCH_NUMBER() counts a key's matches: the key keeps a state while it has matched.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.pattern_state WHERE key = 'ACME'"), Some(1));
    }

    #[pg_test]
    fn live_patterns_refuse_what_only_history_gives_a_meaning_and_register_nothing() {
        run("CREATE TABLE ev (id int PRIMARY KEY, k text, t timestamptz, kind text, price int)");
        let cases = [
            // A bad SQL condition, with its position.
            (
                r#"'a b', '{"a": "kind = 1", "b": "price > PREV(price) +"}', contiguity => 'strict'"#,
                "42804: invalid pattern: define.b: unexpected end of expression at position 21",
            ),
            // A condition that reads other rows, run eagerly.
            (r#"'a b', '{"b": "price > PREV(price)"}', emit => 'eager'"#, "0A000: invalid pattern: DEFINE expressions that read other rows"),
            // Anchors: `$` needs the partition's end.
            (r#"'a b $', '{"b": "price > 1"}', contiguity => 'strict'"#, "0A000: a live pattern cannot have anchors (^ $)"),
            // A match of no rows would be one per row.
            (
                r#"'a*', '{"a": "price > 1"}', contiguity => 'strict'"#,
                "0A000: a live pattern cannot have empty matches (its pattern can match no row); cep.match_recognize runs it",
            ),
            // MEASURES of an eager match, and MEASURES that read rows after the match.
            (r#"'a b', '{"b": "price > 1"}', measures => '{"p": "LAST(b.price)"}'"#, "0A000: MEASURES of a live pattern need emit => 'final'"),
            (
                r#"'a b', '{"b": "price > 1"}', contiguity => 'strict', measures => '{"p": "NEXT(price)"}'"#,
                "0A000: a live pattern cannot have MEASURES that read rows after the match",
            ),
            // A measure that does not parse, or names a column the table lacks.
            (
                r#"'a b', '{"b": "price > 1"}', contiguity => 'strict', measures => '{"p": "SUM(b.price"}'"#,
                "42804: invalid pattern: measures.p: unexpected end of expression",
            ),
            (r#"'a b', '{"b": "price > 1"}', contiguity => 'strict', measures => '{"p": "b.volume"}'"#, "42703"),
            (
                r#"'a b', '{"b": "price > 1"}', contiguity => 'strict', measures => '{"p": "u.price"}', subset => '{"u": ["c"]}'"#,
                "22023: invalid pattern: subset.u: \"c\" is not a pattern variable (symbols: a, b)",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(args, error)| (args, error, outcome(&format!("SELECT cep.define_pattern('p', 'ev', 'k', 't', {args})"))))
            .filter(|(_, error, got)| !got.starts_with(**error))
            .map(|(args, _, got)| format!("{args}: {got}"))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.patterns"), Some(0));
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ev'::regclass"), Some(0));
        // Each runs over history.
        run("INSERT INTO ev VALUES (1, 'x', '2026-01-01', 'a', 5), (2, 'x', '2026-01-02', 'b', 7)");
        let rows = |args: &str| {
            one::<String>(&format!(
                "SELECT string_agg(coalesce(symbol, '-') || row_id, ' ') FROM cep.match_recognize('ev', 'k', 't', {args}, rows_per_match => 'all')"
            ))
        };
        assert_eq!(rows(r#"'a b $', '{"b": "price > 1"}', contiguity => 'strict'"#), Some("a1 b2".into()));
        assert_eq!(rows(r#"'b*', '{"b": "price > 6"}', contiguity => 'strict'"#), Some("-1 b2".into()));
    }

    #[pg_test]
    fn match_recognize_shows_empty_and_unmatched_rows_and_fails_a_skip_the_standard_forbids() {
        run("CREATE TABLE quotes (id int PRIMARY KEY, k text, t timestamptz, value int)");
        run("INSERT INTO quotes SELECT i, 'q', timestamptz '2026-01-01' + make_interval(mins => i::int), v
             FROM unnest(ARRAY[100, 100, 90, 80, 70, 100]) WITH ORDINALITY u(v, i)");
        let shown = |pattern: &str, mode: &str, after: &str| {
            one::<String>(&format!(
                "SELECT string_agg(coalesce(match_number::text, '-') || ':' || row_id || coalesce(symbol, ''), ' ' ORDER BY ord)
                 FROM cep.match_recognize('quotes', 'k', 't', '{pattern}', '{{\"B\": \"B.value < PREV(B.value)\"}}', contiguity => 'strict',
                      rows_per_match => '{mode}', after_match => '{after}') WITH ORDINALITY r(match_number, key, s, e, symbol, row_id, rows, measures, ord)"
            ))
        };
        // Trino's testEmptyMatches: rows matched before are not shown again as unmatched.
        assert_eq!(shown("A B{2}", "all_with_unmatched", "to_next_row"), Some("-:1 1:2A 1:3B 1:4B 2:3A 2:4B 2:5B -:6".into()));
        assert_eq!(shown("B*", "all", "past_last_row"), Some("1:1 2:2 3:3B 3:4B 3:5B 4:6".into()));
        assert_eq!(shown("B*", "all_omit_empty", "past_last_row"), Some("3:3B 3:4B 3:5B".into()));
        assert_eq!(shown("B*", "ALL ROWS PER MATCH WITH UNMATCHED ROWS", "past_last_row"), shown("B*", "all", "past_last_row"));
        // An empty match is one row with no rows; its start and end are its row's time.
        assert_eq!(
            one::<String>(
                "SELECT rows::text || (match_start = match_end)::text FROM cep.match_recognize('quotes', 'k', 't', 'B*', '{\"B\": \"B.value < PREV(B.value)\"}',
                 contiguity => 'strict') LIMIT 1"
            ),
            Some("{}true".into())
        );
        // SKIP TO a variable that bound only the match's first row: the standard's error.
        assert!(outcome("SELECT * FROM cep.match_recognize('quotes', 'k', 't', 'A B+', '{\"B\": \"B.value < PREV(B.value)\"}', contiguity => 'strict', after_match => 'to_first A')")
            .starts_with("22000: invalid pattern: AFTER MATCH SKIP failed: cannot skip to the first row of the match (match 1 of its partition)"));
        assert!(outcome("SELECT * FROM cep.match_recognize('quotes', 'k', 't', 'B', '{\"B\": \"true\"}', rows_per_match => 'some')")
            .starts_with("22023: invalid pattern: rows_per_match"));
    }

    #[pg_test]
    fn partial_matches_dropped_by_max_partials_are_flagged_and_counted() {
        run("CREATE TABLE ev (id int PRIMARY KEY, k text, t timestamptz, kind text)");
        run(r#"SELECT cep.define_pattern('p', 'ev', 'k', 't', 'a b', '{"a": {"kind": "a"}, "b": {"kind": "b"}}',
               contiguity => 'skip_till_any', after_match => 'no_skip', max_partials => 2)"#);
        // Four `a` rows open four partial matches; the bound keeps the newest two.
        run("INSERT INTO ev SELECT i, 'x', timestamptz '2026-01-01' + make_interval(mins => i), CASE WHEN i < 5 THEN 'a' ELSE 'b' END
             FROM generate_series(1, 5) i");
        assert_eq!(
            one::<String>("SELECT string_agg(rows::text || dropped_partials, ' ' ORDER BY match_id) FROM cep.pattern_matches"),
            Some(r#"{"a": [3], "b": [5]}true {"a": [4], "b": [5]}true"#.into())
        );
        assert_eq!(one::<i64>("SELECT partials_dropped FROM cep.stats() WHERE table_name = 'ev'"), Some(2));
    }
}
