-- pg_cep finalize: triggers that need the extension's functions.

-- A rule is checked when it is written, so a bad rule never reaches the monitor.
CREATE FUNCTION risk_rules_before_write() RETURNS trigger
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

CREATE TRIGGER risk_rules_validate
    BEFORE INSERT OR UPDATE ON risk_rules
    FOR EACH ROW EXECUTE FUNCTION risk_rules_before_write();

CREATE TRIGGER risk_rules_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_rules
    FOR EACH STATEMENT EXECUTE FUNCTION invalidate_cep_cache();

CREATE TRIGGER watches_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON watches
    FOR EACH STATEMENT EXECUTE FUNCTION invalidate_cep_cache();


CREATE TRIGGER patterns_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON patterns
    FOR EACH STATEMENT EXECUTE FUNCTION invalidate_cep_cache();

CREATE TRIGGER captures_invalidate
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON captures
    FOR EACH STATEMENT EXECUTE FUNCTION invalidate_cep_cache();

-- A consumer that was away catches up from the last change it saw. Changes come in transaction
-- order (then id), and only once every older transaction has ended: a transaction that commits
-- later can take a smaller change id, but never an earlier place in this order, so reading on
-- from the last change seen misses nothing.
CREATE FUNCTION changes_since(last_id bigint, max_rows integer DEFAULT 1000, relation regclass DEFAULT NULL)
RETURNS SETOF change_log LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH last AS (
        SELECT coalesce((SELECT correlation_id FROM @extschema@.change_log WHERE change_id = last_id), '0'::xid8) AS xid)
    SELECT c.* FROM @extschema@.change_log c, last
    WHERE (c.correlation_id, c.change_id) > (last.xid, last_id)
      AND c.correlation_id < pg_snapshot_xmin(pg_current_snapshot())
      AND (relation IS NULL OR c.relid = relation)
    ORDER BY c.correlation_id, c.change_id
    LIMIT max_rows
$$;

-- The changes related to one change within a time window, under seed 000's three relations: the
-- same transaction, the same entity (table and primary key), and a relationship whose from or to
-- id is a node's id.
CREATE FUNCTION correlated_events(event_id bigint, time_window interval DEFAULT '300 seconds')
RETURNS TABLE (change_id bigint, relation text, event_type text, table_name text, pk text,
               changed_at timestamptz, correlation_id xid8)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH e AS (SELECT * FROM @extschema@.change_log WHERE change_id = event_id),
    nodes AS (SELECT relid FROM @extschema@.captures WHERE kind = 'node'),
    related AS (
        SELECT c.*, 1 AS rank, 'same_correlation' AS relation
        FROM e JOIN @extschema@.change_log c ON c.correlation_id = e.correlation_id
        UNION ALL
        SELECT c.*, 2, 'same_entity'
        FROM e JOIN @extschema@.change_log c ON c.relid = e.relid AND c.pk = e.pk
                                            AND c.changed_at BETWEEN e.changed_at - time_window AND e.changed_at + time_window
        UNION ALL
        SELECT c.*, 3, 'relationship_endpoint'
        FROM e JOIN @extschema@.change_log c ON e.event_type LIKE 'node%' AND c.event_type LIKE 'relationship%'
                                              AND (c.from_id = e.pk OR c.to_id = e.pk)
        UNION ALL
        SELECT c.*, 3, 'relationship_endpoint'
        FROM e JOIN @extschema@.change_log c ON e.event_type LIKE 'relationship%' AND c.relid IN (SELECT relid FROM nodes)
                                              AND c.pk IN (e.from_id, e.to_id)
                                              AND c.changed_at BETWEEN e.changed_at - time_window AND e.changed_at + time_window
    )
    SELECT DISTINCT ON (r.change_id) r.change_id, r.relation, r.event_type, r.table_name, r.pk, r.changed_at, r.correlation_id
    FROM related r, e
    WHERE r.change_id <> e.change_id
      AND r.changed_at BETWEEN e.changed_at - time_window AND e.changed_at + time_window
    ORDER BY r.change_id, r.rank
$$;

