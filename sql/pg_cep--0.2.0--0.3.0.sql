-- pg_cep 0.2.0 -> 0.3.0: hardening. Functions resolve names under a pinned search_path, a dropped
-- table takes its configuration with it, configuration left behind by tables dropped under
-- 0.2.0 is removed, and each role reads the records of the tables it may SELECT (row security).
-- Written by hand; never edited once released.
\echo Use "ALTER EXTENSION pg_cep UPDATE TO '0.3.0'" to load this file. \quit

-- Configuration of tables dropped while 0.2.0 was installed.
DELETE FROM @extschema@.watches w WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = w.relid);
DELETE FROM @extschema@.captures x WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = x.relid);
DELETE FROM @extschema@.partition_config p WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = p.parent);
DELETE FROM @extschema@.pattern_state s WHERE s.pattern_id IN (
    SELECT pattern_id FROM @extschema@.patterns p WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = p.source));
DELETE FROM @extschema@.patterns p WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = p.source);
-- 0.3.0: a live pattern can emit each match once it is final (emit => 'final'): the SQL
-- standard's preferred match, the one cep.match_recognize returns over the same rows. Patterns
-- defined before keep emitting eagerly.
ALTER TABLE patterns ADD COLUMN emit text NOT NULL DEFAULT 'eager' CHECK (emit IN ('eager', 'final'));

DROP FUNCTION define_pattern(text, regclass, text, text, text, jsonb, interval, text, text, text, text, integer);
CREATE FUNCTION define_pattern(
	"name" TEXT,
	"source" regclass,
	"partition_by" TEXT,
	"order_by" TEXT,
	"pattern" TEXT,
	"define" jsonb,
	"within" interval DEFAULT NULL,
	"contiguity" TEXT DEFAULT 'skip_till_next',
	"after_match" TEXT DEFAULT 'past_last_row',
	"channel" TEXT DEFAULT 'pattern_matches',
	"id_column" TEXT DEFAULT 'id',
	"max_partials" INT DEFAULT 1000,
	"emit" TEXT DEFAULT NULL,
	"measures" jsonb DEFAULT NULL,
	"subset" jsonb DEFAULT NULL
) RETURNS INT
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'define_pattern_wrapper';

-- 0.3.0: MEASURES (what each match reports, as the jsonb column measures) and SUBSET.
DROP FUNCTION match_recognize(regclass, text, text, text, jsonb, interval, text, text, text, text, integer);
CREATE FUNCTION match_recognize(
	"relation" regclass,
	"partition_by" TEXT,
	"order_by" TEXT,
	"pattern" TEXT,
	"define" jsonb,
	"within" interval DEFAULT NULL,
	"contiguity" TEXT DEFAULT 'skip_till_next',
	"after_match" TEXT DEFAULT 'past_last_row',
	"rows_per_match" TEXT DEFAULT 'one',
	"id_column" TEXT DEFAULT 'id',
	"max_partials" INT DEFAULT 1000,
	"measures" jsonb DEFAULT NULL,
	"subset" jsonb DEFAULT NULL
) RETURNS TABLE (
	"match_number" bigint,
	"key" TEXT,
	"match_start" timestamp with time zone,
	"match_end" timestamp with time zone,
	"symbol" TEXT,
	"row_id" bigint,
	"rows" jsonb,
	"measures" jsonb
)
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'match_recognize_wrapper';

-- 0.3.0: cep.stats() counts, per table, the partial matches its live patterns dropped for
-- max_partials. Its one dependent, cep.streaming_performance, is made again as it was.
DROP VIEW streaming_performance;
DROP FUNCTION stats();
CREATE FUNCTION stats() RETURNS TABLE (
	"table_name" TEXT,
	"rows_seen" bigint,
	"alerts" bigint,
	"notifications" bigint,
	"rows_blocked" bigint,
	"rule_errors" bigint,
	"total_ms" double precision,
	"max_ms" double precision,
	"shared" bool,
	"partials_dropped" bigint
)
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'stats_wrapper';
CREATE VIEW streaming_performance AS
    SELECT w.relid::regclass::text AS table_name,
           last_minute.row_count AS rows_last_minute,
           last_hour.row_count AS rows_last_hour,
           (SELECT r.active_users FROM @extschema@.realtime_stats(w.relid, interval '5 minutes', 0) r) AS active_keys_last_5_minutes,
           last_hour.avg_delay_s AS avg_processing_delay_s,
           coalesce(s.rows_seen, 0) AS monitor_rows_seen,
           coalesce(s.total_ms, 0) AS monitor_total_ms,
           s.total_ms / nullif(s.rows_seen, 0) AS monitor_ms_per_row,
           s.max_ms AS monitor_max_ms,
           coalesce(s.alerts, 0) AS alerts,
           w.channel,
           coalesce(s.notifications, 0) AS notifications_sent,
           coalesce(s.rows_blocked, 0) AS rows_blocked,
           coalesce(s.rule_errors, 0) AS rule_errors,
           pg_notification_queue_usage() AS notification_queue_usage
    FROM @extschema@.watches w
    CROSS JOIN LATERAL @extschema@.rollup_activity(w.relid, date_bin('1 minute', now() - interval '1 minute', '2000-01-01 00:00:00+00')) last_minute
    CROSS JOIN LATERAL @extschema@.rollup_activity(w.relid, date_bin('1 minute', now() - interval '1 hour', '2000-01-01 00:00:00+00')) last_hour
    LEFT JOIN @extschema@.stats() s ON to_regclass(s.table_name) = w.relid;

