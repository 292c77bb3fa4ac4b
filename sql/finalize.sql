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

-- A consumer that was away catches up from the last change id it saw. Changes appear once every
-- transaction that started before them has ended, so a later transaction's smaller id is never
-- skipped: nothing is missed, in id order.
CREATE FUNCTION changes_since(last_id bigint, max_rows integer DEFAULT 1000, relation regclass DEFAULT NULL)
RETURNS SETOF change_log LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM @extschema@.change_log
    WHERE change_id > last_id
      AND correlation_id < pg_snapshot_xmin(pg_current_snapshot())
      AND (relation IS NULL OR relid = relation)
    ORDER BY change_id
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
    related AS (
        SELECT c.*, 1 AS rank, 'same_correlation' AS relation
        FROM e JOIN @extschema@.change_log c ON c.correlation_id = e.correlation_id
        UNION ALL
        SELECT c.*, 2, 'same_entity'
        FROM e JOIN @extschema@.change_log c ON c.pk = e.pk AND c.relid = e.relid
        UNION ALL
        SELECT c.*, 3, 'relationship_endpoint'
        FROM e JOIN @extschema@.change_log c ON e.event_type LIKE 'node%' AND c.event_type LIKE 'relationship%'
                                              AND (c.from_id = e.pk OR c.to_id = e.pk)
        UNION ALL
        SELECT c.*, 3, 'relationship_endpoint'
        FROM e JOIN @extschema@.change_log c ON e.event_type LIKE 'relationship%' AND c.event_type LIKE 'node%'
                                              AND c.pk IN (e.from_id, e.to_id)
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
