-- A run's end is final, and its turns are its answer: once another process has failed a
-- run whose lease lapsed (its owner stalled, or could not renew), the owner's late answer
-- must not reach the thread. The append of a run's turns (keyed 'run:<run id>', a prefix
-- no client may use) is refused once the run has ended, under the thread's row lock that
-- every append takes. A replay of turns already appended is answered as before.
-- Everything else is as in 0010.

SET LOCAL lock_timeout = '10s';

CREATE OR REPLACE FUNCTION exai_append_turns(
    p_id uuid, p_turns jsonb, p_idempotency_key text, p_max_turns integer,
    p_timeout_ms bigint, p_now timestamptz, p_turns_per_run integer
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c conversations;
    v_count integer := jsonb_array_length(p_turns);
    v_first integer;
    v_now timestamptz;
BEGIN
    SELECT * INTO c FROM conversations WHERE thread_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'thread % not found', p_id USING ERRCODE = 'EX404';
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        SELECT seq INTO v_first FROM messages
        WHERE conversation_id = c.id
          AND idempotency_key IN (p_idempotency_key, exai_turn_key(c.id, p_idempotency_key));
        IF FOUND THEN
            RETURN exai_appended(c, v_first, v_count, true);
        END IF;
    END IF;
    IF p_idempotency_key LIKE 'run:%'
       AND EXISTS (SELECT 1 FROM tool_runs r
                   WHERE r.id = substr(p_idempotency_key, 5)::uuid
                     AND r.status NOT IN ('queued', 'running')) THEN
        RAISE EXCEPTION 'run % has already ended', substr(p_idempotency_key, 5) USING ERRCODE = 'EX412';
    END IF;
    -- A run that reserved its room while the thread was open records its answer (0008).
    IF p_now >= c.updated_at + p_timeout_ms * interval '1 millisecond'
       AND NOT EXISTS (SELECT 1 FROM tool_runs r
                       WHERE r.continuation_id = p_id AND r.status IN ('queued', 'running')
                         AND 'run:' || r.id::text = p_idempotency_key) THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'EX410';
    END IF;
    IF c.turn_count + v_count
        + p_turns_per_run * exai_open_runs(c.id, p_id, p_idempotency_key) > p_max_turns THEN
        RAISE EXCEPTION 'thread % already holds % turns', p_id, c.turn_count
            USING ERRCODE = 'EX409';
    END IF;

    -- Clocks of concurrent callers differ slightly: never move a thread back in time.
    v_now := greatest(p_now, c.updated_at);
    v_first := c.turn_count + 1;
    UPDATE conversations
    SET turn_count = turn_count + v_count, updated_at = v_now, version = version + 1
    WHERE id = c.id;
    INSERT INTO messages (conversation_id, seq, role, content, tool_name, files,
                          model_provider, model_name, metadata, idempotency_key, created_at)
    SELECT c.id, v_first + t.ord - 1, (t.turn ->> 'role')::message_role, t.turn ->> 'content',
           t.turn ->> 'tool_name', coalesce(t.turn -> 'files', '[]'),
           t.turn ->> 'model_provider', t.turn ->> 'model_name',
           coalesce(t.turn -> 'metadata', '{}'),
           CASE WHEN t.ord = 1 THEN exai_turn_key(c.id, p_idempotency_key) END, v_now
    FROM jsonb_array_elements(p_turns) WITH ORDINALITY AS t (turn, ord);
    SELECT * INTO c FROM conversations WHERE id = c.id;
    RETURN exai_appended(c, v_first, v_count, false);
END
$$;

SELECT exai_restrict_function('exai_append_turns(uuid, jsonb, text, integer, bigint, timestamptz, integer)');
