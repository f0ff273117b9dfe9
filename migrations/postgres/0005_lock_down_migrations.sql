-- sqlx keeps its record of applied migrations in `_sqlx_migrations`, in the same schema
-- as exai's tables, so on Supabase the REST API exposes it to the public anon key like
-- them: anyone could read which version runs, or delete rows and make the next
-- `exai migrate` re-run migrations. Locked down as 0004 locks down the tables: row-level
-- security without policies (its owner, who migrates, is not subject to it) and no
-- privileges for anon and authenticated.

SET LOCAL lock_timeout = '10s';

ALTER TABLE _sqlx_migrations ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON _sqlx_migrations FROM %I', role_name);
        END IF;
    END LOOP;
END
$$;