-- 0.3.0: the queue of notifications sent after commit, for operators: what waits, and what
-- undecided prepared transactions hold.
CREATE FUNCTION notification_queue() RETURNS TABLE (
	"enabled" bool,
	"sender_running" bool,
	"queued" bigint,
	"prepared" bigint
)
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'notification_queue_wrapper';

-- 0.3.0: keys of any length fit pg_cep's indexes: a key over 1024 bytes is stored as its first
-- bytes and its SHA-256 (0.2.0 failed the user's INSERT on a key over about 2.7 kB).
CREATE FUNCTION stored_key("key" TEXT) RETURNS TEXT
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'stored_key_wrapper';
-- Partial matches of a long key go on under its bounded form, which the trigger looks up from
-- now on (the library writes keys whole until this update). Moved in one statement, so that two
-- rows never hold one key on the way; should two keys' forms meet, the first row stays.
WITH moved AS (
    DELETE FROM @extschema@.pattern_state WHERE @extschema@.stored_key(key) <> key
    RETURNING pattern_id, key, state, deadline
)
INSERT INTO @extschema@.pattern_state (pattern_id, key, state, deadline)
SELECT pattern_id, @extschema@.stored_key(key), state, deadline FROM moved
ON CONFLICT (pattern_id, key) DO NOTHING;

-- 0.3.0: a dropped table takes its pg_cep configuration with it (watch, capture, patterns and
-- their partial matches, partition management), so nothing is left pointing at a dead oid.
-- SECURITY DEFINER: the owner dropping their own table needs no rights on pg_cep's tables, and the
-- function deletes only rows of relations that this very DROP removed.
CREATE FUNCTION forget_dropped_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped oid[];
BEGIN
    SELECT array_agg(objid) INTO dropped FROM pg_event_trigger_dropped_objects()
    WHERE classid = 'pg_catalog.pg_class'::regclass AND objsubid = 0;
    -- DROP EXTENSION drops pg_cep's tables in the same command: nothing is left to clean.
    IF dropped IS NULL OR to_regclass('@extschema@.watches') IS NULL OR '@extschema@.watches'::regclass = ANY (dropped) THEN
        RETURN;
    END IF;
    DELETE FROM @extschema@.watches WHERE relid = ANY (dropped);
    DELETE FROM @extschema@.captures WHERE relid = ANY (dropped);
    DELETE FROM @extschema@.partition_config WHERE parent = ANY (dropped);
    DELETE FROM @extschema@.pattern_state WHERE pattern_id IN (SELECT pattern_id FROM @extschema@.patterns WHERE source = ANY (dropped));
    DELETE FROM @extschema@.patterns WHERE source = ANY (dropped);
END $$;
REVOKE ALL ON FUNCTION forget_dropped_tables() FROM PUBLIC;

CREATE EVENT TRIGGER cep_forget_dropped_tables ON sql_drop EXECUTE FUNCTION forget_dropped_tables();

-- 0.3.0: every cursor pg_cep offers reads in a stable order that never skips a row. An id is taken when a row is written,
-- not when its transaction commits, so a consumer that read alert 2 could later miss alert 1 of a
-- slower transaction. Rows are read by (writing transaction, id), and only once every older
-- transaction has ended (below the snapshot's xmin): a transaction still running when a consumer
-- read has a later place in this order than everything it read. Rows written before 0.3.0 have
-- no transaction and come first. One rule for cep.changes_since, cep.alerts_since and
-- cep.matches_since.
ALTER TABLE alerts ADD COLUMN xid xid8;
ALTER TABLE alerts ALTER COLUMN xid SET DEFAULT pg_catalog.pg_current_xact_id();
CREATE INDEX alerts_cursor_idx ON alerts ((coalesce(xid, '0'::xid8)), alert_id);
ALTER TABLE pattern_matches ADD COLUMN xid xid8;
ALTER TABLE pattern_matches ALTER COLUMN xid SET DEFAULT pg_catalog.pg_current_xact_id();
-- 0.3.0: a match emitted while its key had dropped partial matches (max_partials) says so: a
-- match the bound did not change is the same, but one may be missing or differ.
ALTER TABLE pattern_matches ADD COLUMN dropped_partials boolean NOT NULL DEFAULT false;
CREATE INDEX pattern_matches_cursor_idx ON pattern_matches ((coalesce(xid, '0'::xid8)), match_id);

CREATE OR REPLACE FUNCTION alerts_since(last_id bigint, max_rows integer DEFAULT 1000)
RETURNS SETOF alerts LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH last AS (
        SELECT coalesce((SELECT coalesce(xid, '0'::xid8) FROM @extschema@.alerts WHERE alert_id = last_id), '0'::xid8) AS xid)
    SELECT a.* FROM @extschema@.alerts a, last
    WHERE (coalesce(a.xid, '0'::xid8), a.alert_id) > (last.xid, last_id)
      AND coalesce(a.xid, '0'::xid8) < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY coalesce(a.xid, '0'::xid8), a.alert_id
    LIMIT max_rows
$$;

CREATE FUNCTION matches_since(last_id bigint, max_rows integer DEFAULT 1000, pattern text DEFAULT NULL)
RETURNS SETOF pattern_matches LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH last AS (
        SELECT coalesce((SELECT coalesce(xid, '0'::xid8) FROM @extschema@.pattern_matches WHERE match_id = last_id), '0'::xid8) AS xid)
    SELECT m.* FROM @extschema@.pattern_matches m, last
    WHERE (coalesce(m.xid, '0'::xid8), m.match_id) > (last.xid, coalesce(last_id, 0))
      AND coalesce(m.xid, '0'::xid8) < pg_snapshot_xmin(pg_current_snapshot())
      AND (pattern IS NULL OR m.pattern_name = pattern)
    ORDER BY coalesce(m.xid, '0'::xid8), m.match_id
    LIMIT max_rows
$$;

-- 0.3.0: who reads and writes what pg_cep records. pg_cep writes its alerts, assessments, partial
-- matches and matches as the extension (see privileges::as_extension_owner), so a watched table's
-- writers need no grant on them and nobody else is given one: no role but the installer can
-- forge them. Every role may read them, row-level security showing each role the rows of the
-- tables it may SELECT (a dropped table's rows only to the installer). The change log is also
-- written by the writer's own statement when a very large UPDATE goes through the executor: a
-- role may add rows only for a table it may change.
CREATE FUNCTION pattern_source(pattern_id integer) RETURNS oid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT source FROM @extschema@.patterns p WHERE p.pattern_id = $1 $$;
COMMENT ON FUNCTION pattern_source(integer) IS 'pg_cep: the table a pattern matches on (for the row-level security of cep.pattern_matches)';

ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE risk_assessments ENABLE ROW LEVEL SECURITY;
ALTER TABLE change_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE pattern_matches ENABLE ROW LEVEL SECURITY;
CREATE POLICY cep_readers ON alerts FOR SELECT USING (pg_catalog.has_table_privilege(relid, 'SELECT'));
CREATE POLICY cep_readers ON risk_assessments FOR SELECT USING (pg_catalog.has_table_privilege(relid, 'SELECT'));
CREATE POLICY cep_readers ON change_log FOR SELECT USING (pg_catalog.has_table_privilege(relid, 'SELECT'));
CREATE POLICY cep_readers ON pattern_matches FOR SELECT
    USING (pg_catalog.has_table_privilege(@extschema@.pattern_source(pattern_id), 'SELECT'));
CREATE POLICY cep_writers ON change_log FOR INSERT
    WITH CHECK (pg_catalog.has_table_privilege(relid, 'INSERT, UPDATE, DELETE, TRUNCATE'));
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT SELECT ON alerts, risk_assessments, change_log, pattern_matches TO PUBLIC;
GRANT INSERT ON change_log TO PUBLIC;
GRANT USAGE ON SEQUENCE change_log_change_id_seq TO PUBLIC;

-- 0.3.0: change some settings of a watched table and keep the others (see cep.alter_watch).
CREATE FUNCTION alter_watch(
	"table" regclass,
	"key_column" TEXT DEFAULT NULL,
	"amount_column" TEXT DEFAULT NULL,
	"time_column" TEXT DEFAULT NULL,
	"location_column" TEXT DEFAULT NULL,
	"channel" TEXT DEFAULT NULL,
	"alert_level" TEXT DEFAULT NULL,
	"block_at" double precision DEFAULT NULL,
	"on_block" TEXT DEFAULT NULL,
	"log_assessments" TEXT DEFAULT NULL,
	"blocking" bool DEFAULT NULL,
	"cooldown" interval DEFAULT NULL
) RETURNS jsonb
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'alter_watch_wrapper';

-- 0.3.0: a rule can be scoped to some watched tables (tables), turned off on others
-- (except_tables), and run in shadow mode (mode = 'shadow': scored and recorded in
-- cep.risk_assessments with level 'shadow', never alerting nor blocking). Each is part of the
-- rule's content: changing it makes a new version.
ALTER TABLE risk_rules
    ADD COLUMN tables oid[],
    ADD COLUMN except_tables oid[],
    ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'shadow'));

CREATE OR REPLACE FUNCTION risk_rules_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.validate_rule(jsonb_build_object(
        'rule_type', NEW.rule_type, 'rule_condition', NEW.rule_condition, 'risk_score', NEW.risk_score));
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.rule_type, NEW.rule_condition, NEW.risk_score, NEW.is_active, NEW.rule_name, NEW.tables, NEW.except_tables, NEW.mode)
           IS DISTINCT FROM (OLD.rule_type, OLD.rule_condition, OLD.risk_score, OLD.is_active, OLD.rule_name, OLD.tables, OLD.except_tables, OLD.mode) THEN
            NEW.version := OLD.version + 1;
            NEW.updated_at := now();
        END IF;
        NEW.created_at := OLD.created_at;
    END IF;
    RETURN NEW;