-- Groups of changes made by one transaction, labelled as seed 000's correlation processor labels
-- them: transaction_pattern (several changes in one transaction), cascade_operation (node and
-- relationship changes together).
CREATE FUNCTION correlation_patterns(since timestamptz DEFAULT now() - interval '1 hour', until timestamptz DEFAULT 'infinity')
RETURNS TABLE (correlation_id xid8, changes bigint, first_change bigint, last_change bigint, started timestamptz,
               node_changes bigint, relationship_changes bigint, patterns text[])
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT correlation_id, count(*), min(change_id), max(change_id), min(changed_at),
           count(*) FILTER (WHERE event_type LIKE 'node%'),
           count(*) FILTER (WHERE event_type LIKE 'relationship%'),
           array_remove(ARRAY[
               'transaction_pattern',
               CASE WHEN count(*) FILTER (WHERE event_type LIKE 'node%') > 0
                     AND count(*) FILTER (WHERE event_type LIKE 'relationship%') > 0 THEN 'cascade_operation' END], NULL)
    FROM @extschema@.change_log
    WHERE changed_at >= since AND changed_at < until
    GROUP BY correlation_id
    HAVING count(*) > 1
    ORDER BY min(change_id)
$$;

-- Seed 003's real_time_stats: totals, volume, average, active keys and the top keys by amount in
-- the window, which is whole minutes from the minute that holds now() - time_window. Answered
-- from the shared rollups (source 'memory') when they are exact for the window, in time
-- proportional to the keys active in it, not its rows; otherwise from the rows (source 'rows').
CREATE FUNCTION realtime_stats(relation regclass, time_window interval DEFAULT '5 minutes', top integer DEFAULT 10)
RETURNS TABLE (window_start timestamptz, total_transactions bigint, total_volume float8, avg_transaction float8,
               min_amount float8, max_amount float8, active_users bigint, top_users jsonb, source text)
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    since timestamptz := date_bin('1 minute', now() - time_window, '2000-01-01 00:00:00+00');
    w @extschema@.watches;
BEGIN
    SELECT * INTO w FROM @extschema@.watches WHERE relid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched', relation USING ERRCODE = '55000',
            HINT = 'realtime_stats reads what the monitor keeps for watched tables: cep.watch it first.';
    END IF;
    IF top < 0 THEN
        RAISE EXCEPTION 'top must be 0 or more, not %', top USING ERRCODE = '22023';
    END IF;
    IF w.rollups THEN
        RETURN QUERY SELECT * FROM @extschema@.rollup_window(relation, since, top);
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH k AS (
             SELECT %3$I::text AS key, count(*) AS n, coalesce(sum(%2$I), 0)::float8 AS total,
                    min(%2$I)::float8 AS lo, max(%2$I)::float8 AS hi
             FROM %4$s WHERE %1$I >= $1 AND %3$I IS NOT NULL GROUP BY 1)
         SELECT $1, coalesce(sum(n), 0)::bigint, coalesce(sum(total), 0)::float8, sum(total) / nullif(sum(n), 0)::float8,
                min(lo), max(hi), count(*),
                coalesce((SELECT jsonb_agg(jsonb_build_object(''key'', x.key, ''transactions'', x.n, ''total'', x.total,
                                                              ''avg'', x.total / x.n) ORDER BY x.total DESC, x.key COLLATE "C")
                          FROM (SELECT * FROM k ORDER BY k.total DESC, k.key COLLATE "C" LIMIT $2) x), ''[]''::jsonb),
                ''rows''::text
         FROM k',
        w.time_column, w.amount_column, w.key_column, relation) USING since, top;
END $$;

-- Puts a watched table's rollups in memory, read from its rows from `since` on (whole minutes):
-- after a restart, after UPDATEs or DELETEs (which the rollups do not follow), or for rows loaded
-- before the table was watched. Memory keeps the last hour of totals and the last minutes per key,
-- so no more than that is read. Returns the minutes read.
CREATE FUNCTION rollup_rebuild(relation regclass, since timestamptz DEFAULT '-infinity')
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w @extschema@.watches;
    origin constant timestamptz := '2000-01-01 00:00:00+00';
    this_minute constant timestamptz := date_bin('1 minute', now(), '2000-01-01 00:00:00+00');
    totals_since timestamptz;
    keys_since timestamptz;
    m timestamptz[]; c int8[]; s float8[]; lo float8[]; hi float8[];
    km timestamptz[]; k text[]; kc int8[]; ks float8[];
