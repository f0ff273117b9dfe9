-- Several exai processes may share the database. A run records the instance that owns it
-- and a lease the owner renews while the run lives; a run whose lease ended is abandoned
-- (its process is gone) and any process marks it failed. Runs recorded before these
-- columns existed have no lease: they count as leased until a grace after their own
-- timeout, past which no process can still be running them. A cancel asked of a process
-- that does not run the run is recorded on it, and its owner finds it when it renews.

SET LOCAL lock_timeout = '10s';

ALTER TABLE tool_runs ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE tool_runs ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz;
ALTER TABLE tool_runs ADD COLUMN IF NOT EXISTS cancel_requested boolean;

-- Moves the leases of the owner's runs that have not ended; returns the ids of those of
-- them whose cancel was asked (NULL, as a row a run's document fills leaves it, is not).
CREATE OR REPLACE FUNCTION exai_renew_run_leases(p_owner text, p_runs jsonb, p_expires_at timestamptz)
RETURNS jsonb
LANGUAGE sql AS $$
    WITH renewed AS (
        UPDATE tool_runs SET lease_expires_at = p_expires_at
        WHERE id IN (SELECT value::uuid FROM jsonb_array_elements_text(p_runs))
          AND owner = p_owner AND status IN ('queued', 'running')
        RETURNING id, cancel_requested
    )
    SELECT coalesce(jsonb_agg(id) FILTER (WHERE cancel_requested), '[]') FROM renewed
$$;

-- Records that a run that has not ended is to be cancelled; false when it has ended.
CREATE OR REPLACE FUNCTION exai_request_run_cancel(p_id uuid) RETURNS boolean
LANGUAGE sql AS $$
    WITH asked AS (
        UPDATE tool_runs SET cancel_requested = true
        WHERE id = p_id AND status IN ('queued', 'running')
        RETURNING 1
    )
    SELECT count(*) > 0 FROM asked
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
SELECT exai_restrict_function('exai_request_run_cancel(uuid)');
SELECT exai_restrict_function('exai_fail_abandoned_runs(text, boolean, bigint, text, timestamptz)');