END $$;

-- 0.3.0: alerts an on-call team can operate. An alert is open, acknowledged or resolved (who,
-- when, a note); each change is notified on the watch's channel. A watch with a cooldown keeps one
-- open alert per key, fired rule set and cooldown window, and counts the rows that fired the same
-- rules again on it (repeats, last_seen, max_score) instead of writing and notifying each. A
-- blocked row is kept in attempted_row, also when blocking failed the statement.
ALTER TABLE alerts
    ADD COLUMN state text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    ADD COLUMN state_changed_at timestamptz,
    ADD COLUMN state_changed_by name,
    ADD COLUMN note text,
    ADD COLUMN repeats integer NOT NULL DEFAULT 0,
    ADD COLUMN last_seen timestamptz,
    ADD COLUMN max_score float8,
    ADD COLUMN fingerprint text,
    ADD COLUMN cooldown_from timestamptz,
    ADD COLUMN attempted_row jsonb;
CREATE UNIQUE INDEX alerts_cooldown_idx ON alerts (relid, key, fingerprint, cooldown_from)
    WHERE cooldown_from IS NOT NULL AND state <> 'resolved';
ALTER TABLE watches ADD COLUMN cooldown interval CHECK (cooldown > interval '0');

-- The channel a table's alerts go to (the caller may not read cep.watches).
CREATE FUNCTION alert_channel(relid oid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT channel FROM @extschema@.watches w WHERE w.relid = $1), 'transaction_alerts') $$;
COMMENT ON FUNCTION alert_channel(oid) IS 'pg_cep: the NOTIFY channel of a table''s alerts';

