-- Tool runs, kept after they finish, with the functions that read and write them.
-- A run's JSON has exactly the table's column names, so rows and documents convert
-- both ways without a mapping.

SET LOCAL lock_timeout = '10s';

CREATE TABLE IF NOT EXISTS tool_runs (
    id              uuid PRIMARY KEY,
    tool            text NOT NULL,
    status          text NOT NULL,
    continuation_id uuid NOT NULL,
    input           text NOT NULL,
    output          text,
    error           text,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz,
    timeout_secs    integer NOT NULL,
    turns_remaining integer
);

CREATE INDEX IF NOT EXISTS tool_runs_by_creation ON tool_runs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tool_runs_unfinished ON tool_runs (status)
    WHERE status IN ('queued', 'running');

-- Returns true, or NULL when the run had already ended and nothing changed.
CREATE OR REPLACE FUNCTION exai_save_run(p_run jsonb) RETURNS boolean
LANGUAGE sql AS $$
    INSERT INTO tool_runs
    SELECT * FROM jsonb_populate_record(NULL::tool_runs, p_run)
    ON CONFLICT (id) DO UPDATE SET
        status = EXCLUDED.status,
        output = EXCLUDED.output,
        error = EXCLUDED.error,
        started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at,
        turns_remaining = EXCLUDED.turns_remaining
    -- A run's end is final: a write that was overtaken (a late 'running') changes nothing.
    WHERE tool_runs.status IN ('queued', 'running')
    RETURNING true
$$;

CREATE OR REPLACE FUNCTION exai_get_run(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT to_jsonb(r) FROM tool_runs r WHERE r.id = p_id
$$;

CREATE OR REPLACE FUNCTION exai_list_runs(
    p_limit integer, p_after_created_at timestamptz, p_after_id uuid, p_tool text, p_status text
) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(page) ORDER BY page.created_at DESC, page.id DESC), '[]'::jsonb)
    FROM (
        SELECT * FROM tool_runs r
        WHERE (p_after_created_at IS NULL OR (r.created_at, r.id) < (p_after_created_at, p_after_id))
          AND (p_tool IS NULL OR r.tool = p_tool)
          AND (p_status IS NULL OR r.status = p_status)
        ORDER BY r.created_at DESC, r.id DESC
        LIMIT p_limit
    ) page
$$;

-- Runs a previous process left queued or running can no longer finish.
CREATE OR REPLACE FUNCTION exai_fail_unfinished_runs(
    p_created_before timestamptz, p_error text, p_now timestamptz
) RETURNS bigint
LANGUAGE sql AS $$
    WITH failed AS (
        UPDATE tool_runs
        SET status = 'failed', error = p_error, finished_at = p_now
        WHERE status IN ('queued', 'running') AND created_at < p_created_before
        RETURNING 1
    )
    SELECT count(*) FROM failed
$$;
