-- Three event tables: bare, with pg_cep's checkout pattern, and with a hand-written PL/pgSQL
-- state machine for the same pattern (one partial match per user; the seed's Python NFA has no
-- time limit and forgets the user, so this is the fair PL/pgSQL equivalent).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cep;
SELECT cep.drop_pattern('bench_checkout');
SELECT cep.drop_pattern('bench_checkout_final');
DROP TABLE IF EXISTS ev_bare, ev_cep, ev_final, ev_plpgsql, ev_plpgsql_state, ev_plpgsql_matches;
DROP FUNCTION IF EXISTS ev_plpgsql_checkout();
CREATE TABLE ev_bare (id bigserial PRIMARY KEY, user_id integer NOT NULL, event_type text NOT NULL,
                      amount numeric(12,2), created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE ev_cep (LIKE ev_bare INCLUDING ALL);
CREATE TABLE ev_plpgsql (LIKE ev_bare INCLUDING ALL);

SELECT cep.define_pattern('bench_checkout', 'ev_cep', 'user_id', 'created_at', 'login browse+ purchase',
    '{"login": {"event_type": "login"}, "browse": {"event_type": "browse"}, "purchase": {"event_type": "purchase"}}',
    within => '30 minutes', channel => 'bench_checkout');
-- The same pattern as the SQL standard reads it: consecutive rows of a user (strict), each match
-- emitted once final (emit => 'final', the default for a strict pattern).
CREATE TABLE ev_final (LIKE ev_bare INCLUDING ALL);
SELECT cep.define_pattern('bench_checkout_final', 'ev_final', 'user_id', 'created_at', 'login browse+ purchase',
    '{"login": {"event_type": "login"}, "browse": {"event_type": "browse"}, "purchase": {"event_type": "purchase"}}',
    within => '30 minutes', contiguity => 'strict', channel => 'bench_checkout');

CREATE TABLE ev_plpgsql_state (user_id integer PRIMARY KEY, stage text NOT NULL, started timestamptz NOT NULL, ids bigint[] NOT NULL);
CREATE TABLE ev_plpgsql_matches (match_id bigserial PRIMARY KEY, user_id integer, ids bigint[], created_at timestamptz DEFAULT now());
CREATE FUNCTION ev_plpgsql_checkout() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE s ev_plpgsql_state;
BEGIN
    SELECT * INTO s FROM ev_plpgsql_state WHERE user_id = NEW.user_id FOR UPDATE;
    IF FOUND AND NEW.created_at - s.started > interval '30 minutes' THEN
        DELETE FROM ev_plpgsql_state WHERE user_id = NEW.user_id;
        s := NULL;
    END IF;
    IF NEW.event_type = 'login' AND s.user_id IS NULL THEN
        -- Another session may have started this user's match since: take it over.
        INSERT INTO ev_plpgsql_state VALUES (NEW.user_id, 'login', NEW.created_at, ARRAY[NEW.id])
        ON CONFLICT (user_id) DO UPDATE SET stage = 'login', started = excluded.started, ids = excluded.ids;
    ELSIF NEW.event_type = 'browse' AND s.stage IN ('login', 'browse') THEN
        UPDATE ev_plpgsql_state SET stage = 'browse', ids = ids || NEW.id WHERE user_id = NEW.user_id;
    ELSIF NEW.event_type = 'purchase' AND s.stage = 'browse' THEN
        DELETE FROM ev_plpgsql_state WHERE user_id = NEW.user_id;
        INSERT INTO ev_plpgsql_matches (user_id, ids) VALUES (NEW.user_id, s.ids || NEW.id);
        PERFORM pg_notify('bench_checkout_plpgsql', json_build_object('user_id', NEW.user_id, 'ids', s.ids || NEW.id)::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ev_plpgsql_checkout AFTER INSERT ON ev_plpgsql FOR EACH ROW EXECUTE FUNCTION ev_plpgsql_checkout();
