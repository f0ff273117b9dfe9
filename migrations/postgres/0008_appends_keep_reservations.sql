-- A client's append must not take the room a tool run reserved before calling its
-- upstream (0007), or that run would spend its upstream call and then find no room for
-- its answer. An append now fits when the thread holds its turns, the new ones, and
-- p_turns_per_run for every other unfinished run whose turns are not yet appended; a
-- run's own append (keyed 'run:<run id>') does not count its own reservation. And a run
-- that reserved its room while the thread was open records its answer even if the
-- thread expired while it ran: the reservation was the promise.

SET LOCAL lock_timeout = '10s';

-- Unfinished runs on a thread whose turns are not appended yet, but the one whose turns
-- carry p_except_key.
CREATE OR REPLACE FUNCTION exai_open_runs(p_conversation uuid, p_thread uuid, p_except_key text)
RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM tool_runs r
    WHERE r.status IN ('queued', 'running') AND r.continuation_id = p_thread
      AND 'run:' || r.id::text IS DISTINCT FROM p_except_key
      AND NOT EXISTS (SELECT 1 FROM messages m
                      WHERE m.conversation_id = p_conversation
                        AND m.idempotency_key = 'run:' || r.id::text)
$$;

CREATE OR REPLACE FUNCTION exai_reserve_run(
    p_run jsonb, p_turns_per_run integer, p_max_turns integer, p_timeout_ms bigint,
    p_now timestamptz
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    c conversations;
    v_thread uuid := (p_run ->> 'continuation_id')::uuid;
BEGIN
    SELECT * INTO c FROM conversations WHERE continuation_id = v_thread::text FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'thread % not found', v_thread USING ERRCODE = 'EX404';
    END IF;
    IF p_now >= c.updated_at + p_timeout_ms * interval '1 millisecond' THEN
        RAISE EXCEPTION 'thread % has expired', v_thread USING ERRCODE = 'EX410';
    END IF;
    IF c.turn_count + p_turns_per_run * (exai_open_runs(c.id, v_thread, NULL) + 1) > p_max_turns THEN
        RAISE EXCEPTION 'thread % has no room for another run', v_thread USING ERRCODE = 'EX409';
    END IF;
    INSERT INTO tool_runs SELECT * FROM jsonb_populate_record(NULL::tool_runs, p_run);
    RETURN true;
END
$$;

DROP FUNCTION IF EXISTS exai_append_turns(uuid, jsonb, text, integer, bigint, timestamptz);

-- As in 0002, with the room of other runs' reservations kept free, and a reserved run's
-- answer recorded past expiry.
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
    SELECT * INTO c FROM conversations WHERE continuation_id = p_id::text FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'thread % not found', p_id USING ERRCODE = 'EX404';
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        SELECT seq INTO v_first FROM messages
        WHERE conversation_id = c.id AND idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN exai_thread_document(c)
                || jsonb_build_object('first_seq', v_first, 'replayed', true);
        END IF;
    END IF;
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
    INSERT INTO messages (conversation_id, seq, role, content, tool_name, files,
                          model_provider, model_name, metadata, idempotency_key, created_at)
    SELECT c.id, v_first + t.ord - 1, (t.turn ->> 'role')::message_role, t.turn ->> 'content',
           t.turn ->> 'tool_name', coalesce(t.turn -> 'files', '[]'),
           t.turn ->> 'model_provider', t.turn ->> 'model_name',
           coalesce(t.turn -> 'metadata', '{}'),
           CASE WHEN t.ord = 1 THEN p_idempotency_key END, v_now
    FROM jsonb_array_elements(p_turns) WITH ORDINALITY AS t (turn, ord);
    UPDATE conversations
    SET turn_count = turn_count + v_count, updated_at = v_now, version = version + 1
    WHERE id = c.id
    RETURNING * INTO c;
    RETURN exai_thread_document(c) || jsonb_build_object('first_seq', v_first, 'replayed', false);
END
$$;

SELECT exai_restrict_function('exai_open_runs(uuid, uuid, text)');
SELECT exai_restrict_function('exai_append_turns(uuid, jsonb, text, integer, bigint, timestamptz, integer)');