BEGIN
    SELECT * INTO w FROM @extschema@.watches WHERE relid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched', relation USING ERRCODE = '55000', HINT = 'Watch it with cep.watch first.';
    ELSIF NOT w.rollups THEN
        RAISE EXCEPTION 'the monitor keeps no rollups for %', relation USING ERRCODE = '55000',
            HINT = 'Turn them on with cep.watch_rollups first.';
    ELSIF current_setting('transaction_isolation') <> 'read committed' THEN
        -- An older snapshot would miss rows committed before the lock below.
        RAISE EXCEPTION 'cep.rollup_rebuild needs READ COMMITTED, not %', upper(current_setting('transaction_isolation'))
            USING ERRCODE = '25000';
    END IF;
    -- No rows commit while the rollups are read from them: INSERTs wait until this commits.
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', relation);
    totals_since := greatest(CASE WHEN isfinite(since) THEN date_bin('1 minute', since, origin) END,
                             this_minute - interval '63 minutes');
    keys_since := greatest(totals_since, this_minute - interval '7 minutes');
    EXECUTE format(
        'SELECT array_agg(m ORDER BY m), array_agg(n ORDER BY m), array_agg(s ORDER BY m), array_agg(lo ORDER BY m),
                array_agg(hi ORDER BY m)
         FROM (SELECT date_bin(''1 minute'', %1$I::timestamptz, $2) AS m, count(*) AS n, coalesce(sum(%2$I), 0)::float8 AS s,
                      min(%2$I)::float8 AS lo, max(%2$I)::float8 AS hi
               FROM %4$s WHERE %1$I >= $1 AND %3$I IS NOT NULL GROUP BY 1) g',
        w.time_column, w.amount_column, w.key_column, relation) USING totals_since, origin INTO m, c, s, lo, hi;
    EXECUTE format(
        'SELECT array_agg(m), array_agg(k), array_agg(n), array_agg(s)
         FROM (SELECT date_bin(''1 minute'', %1$I::timestamptz, $2) AS m, %3$I::text AS k, count(*) AS n,
                      coalesce(sum(%2$I), 0)::float8 AS s
               FROM %4$s WHERE %1$I >= $1 AND %3$I IS NOT NULL GROUP BY 1, 2) g',
        w.time_column, w.amount_column, w.key_column, relation) USING keys_since, origin INTO km, k, kc, ks;
    PERFORM @extschema@.rollup_load(relation, totals_since, keys_since, coalesce(m, '{}'), coalesce(c, '{}'),
        coalesce(s, '{}'), coalesce(lo, '{}'), coalesce(hi, '{}'), coalesce(km, '{}'), coalesce(k, '{}'),
        coalesce(kc, '{}'), coalesce(ks, '{}'));
    RETURN coalesce(cardinality(m), 0);
END $$;

-- A watched table's rows from `since` on, and their mean age in seconds (from the middle of each
-- minute, as the rollups see them): from memory when it is exact, otherwise from the rows.
CREATE FUNCTION rollup_activity(relation regclass, since timestamptz, OUT row_count bigint, OUT avg_delay_s float8)
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w @extschema@.watches;
BEGIN
    SELECT * INTO w FROM @extschema@.watches WHERE relid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched', relation USING ERRCODE = '55000', HINT = 'Watch it with cep.watch first.';
    END IF;
    IF w.rollups THEN
        SELECT t.row_count, t.avg_delay_s INTO row_count, avg_delay_s FROM @extschema@.rollup_totals(relation, since) t;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    EXECUTE format(
        'SELECT count(*), avg(extract(epoch FROM now() - (date_bin(''1 minute'', %1$I::timestamptz, ''2000-01-01 00:00:00+00'')
                                                       + interval ''30 seconds'')))::float8
         FROM %3$s WHERE %1$I >= $1 AND %2$I IS NOT NULL',
        w.time_column, w.key_column, relation) USING since INTO row_count, avg_delay_s;
END $$;

-- What seed 003's streaming_performance view wanted, for each watched table: rows in the last
-- minute and hour, active keys and the average delay between a row's time and now (from the
-- rollups, or the rows), the monitor's own counters (cep.stats()), and the notification queue's
-- usage.
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

-- 0.3.0: a live pattern can emit each match once it is final (emit => 'final'): the SQL
-- standard's preferred match, the one cep.match_recognize returns over the same rows. Patterns
-- defined before keep emitting eagerly.
ALTER TABLE patterns ADD COLUMN emit text NOT NULL DEFAULT 'eager' CHECK (emit IN ('eager', 'final'));

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

-- 0.3.0: a rule can be scoped to some watched tables (tables), turned off on others
-- (except_tables), and run in shadow mode (mode = 'shadow': scored and recorded in
-- cep.risk_assessments with level 'shadow', never alerting nor blocking). Each is part of the
-- rule's content: changing it makes a new version.
ALTER TABLE risk_rules
    ADD COLUMN tables oid[],
    ADD COLUMN except_tables oid[],
    ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'shadow'));

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