CREATE FUNCTION set_alert_state(alert_id bigint, state text, note text DEFAULT NULL)
RETURNS SETOF alerts LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed @extschema@.alerts;
    payload text;
BEGIN
    IF alert_id IS NULL OR state IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN alert_id IS NULL THEN 'alert_id' ELSE 'state' END
            USING ERRCODE = '22004';
    END IF;
    IF state NOT IN ('open', 'acknowledged', 'resolved') THEN
        RAISE EXCEPTION 'state: % is not an alert state (expected open, acknowledged or resolved)', state
            USING ERRCODE = '22023';
    END IF;
    UPDATE @extschema@.alerts a
    SET state = set_alert_state.state, state_changed_at = now(), state_changed_by = current_user,
        note = coalesce(set_alert_state.note, a.note)
    WHERE a.alert_id = set_alert_state.alert_id
    RETURNING a.* INTO changed;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'alert_id: alert % does not exist, or belongs to a table you may not read', alert_id
            USING ERRCODE = 'P0002';
    END IF;
    PERFORM @extschema@.alert_state_changed();
    payload := json_build_object(
        'type', 'alert_state', 'alert_id', changed.alert_id, 'table', left(changed.table_name, 200),
        'key', left(changed.key, 200), 'state', changed.state, 'by', changed.state_changed_by,
        'note', left(changed.note, 1000), 'ts', changed.state_changed_at)::text;
    -- NOTIFY refuses 8000 bytes; escaping can make 1,400 characters six times as many bytes.
    IF octet_length(payload) >= 8000 THEN
        payload := json_build_object(
            'type', 'alert_state', 'alert_id', changed.alert_id, 'table', left(changed.table_name, 50),
            'key', left(changed.key, 50), 'state', changed.state, 'by', changed.state_changed_by,
            'ts', changed.state_changed_at, 'truncated', true)::text;
    END IF;
    PERFORM pg_notify(@extschema@.alert_channel(changed.relid), payload);
    RETURN NEXT changed;
