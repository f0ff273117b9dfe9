-- An append answers with the thread's header and the turns it wrote (on a replay, those
-- the first attempt wrote), no longer with the whole thread: its cost no longer grows with
-- the thread. Everything else is as in 0009: idempotency, expiry with the exception for a
-- reserved run, the room other runs reserved, the turn limit, and the turns counted before
-- they are stored, so that the triggers completing EX-AI's rows leave them alone.

SET LOCAL lock_timeout = '10s';

-- The header, then `p_count` turns from seq `p_first` on: an append's turns are numbered
-- one after another under the thread's row lock.
CREATE OR REPLACE FUNCTION exai_appended(c conversations, p_first integer, p_count integer,
                                         p_replayed boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'thread', exai_thread_json(c),
        'turns', coalesce(
            (SELECT jsonb_agg(exai_turn_json(m, c.thread_id::text) ORDER BY m.seq)
             FROM messages m
             WHERE m.conversation_id = c.id AND m.seq >= p_first AND m.seq < p_first + p_count),
            '[]'::jsonb),
        'first_seq', p_first,
        'replayed', p_replayed)
$$;

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

SELECT exai_restrict_function('exai_appended(conversations, integer, integer, boolean)');
SELECT exai_restrict_function('exai_append_turns(uuid, jsonb, text, integer, bigint, timestamptz, integer)');
