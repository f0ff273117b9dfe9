-- An owner paused or cut off for longer than its lease comes back to runs another process
-- has failed. Renewing their leases changes nothing (their end is final), and the owner
-- went on waiting for their upstreams until their timeout, holding the tools' slots and
-- connections. A renewal now also returns the runs it was given that have ended, so that
-- their owner stops them, as it stops those whose cancel was asked (0013).

SET LOCAL lock_timeout = '10s';

CREATE OR REPLACE FUNCTION exai_renew_run_leases(p_owner text, p_runs jsonb, p_expires_at timestamptz)
RETURNS jsonb
LANGUAGE sql AS $$
    WITH given AS (
        SELECT value::uuid AS id FROM jsonb_array_elements_text(p_runs)
    ), renewed AS (
        UPDATE tool_runs SET lease_expires_at = p_expires_at
        WHERE id IN (SELECT id FROM given) AND owner = p_owner AND status IN ('queued', 'running')
        RETURNING id, cancel_requested
    )
    SELECT coalesce(jsonb_agg(id), '[]') FROM (
        SELECT id FROM renewed WHERE cancel_requested
        UNION ALL
        SELECT r.id FROM tool_runs r
        WHERE r.id IN (SELECT id FROM given) AND r.status NOT IN ('queued', 'running')
    ) to_stop
$$;