END $$;
COMMENT ON FUNCTION set_alert_state(bigint, text, text) IS 'pg_cep: moves an alert to open, acknowledged or resolved, and notifies';

CREATE FUNCTION acknowledge_alert(alert_id bigint, note text DEFAULT NULL) RETURNS SETOF alerts
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.set_alert_state(alert_id, 'acknowledged', note) $$;
CREATE FUNCTION resolve_alert(alert_id bigint, note text DEFAULT NULL) RETURNS SETOF alerts
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.set_alert_state(alert_id, 'resolved', note) $$;

-- Who may change an alert's state: whoever may read it (its table's readers), and only those columns.
GRANT UPDATE (state, state_changed_at, state_changed_by, note) ON alerts TO PUBLIC;
CREATE POLICY cep_responders ON alerts FOR UPDATE USING (pg_catalog.has_table_privilege(relid, 'SELECT'));

-- 0.3.0: what a cooldown counted in this session, written now (see cep.flush_alert_repeats).
CREATE FUNCTION flush_alert_repeats() RETURNS bigint
VOLATILE STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'flush_alert_repeats_wrapper';
CREATE FUNCTION alert_state_changed() RETURNS void
VOLATILE STRICT
LANGUAGE c
AS 'MODULE_PATHNAME', 'alert_state_changed_wrapper';

-- 0.3.0: retention of what pg_cep records outside the change log (which is partitioned, see
-- cep.manage_partitions). cep.apply_retention deletes, in batches, alerts, assessments and matches
-- older than the given ages, or the cep.alert_retention, cep.assessment_retention and
-- cep.match_retention settings; the maintenance worker calls it in its database. BRIN indexes on
-- their time make the search cheap and cost inserts next to nothing.
CREATE INDEX alerts_created_brin ON alerts USING brin (created_at);
CREATE INDEX risk_assessments_created_brin ON risk_assessments USING brin (created_at);
CREATE INDEX pattern_matches_created_brin ON pattern_matches USING brin (created_at);

CREATE FUNCTION apply_retention(alerts interval DEFAULT NULL, assessments interval DEFAULT NULL,
                                matches interval DEFAULT NULL, batch integer DEFAULT 10000)
