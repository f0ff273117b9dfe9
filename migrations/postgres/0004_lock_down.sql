-- On Supabase every table and function in `public` is reachable through the REST API
-- with the project's public anon key. exai's data is for exai alone: row-level
-- security without policies hides the rows from every role that does not bypass it
-- (Supabase's service_role does; so does the tables' owner, the role that ran this),
-- and only service_role may call exai's functions.

SET LOCAL lock_timeout = '10s';

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE tool_runs ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    function_name regprocedure;
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON conversations, messages, tool_runs FROM %I', role_name);
        END IF;
    END LOOP;
    FOR function_name IN
        SELECT p.oid::regprocedure
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema() AND p.proname LIKE 'exai\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', function_name);
        FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', function_name, role_name);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', function_name);
        END IF;
    END LOOP;
END
$$;
