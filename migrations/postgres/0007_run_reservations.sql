-- A run reserves room for its two turns when it is recorded, before its upstream is
-- called: under the thread's row lock (the lock appends take), the thread must hold its
-- turns, plus p_turns_per_run for every unfinished run on it whose turns are not yet
-- appended (they carry the key 'run:<run id>'), plus this run's. The check lives here,
-- not in a process, so it holds for every exai process on the database.

SET LOCAL lock_timeout = '10s';

CREATE OR REPLACE FUNCTION exai_reserve_run(
    p_run jsonb, p_turns_per_run integer, p_max_turns integer, p_timeout_ms bigint,
    p_now timestamptz
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    c conversations;
    v_thread uuid := (p_run ->> 'continuation_id')::uuid;
    v_open integer;
BEGIN
    SELECT * INTO c FROM conversations WHERE continuation_id = v_thread::text FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'thread % not found', v_thread USING ERRCODE = 'EX404';
    END IF;
    IF p_now >= c.updated_at + p_timeout_ms * interval '1 millisecond' THEN
        RAISE EXCEPTION 'thread % has expired', v_thread USING ERRCODE = 'EX410';
    END IF;
    SELECT count(*) INTO v_open FROM tool_runs r
    WHERE r.status IN ('queued', 'running') AND r.continuation_id = v_thread
      AND NOT EXISTS (SELECT 1 FROM messages m
                      WHERE m.conversation_id = c.id AND m.idempotency_key = 'run:' || r.id::text);
    IF c.turn_count + p_turns_per_run * (v_open + 1) > p_max_turns THEN
        RAISE EXCEPTION 'thread % has no room for another run', v_thread USING ERRCODE = 'EX409';
    END IF;
    INSERT INTO tool_runs SELECT * FROM jsonb_populate_record(NULL::tool_runs, p_run);
    RETURN true;
END
$$;

SELECT exai_restrict_function('exai_reserve_run(jsonb, integer, integer, bigint, timestamptz)');