RETURNS TABLE (table_name text, deleted bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keep interval;
    n bigint;
BEGIN
    IF batch IS NULL OR batch < 1 THEN
        RAISE EXCEPTION 'batch must be a positive number of rows' USING ERRCODE = '22023';
    END IF;
    keep := coalesce(alerts, nullif(current_setting('cep.alert_retention', true), '')::interval);
    IF keep IS NOT NULL THEN
        DELETE FROM @extschema@.alerts WHERE alert_id IN (
            SELECT a.alert_id FROM @extschema@.alerts a WHERE a.created_at < now() - keep LIMIT batch);
        GET DIAGNOSTICS n = ROW_COUNT;
        table_name := 'cep.alerts'; deleted := n; RETURN NEXT;
    END IF;
    keep := coalesce(assessments, nullif(current_setting('cep.assessment_retention', true), '')::interval);
    IF keep IS NOT NULL THEN
        DELETE FROM @extschema@.risk_assessments WHERE ctid = ANY (ARRAY(
            SELECT r.ctid FROM @extschema@.risk_assessments r WHERE r.created_at < now() - keep LIMIT batch));
        GET DIAGNOSTICS n = ROW_COUNT;
        table_name := 'cep.risk_assessments'; deleted := n; RETURN NEXT;
    END IF;
    keep := coalesce(matches, nullif(current_setting('cep.match_retention', true), '')::interval);
    IF keep IS NOT NULL THEN
        DELETE FROM @extschema@.pattern_matches WHERE match_id IN (
            SELECT m.match_id FROM @extschema@.pattern_matches m WHERE m.created_at < now() - keep LIMIT batch);
        GET DIAGNOSTICS n = ROW_COUNT;
        table_name := 'cep.pattern_matches'; deleted := n; RETURN NEXT;
    END IF;
END $$;
COMMENT ON FUNCTION apply_retention(interval, interval, interval, integer) IS 'pg_cep: deletes alerts, assessments and matches older than their retention, in batches';

-- 0.3.0: alerts on a partitioned table name their row: its primary key's column beside the time
-- column (as cep.watch now finds it).
UPDATE @extschema@.watches w SET pk_column = (
    SELECT min(a.attname) FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = w.relid AND i.indisprimary AND k.n <= i.indnkeyatts AND a.attname <> w.time_column
    HAVING count(*) = 1)
WHERE w.pk_column IS NULL;

-- 0.3.0: a rule replayed over a watched table's history before it goes live (see cep.backtest_rule).
CREATE FUNCTION backtest_rule(
	"rule" jsonb,
	"relation" regclass,
	"since" timestamp with time zone DEFAULT '-infinity',
	"until" timestamp with time zone DEFAULT 'infinity'
) RETURNS TABLE (
	"key" TEXT,
	"row_pk" TEXT,
	"event_time" timestamp with time zone,
	"rule_score" double precision,
	"total_score" double precision,
	"level" TEXT,
	"would_alert" bool,
	"would_block" bool,
	"evidence" jsonb
)
STABLE
LANGUAGE c
AS 'MODULE_PATHNAME', 'backtest_rule_wrapper';

-- 0.3.0: change some partition settings and keep the others (see cep.alter_partitions).
CREATE FUNCTION alter_partitions(
	"parent" regclass,
	"premake" INT DEFAULT NULL,
	"retention" interval DEFAULT NULL,
	"retention_mode" TEXT DEFAULT NULL,
	"default_partition" bool DEFAULT NULL,
	"force" bool DEFAULT NULL,
	"batch_size" INT DEFAULT NULL
) RETURNS jsonb
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'alter_partitions_wrapper';

-- 0.3.0: every function of pg_cep that can run SQL resolves names under a fixed search_path, so
-- that no role able to create objects in a schema of the caller's search_path (such as public)
-- can slip in a function, operator or table that pg_cep's SQL would pick instead of the built-in
-- (CVE-2018-1058). The immutable C functions (cep.tumble, cep.hop, cep.validate_rule) run no SQL,
-- and a SET clause would make each of their calls save and restore the setting. cep.stats() runs
-- only a cast of a bound oid to regclass, which resolves no name, and prints each table as the
-- caller's search_path shows it, as it always has. The trigger functions pin the same path
-- themselves, more cheaply than a SET clause (see privileges::with_pinned_search_path).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_proc p ON p.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
          AND d.refclassid = 'pg_catalog.pg_extension'::regclass
          AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_cep')
          AND p.pronamespace = '@extschema@'::regnamespace
          AND p.oid <> '@extschema@.stats()'::regprocedure
          AND p.prorettype <> 'pg_catalog.trigger'::regtype
          AND (p.proconfig IS NULL OR p.proconfig = '{search_path=pg_catalog}')
          AND NOT (p.provolatile = 'i' AND p.prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'c'))
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END $$;

