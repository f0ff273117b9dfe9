-- Several exai processes may share the database. A run records the instance that owns it
-- and a lease the owner renews while the run lives; a run whose lease ended is abandoned
-- (its process is gone) and any process marks it failed. Runs recorded before these
-- columns existed have no lease: they count as leased until a grace after their own
-- timeout, past which no process can still be running them.

SET LOCAL lock_timeout = '10s';

ALTER TABLE tool_runs ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE tool_runs ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz;

-- Moves the leases of the owner's runs that have not ended; returns how many moved.
CREATE OR REPLACE FUNCTION exai_renew_run_leases(p_owner text, p_runs jsonb, p_expires_at timestamptz)
RETURNS bigint
LANGUAGE sql AS $$
    WITH renewed AS (
        UPDATE tool_runs SET lease_expires_at = p_expires_at
        WHERE id IN (SELECT value::uuid FROM jsonb_array_elements_text(p_runs))
          AND owner = p_owner AND status IN ('queued', 'running')
        RETURNING 1
    )
    SELECT count(*) FROM renewed
$$;

-- Fails the unfinished runs of other owners: every one of them, or those whose lease ended.
CREATE OR REPLACE FUNCTION exai_fail_abandoned_runs(
    p_owner text, p_every_one boolean, p_legacy_grace_ms bigint, p_error text, p_now timestamptz
) RETURNS bigint
LANGUAGE sql AS $$
    WITH failed AS (
        UPDATE tool_runs
        SET status = 'failed', error = p_error, finished_at = p_now
        WHERE status IN ('queued', 'running') AND owner IS DISTINCT FROM p_owner
          AND (p_every_one OR coalesce(
                lease_expires_at,
                created_at + timeout_secs * interval '1 second' + p_legacy_grace_ms * interval '1 millisecond'
              ) < p_now)
        RETURNING 1
    )
    SELECT count(*) FROM failed
$$;

SELECT exai_restrict_function('exai_renew_run_leases(text, jsonb, timestamptz)');
SELECT exai_restrict_function('exai_fail_abandoned_runs(text, boolean, bigint, text, timestamptz)');
