//! Security: pinned search_path, roles that create in public, ownership checks, maintenance
//! running a table's code as its owner.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn every_function_that_runs_sql_pins_its_search_path() {
        let unpinned = one::<String>(
            "SELECT coalesce(string_agg(p.oid::regprocedure::text, ', ' ORDER BY p.oid::regprocedure::text), '') FROM pg_proc p
             WHERE p.pronamespace = 'cep'::regnamespace
               AND coalesce(p.proconfig, '{}') <> '{\"search_path=pg_catalog, pg_temp\"}'",
        );
        // The immutable C functions run no SQL (and are called per row in GROUP BYs); cep.stats()
        // casts an oid to regclass and nothing else; trigger functions pin the path themselves.
        assert_eq!(
            unpinned.as_deref(),
            Some("cep.capture_trigger(), cep.hop(timestamp with time zone,interval,interval), cep.invalidate_cep_cache(), cep.monitor(), cep.monitor_changes(), cep.monitor_row(), cep.pattern_trigger(), cep.stats(), cep.stored_key(text), cep.tumble(timestamp with time zone,interval,timestamp with time zone), cep.tumble(timestamp without time zone,interval,timestamp without time zone), cep.validate_rule(jsonb)")
        );
        assert_eq!(
            one::<bool>("SELECT bool_and((provolatile = 'i' AND prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')) OR prorettype = 'trigger'::regtype)
                         FROM pg_proc WHERE pronamespace = 'cep'::regnamespace AND proconfig IS NULL AND proname <> 'stats'"),
            Some(true)
        );
    }

    #[pg_test]
    fn a_role_that_can_create_in_public_cannot_run_code_inside_a_superusers_alerting_insert() {
        seed_setup();
        run("CREATE TABLE public.hijacked (by text, during text)");
        run("GRANT INSERT ON public.hijacked TO PUBLIC");
        run("CREATE ROLE cep_test_attacker");
        run("GRANT CREATE, USAGE ON SCHEMA public TO cep_test_attacker");
        run("SET ROLE cep_test_attacker");
        // Better matches than pg_catalog's polymorphic unnest(anyarray), for the SQL pg_cep runs.
        {
            let signature = "text[], text[], double precision[], text[], jsonb[], timestamptz[]";
            let args: Vec<String> = signature.split(", ").enumerate().map(|(i, t)| format!("a{i} {t}")).collect();
            run(&format!(
                "CREATE FUNCTION public.unnest({}) RETURNS SETOF record LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO public.hijacked VALUES (current_user, 'unnest'); END $$",
                args.join(", ")
            ));
        }
        run("CREATE FUNCTION public.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.hijacked VALUES (current_user, 'unnest(text[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$");
        run("RESET ROLE");
        run("SET search_path = public, cep");
        // A superuser's INSERT that alerts, notifies and logs.
        run("INSERT INTO transactions (user_id, amount, location) VALUES (7, 50000, 'Shanghai')");
        run("RESET search_path");
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.alerts WHERE key = '7'"), Some(1));
        assert_eq!(one::<i64>("SELECT count(*) FROM public.hijacked"), Some(0), "the attacker's function ran inside pg_cep");
    }

    #[pg_test]
    fn only_a_tables_owner_may_configure_pg_cep_for_it_and_nothing_is_written_otherwise() {
        run("CREATE ROLE cep_test_owner");
        run("CREATE ROLE cep_test_other");
        run("GRANT CREATE, USAGE ON SCHEMA public TO cep_test_owner");
        run("SET ROLE cep_test_owner");
        run("CREATE TABLE owned (id bigserial, user_id int NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL, kind text)
             PARTITION BY RANGE (created_at)");
        run("RESET ROLE");
        // Even a role an administrator let write pg_cep's tables cannot configure someone else's.
        run("GRANT USAGE ON SCHEMA cep TO cep_test_other");
        run("GRANT ALL ON ALL TABLES IN SCHEMA cep TO cep_test_other");
        run("GRANT ALL ON ALL SEQUENCES IN SCHEMA cep TO cep_test_other");
        run("GRANT SELECT ON owned TO cep_test_other");
        let before = configured();
        assert_eq!(outcome("SELECT 1"), "ok");
        run("SET ROLE cep_test_other");
        for call in [
            "SELECT cep.watch('owned')",
            "SELECT cep.capture('owned')",
            "SELECT cep.define_pattern('p', 'owned', 'user_id', 'created_at', 'a b', '{}')",
            "SELECT * FROM cep.manage_partitions('owned', retention => '1 month', retention_mode => 'drop')",
            "SELECT cep.create_monthly_partition('owned', date '2026-01-01')",
            "SELECT * FROM cep.run_maintenance('owned')",
            "SELECT cep.unwatch('owned')",
            "SELECT cep.uncapture('owned')",
            "SELECT cep.unmanage_partitions('owned')",
        ] {
            let got = Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[call.into()]).unwrap().unwrap();
            assert!(got.starts_with("42501: permission denied: cep."), "{call}: {got}");
            assert!(got.contains("must be owner of table public.owned"), "{call}: {got}");
        }
        // With no table of its own, maintenance of everything does nothing for it.
        assert_eq!(one::<i64>("SELECT count(*) FROM cep.run_maintenance()"), Some(0));
        run("RESET ROLE");
        assert_eq!(configured(), before);
        assert_eq!(one::<i64>("SELECT count(*) FROM pg_inherits WHERE inhparent = 'owned'::regclass"), Some(0));
        // Without grants, pg_cep's tables cannot be written directly either.
        run("CREATE ROLE cep_test_nobody");
        run("GRANT USAGE ON SCHEMA cep TO cep_test_nobody");
        run("SET ROLE cep_test_nobody");
        let direct = Spi::get_one_with_args::<String>(
            "SELECT pg_temp.outcome($1)",
            &["INSERT INTO cep.partition_config (parent, control_column, control_type, retention, retention_mode) VALUES ('owned'::regclass, 'created_at', 'timestamptz', '1 day', 'drop')".into()],
        );
        run("RESET ROLE");
        assert_eq!(direct.unwrap().as_deref(), Some("42501: permission denied for table partition_config"));
    }

    #[pg_test]
    fn only_a_tables_owner_may_change_or_drop_what_is_configured_for_it() {
        run("CREATE ROLE cep_test_owner");
        run("CREATE ROLE cep_test_other");
        run("GRANT CREATE, USAGE ON SCHEMA public TO cep_test_owner");
        run("SET ROLE cep_test_owner");
        run("CREATE TABLE owned (id bigserial, user_id int NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL, kind text,
             PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)");
        run("RESET ROLE");
        // Configured by an administrator for the owner.
        run("SELECT cep.watch('owned')");
        run(r#"SELECT cep.define_pattern('owned_p', 'owned', 'user_id', 'created_at', 'a', '{"a": {"kind": "x"}}')"#);
        run("SELECT * FROM cep.manage_partitions('owned', premake => 0)");
        run("GRANT USAGE ON SCHEMA cep TO cep_test_other");
        run("GRANT ALL ON ALL TABLES IN SCHEMA cep TO cep_test_other");
        run("GRANT SELECT ON owned TO cep_test_other");
        let settings = || {
            one::<String>(
                "SELECT string_agg(t, ' | ' ORDER BY t) FROM (
                   SELECT row_to_json(w)::text t FROM cep.watches w WHERE relid = 'owned'::regclass
                   UNION ALL SELECT row_to_json(p)::text FROM cep.patterns p WHERE source = 'owned'::regclass
                   UNION ALL SELECT row_to_json(c)::text FROM cep.partition_config c WHERE parent = 'owned'::regclass
                   UNION ALL SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'owned'::regclass) s",
            )
        };
        let before = settings();
        assert!(before.as_deref().is_some_and(|s| s.contains("owned_p") && s.contains("cep_monitor")), "{before:?}");
        assert_eq!(outcome("SELECT 1"), "ok");
        run("SET ROLE cep_test_other");
        for (call, action) in [
            ("SELECT cep.alter_watch('owned', block_at => 0.5, channel => 'elsewhere')", "cep.alter_watch"),
            ("SELECT cep.watch_rollups('owned', false)", "cep.watch_rollups"),
            ("SELECT cep.alter_partitions('owned', retention => '1 month', retention_mode => 'drop')", "cep.alter_partitions"),
            ("SELECT cep.drop_pattern('owned_p')", "cep.drop_pattern"),
        ] {
            let got = Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[call.into()]).unwrap().unwrap();
            assert!(got.starts_with(&format!("42501: permission denied: {action} ")), "{call}: {got}");
            assert!(got.contains("must be owner of table public.owned"), "{call}: {got}");
        }
        run("RESET ROLE");
        assert_eq!(settings(), before);
    }

    #[pg_test]
    fn maintenance_runs_a_tables_own_code_as_its_owner_not_as_the_superuser_who_started_it() {
        run("CREATE ROLE cep_test_owner");
        run("GRANT CREATE, USAGE ON SCHEMA public TO cep_test_owner");
        run("CREATE TABLE public.ran_as (who text)");
        run("GRANT INSERT ON public.ran_as TO PUBLIC");
        run("SET ROLE cep_test_owner");
        run("CREATE FUNCTION public.note_who(v int) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.ran_as VALUES (current_user); RETURN v IS NOT NULL; END $$");
        run("CREATE TABLE owned (v int CHECK (public.note_who(v)), created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)");
        run("CREATE TABLE owned_default PARTITION OF owned DEFAULT");
        run("INSERT INTO owned VALUES (1, now()), (2, now() - interval '1 month')");
        run("RESET ROLE");
        run("DELETE FROM public.ran_as");
        // The superuser registers the table and maintenance moves the rows out of DEFAULT.
        let moved = one::<i64>("SELECT sum(rows_moved)::int8 FROM cep.manage_partitions('owned', premake => 0)");
        assert_eq!(moved, Some(2));
        assert_eq!(one::<String>("SELECT string_agg(DISTINCT who, ',') FROM public.ran_as"), Some("cep_test_owner".into()));
        // And the new partitions are the owner's, created by the owner.
        assert_eq!(one::<String>("SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner), ',') FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'owned'::regclass"), Some("cep_test_owner".into()));
        assert_eq!(one::<String>("SELECT current_user::text"), Some("postgres".into()));
    }
}