-- What \df+ and \dd show for each function (every overload of a name gets its comment). The same
-- block is in finalize.sql and in the upgrade script to 0.3.0.
DO $comments$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS fn, c.comment
        FROM (VALUES
            ('acknowledge_alert', 'Marks an open alert acknowledged (who, when, note) and notifies its channel; returns the alert.'),
            ('alert_channel', 'Internal: the channel a watched table''s alerts are notified on.'),
            ('alert_state_changed', 'Internal: tells the monitor''s sessions that an alert''s state changed.'),
            ('alerts_since', 'Alerts committed after the cursor last_id, by writing transaction then id, never skipping one still in flight.'),
            ('alter_partitions', 'Changes some partition settings of a managed table, keeping the others; returns the settings in effect.'),
            ('alter_watch', 'Changes some settings of a watch, keeping the others; returns the settings in effect.'),
            ('apply_retention', 'Deletes alerts, assessments and pattern matches older than the retention settings, in batches.'),
            ('assess_transaction', 'Scores one transaction with the risk rules: total score, level, the rules that fired and why.'),
            ('backtest_rule', 'Replays a table''s history through a rule, unsaved: what it would have alerted and blocked.'),
            ('capture', 'Logs a table''s changes to cep.change_log, with correlation and anomaly alerts; returns the table.'),
            ('capture_trigger', 'Internal: the trigger that cep.capture attaches.'),
            ('changes_since', 'Change log rows committed after the cursor last_id, by writing transaction then id, never skipping one still in flight.'),
            ('correlated_events', 'Changes that share a change''s transaction or fall near it in time, and how they relate.'),
            ('correlation_patterns', 'Pairs of event types that occur in the same transaction, with counts, over a time range.'),
            ('create_monthly_partition', 'Creates (if missing) the partition of a managed table for one month; returns it.'),
            ('define_pattern', 'Defines a live sequence pattern (row pattern over a table''s inserts); matches go to cep.pattern_matches.'),
            ('drop_pattern', 'Drops a live sequence pattern and its partial matches.'),
            ('evaluate_risk_rules', 'Evaluates every active risk rule for one transaction: one row per rule, with evidence.'),
            ('fire_timeouts', 'Completes or expires pattern runs whose within interval has passed (the background worker calls it).'),
            ('flush_alert_repeats', 'Writes the repeat counts of alerts under a cooldown that this session holds in memory.'),
            ('forget_dropped_tables', 'Internal: removes pg_cep''s configuration of dropped tables.'),
            ('hop', 'The hopping windows of a given width and slide that contain a timestamp.'),
            ('invalidate_cep_cache', 'Internal: tells sessions that pg_cep''s configuration changed.'),
            ('manage_partitions', 'Manages a range-partitioned table by month: premade partitions, retention, default partition.'),
            ('match_recognize', 'Runs a row pattern over a table''s history, like MATCH_RECOGNIZE, and returns the matches.'),
            ('matches_since', 'Pattern matches committed after the cursor last_id, by writing transaction then id, never skipping one still in flight.'),
            ('monitor', 'Internal: the monitor''s statement trigger, which scores a statement''s new rows.'),
            ('monitor_changes', 'Internal: the monitor''s trigger for updates and deletes (window cache and rollups).'),
            ('monitor_row', 'Internal: the monitor''s row trigger, which scores each new row.'),
            ('notification_queue', 'The queue of notifications sent after commit: sender running, notifications waiting, and those of undecided prepared transactions.'),
            ('partitions', 'The partitions of a managed table, with their ranges and row estimates.'),
            ('pattern_source', 'Internal: the table a pattern reads, for row-level security on cep.pattern_matches.'),
            ('pattern_trigger', 'Internal: the trigger that runs a table''s live patterns.'),
            ('realtime_stats', 'Totals, active keys and top keys of a watched table over a recent window, from the rollups.'),
            ('resolve_alert', 'Marks an alert resolved (who, when, note) and notifies its channel; returns the alert.'),
            ('risk_rules_before_write', 'Internal: checks a risk rule when it is written, so a bad rule is refused.'),
            ('rollup_activity', 'Internal: rows and delay per minute of a table, for cep.streaming_performance.'),
            ('rollup_load', 'Internal: loads a table''s rollups into shared memory.'),
            ('rollup_memory', 'The shared memory the rollups use, per table.'),
            ('rollup_rebuild', 'Rebuilds a table''s rollups from its rows since a time; returns the rows read.'),
            ('rollup_totals', 'Internal: a table''s rollup totals since a time.'),
            ('rollup_window', 'Internal: a table''s rollup totals and top keys since a time.'),
            ('run_maintenance', 'Runs partition maintenance now (premake and retention) for one managed table or all.'),
            ('set_alert_state', 'Sets an alert''s state (open, acknowledged, resolved) with a note and notifies its channel.'),
            ('stats', 'Per watched table: rows seen, alerts, blocks and the monitor''s time, since the server started.'),
            ('stats_reset', 'Resets the counters of cep.stats().'),
            ('stored_key', 'A key as cep.alerts, cep.pattern_state and cep.change_log store it: itself up to 1024 bytes, else its first bytes and its SHA-256.'),
            ('tumble', 'The start of the tumbling window of a given width that contains a timestamp.'),
            ('uncapture', 'Stops logging a table''s changes; the change log keeps what it has.'),
            ('unmanage_partitions', 'Stops managing a partitioned table; its partitions stay.'),
            ('unwatch', 'Stops watching a table: removes the monitor''s triggers; alerts stay.'),
            ('validate_rule', 'Checks a risk rule without saving it: the parsed rule, or the error with its position.'),
            ('watch', 'Watches a table: scores every inserted row against the risk rules, writes alerts, notifies, can block.'),
            ('watch_rollups', 'Turns the per-minute rollups of a watched table on or off.'),
            ('window_aggregate', 'Count, sum and distinct keys per tumbling or hopping window over a table, with no gaps.'),
            ('window_cache', 'What the shared window cache holds: keys, events, evictions, per table.'),
            ('window_cache_warm', 'Loads a watched table''s recent events into the shared window cache; returns the keys loaded.')
        ) AS c(name, comment)
        JOIN pg_catalog.pg_proc p ON p.proname = c.name AND p.pronamespace = '@extschema@'::regnamespace
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', f.fn, f.comment);
    END LOOP;
