-- Three graph-node tables: bare, captured by pg_cep, and with the usual PL/pgSQL audit trigger
-- (one log row and one NOTIFY per changed row).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cep;
DROP TABLE IF EXISTS cap_bare, cap_cep, cap_plpgsql, cap_plpgsql_log;
DROP FUNCTION IF EXISTS cap_plpgsql_audit();
CREATE TABLE cap_bare (id bigserial PRIMARY KEY, label text NOT NULL, properties jsonb NOT NULL DEFAULT '{}');
CREATE TABLE cap_cep (LIKE cap_bare INCLUDING ALL);
CREATE TABLE cap_plpgsql (LIKE cap_bare INCLUDING ALL);
SELECT cep.capture('cap_cep', kind => 'node', channel => 'bench_changes');

CREATE TABLE cap_plpgsql_log (change_id bigserial PRIMARY KEY, changed_at timestamptz NOT NULL DEFAULT now(),
                              table_name text, op text, pk text, new_row jsonb, old_row jsonb,
                              correlation_id xid8 NOT NULL DEFAULT pg_current_xact_id());
CREATE FUNCTION cap_plpgsql_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cap_plpgsql_log (table_name, op, pk, new_row, old_row)
    VALUES (TG_TABLE_NAME, TG_OP, coalesce(NEW.id, OLD.id)::text,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END, CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END);
    PERFORM pg_notify('bench_changes_plpgsql', json_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'id', coalesce(NEW.id, OLD.id))::text);
    RETURN NULL;
END $$;
CREATE TRIGGER cap_plpgsql_audit AFTER INSERT OR UPDATE OR DELETE ON cap_plpgsql FOR EACH ROW EXECUTE FUNCTION cap_plpgsql_audit();
