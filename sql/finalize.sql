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