END
$comments$;

-- 0.3.0: a live pattern with emit => 'final' reports MEASURES (with SUBSET names) on each match,
-- stored with it and sent in its notification.
ALTER TABLE patterns ADD COLUMN measures jsonb;
ALTER TABLE patterns ADD COLUMN subset jsonb;
ALTER TABLE pattern_matches ADD COLUMN measures jsonb;

-- 0.3.0: with a cooldown, each repeat updates its open alert (repeats, last_seen, max_score, none
-- of them indexed). Room left on each page lets that update stay on the page (a HOT update, no
-- index entries); on full pages every repeat wrote an entry in each of the alert's indexes.
ALTER TABLE alerts SET (fillfactor = 70);

-- 0.3.0: settings 0.2.0 accepted and 0.3.0 refuses (see below) are replaced by the defaults
-- (channels) or 100 years (windows), with a WARNING naming them.
DO $fix$
DECLARE
    fixed text;
BEGIN
    WITH c AS (
        UPDATE @extschema@.captures SET
            channel = CASE WHEN octet_length(channel) BETWEEN 1 AND 63 THEN channel ELSE 'cep_changes' END,
            anomaly_channel = CASE WHEN octet_length(anomaly_channel) BETWEEN 1 AND 63 THEN anomaly_channel ELSE 'cep_anomalies' END,
            high_frequency_window = LEAST(high_frequency_window, interval '100 years'),
            mass_deletion_window = LEAST(mass_deletion_window, interval '100 years')
        WHERE octet_length(channel) NOT BETWEEN 1 AND 63 OR octet_length(anomaly_channel) NOT BETWEEN 1 AND 63
           OR high_frequency_window > interval '100 years' OR mass_deletion_window > interval '100 years'
        RETURNING 'capture of ' || relid::regclass::text AS what),
    p AS (
        UPDATE @extschema@.patterns SET channel = 'pattern_matches'
        WHERE octet_length(channel) NOT BETWEEN 1 AND 63
        RETURNING 'pattern ' || pg_catalog.quote_literal(name) AS what),
    w AS (
        UPDATE @extschema@.watches SET channel = 'transaction_alerts'
        WHERE octet_length(channel) NOT BETWEEN 1 AND 63
        RETURNING 'watch of ' || relid::regclass::text AS what)
    SELECT pg_catalog.string_agg(what, ', ' ORDER BY what) INTO fixed FROM (SELECT what FROM c UNION ALL SELECT what FROM p UNION ALL SELECT what FROM w) f;
    IF fixed IS NOT NULL THEN
        RAISE WARNING 'pg_cep: settings NOTIFY or timestamp arithmetic would refuse were replaced (channels by their defaults, windows by 100 years): %', fixed;
    END IF;
END
$fix$;

-- 0.3.0: what NOTIFY and timestamp arithmetic would refuse later is refused when written: a
-- channel of 1 to 63 bytes, a capture's anomaly windows longer than 0 and at most 100 years.
-- cep.watch, cep.capture and cep.define_pattern say so with a clear error; these constraints
-- keep direct writes to the configuration tables to the same. A bad channel found only at
-- commit failed every transaction that wrote the table, and a window reaching back past the
-- earliest timestamp failed every write that counted the table's changes.
ALTER TABLE watches ADD CONSTRAINT watches_channel_notify CHECK (octet_length(channel) BETWEEN 1 AND 63);
ALTER TABLE captures ADD CONSTRAINT captures_channels_notify
    CHECK (octet_length(channel) BETWEEN 1 AND 63 AND octet_length(anomaly_channel) BETWEEN 1 AND 63);
ALTER TABLE captures ADD CONSTRAINT captures_windows_bounded
    CHECK (high_frequency_window <= interval '100 years' AND mass_deletion_window <= interval '100 years');
ALTER TABLE patterns ADD CONSTRAINT patterns_channel_notify CHECK (octet_length(channel) BETWEEN 1 AND 63);

-- 0.3.0: a prepared transaction's notifications. It cannot NOTIFY, so it writes them here before
-- it is prepared: COMMIT PREPARED commits them, ROLLBACK PREPARED drops them, and a restart in
-- between keeps them, as it keeps the transaction. The database's notification sender sends and
-- deletes them once committed; the table is empty otherwise. Written and read as the extension's
-- owner only.
CREATE TABLE prepared_notices (
    notice_id bigserial PRIMARY KEY,
    channel   text NOT NULL,
    payload   text NOT NULL
);
COMMENT ON TABLE prepared_notices IS 'pg_cep: notifications of prepared transactions, sent by the database''s sender once they commit';
