-- pg_cep finalize: triggers that need the extension's functions.

-- A rule is checked when it is written, so a bad rule never reaches the monitor.
CREATE FUNCTION risk_rules_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@.validate_rule(jsonb_build_object(
        'rule_type', NEW.rule_type, 'rule_condition', NEW.rule_condition, 'risk_score', NEW.risk_score));
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.rule_type, NEW.rule_condition, NEW.risk_score, NEW.is_active, NEW.rule_name)
           IS DISTINCT FROM (OLD.rule_type, OLD.rule_condition, OLD.risk_score, OLD.is_active, OLD.rule_name) THEN
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

-- Seed 003's real_time_stats, answered from the rollups: time proportional to the minutes and
-- keys in the window, not to its rows. The window is whole minutes, from the minute that holds
-- now() - time_window.
CREATE FUNCTION realtime_stats(relation regclass, time_window interval DEFAULT '5 minutes', top integer DEFAULT 10)
RETURNS TABLE (window_start timestamptz, total_transactions bigint, total_volume float8, avg_transaction float8,
               min_amount float8, max_amount float8, active_users bigint, top_users jsonb)
-- PL/pgSQL, not SQL: its plans see the window's bounds, so they read the window's index range
-- instead of planning for any range (which scans every rollup).
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    since timestamptz := date_trunc('minute', now() - time_window);
    kept boolean;
BEGIN
    SELECT w.rollups INTO kept FROM @extschema@.watches w WHERE w.relid = relation;
    IF kept IS NULL THEN
        RAISE EXCEPTION '% is not watched', relation USING ERRCODE = '55000',
            HINT = 'realtime_stats reads the rollups the monitor keeps for watched tables: cep.watch it first.';
    ELSIF NOT kept THEN
        RAISE EXCEPTION 'the monitor keeps no rollups for %', relation USING ERRCODE = '55000',
            HINT = 'Turn them on with cep.watch_rollups, and fill the gap with cep.rollup_rebuild.';
    END IF;
    RETURN QUERY
    WITH t AS (
        SELECT sum(r.count)::bigint AS n, sum(r.sum) AS volume, min(r.min) AS lo, max(r.max) AS hi
        FROM @extschema@.rollups r WHERE r.relid = relation AND r.minute >= since),
    k AS (
        SELECT r.key, sum(r.count)::bigint AS n, sum(r.sum) AS total
        FROM @extschema@.key_rollups r WHERE r.relid = relation AND r.minute >= since
        GROUP BY r.key)
    SELECT since, coalesce(t.n, 0::bigint), coalesce(t.volume, 0::float8), t.volume / nullif(t.n, 0), t.lo, t.hi,
           (SELECT count(*) FROM k),
           coalesce((SELECT jsonb_agg(jsonb_build_object('key', x.key, 'transactions', x.n, 'total', x.total, 'avg', x.total / x.n)
                                      ORDER BY x.total DESC, x.key)
                     FROM (SELECT * FROM k ORDER BY k.total DESC, k.key LIMIT top) x), '[]'::jsonb)
    FROM t;
END $$;

-- Rebuilds a watched table's rollups from its rows, from `since` on (whole minutes): after
-- UPDATEs or DELETEs, which the rollups do not follow, or for rows loaded before it was watched.
CREATE FUNCTION rollup_rebuild(relation regclass, since timestamptz DEFAULT '-infinity')
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w @extschema@.watches;
    minutes bigint;
BEGIN
    SELECT * INTO w FROM @extschema@.watches WHERE relid = relation;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched', relation USING ERRCODE = '55000', HINT = 'Watch it with cep.watch first.';
    END IF;
    -- No rows arrive while the rollups are rebuilt from them: INSERTs wait until it commits.
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', relation);
    DELETE FROM @extschema@.rollups WHERE relid = relation AND minute >= date_trunc('minute', since);
    DELETE FROM @extschema@.key_rollups WHERE relid = relation AND minute >= date_trunc('minute', since);
    EXECUTE format(
        'INSERT INTO @extschema@.key_rollups (relid, minute, key, count, sum, min, max)
         SELECT $1, date_trunc(''minute'', %1$I), %3$I::text, count(*), coalesce(sum(%2$I), 0), min(%2$I), max(%2$I)
         FROM %4$s WHERE %1$I >= date_trunc(''minute'', $2) AND %3$I IS NOT NULL GROUP BY 2, 3',
        w.time_column, w.amount_column, w.key_column, relation) USING relation, since;
    INSERT INTO @extschema@.rollups (relid, minute, shard, count, sum, min, max)
    SELECT relation, minute, 0, sum(count), sum(sum), min(min), max(max)
    FROM @extschema@.key_rollups WHERE relid = relation AND minute >= date_trunc('minute', since)
    GROUP BY minute;
    GET DIAGNOSTICS minutes = ROW_COUNT;
    RETURN minutes;
END $$;

-- What seed 003's streaming_performance view wanted, for each watched table: rows in the last
-- minute and hour and active keys (from the rollups), the average delay between a row's time and
-- now, the monitor's own counters (cep.stats()), and the notification queue's usage.
CREATE VIEW streaming_performance AS
    SELECT w.relid::regclass::text AS table_name,
           coalesce((SELECT sum(count) FROM @extschema@.rollups r
                     WHERE r.relid = w.relid AND r.minute >= date_trunc('minute', now() - interval '1 minute')), 0)::bigint AS rows_last_minute,
           coalesce((SELECT sum(count) FROM @extschema@.rollups r
                     WHERE r.relid = w.relid AND r.minute >= date_trunc('minute', now() - interval '1 hour')), 0)::bigint AS rows_last_hour,
           (SELECT count(DISTINCT key) FROM @extschema@.key_rollups k
             WHERE k.relid = w.relid AND k.minute >= date_trunc('minute', now() - interval '1 hour')) AS active_keys_last_hour,
           (SELECT sum(extract(epoch FROM now() - (r.minute + interval '30 seconds')) * r.count) / nullif(sum(r.count), 0)
              FROM @extschema@.rollups r
             WHERE r.relid = w.relid AND r.minute >= date_trunc('minute', now() - interval '1 hour')) AS avg_processing_delay_s,
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
    LEFT JOIN @extschema@.stats() s ON to_regclass(s.table_name) = w.relid;
