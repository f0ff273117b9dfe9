-- Every operation of the store as one function: the Postgres store calls them over the
-- wire protocol, the Supabase store through PostgREST (POST /rest/v1/rpc/<name>), so both
-- run the very same SQL in one round trip each. Results are jsonb in the API's shapes;
-- rejections are raised with SQLSTATEs EX404 (thread not found), EX422 (parent not
-- found), EX410 (thread expired) and EX409 (turn limit reached).

CREATE OR REPLACE FUNCTION exai_thread_json(c conversations) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.continuation_id,
        'parent_id', c.parent_id,
        'title', c.title,
        'tool_name', c.tool_name,
        'metadata', c.metadata,
        'created_at', c.created_at,
        'updated_at', c.updated_at,
        'turn_count', c.turn_count,
        'version', c.version)
$$;

CREATE OR REPLACE FUNCTION exai_turn_json(m messages, thread_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'thread_id', thread_id,
        'seq', m.seq,
        'role', m.role,
        'content', m.content,
        'tool_name', m.tool_name,
        'files', m.files,
        'model_provider', m.model_provider,
        'model_name', m.model_name,
        'metadata', m.metadata,
        'created_at', m.created_at)
$$;

CREATE OR REPLACE FUNCTION exai_thread_document(c conversations) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'thread', exai_thread_json(c),
        'turns', coalesce(
            (SELECT jsonb_agg(exai_turn_json(m, c.continuation_id) ORDER BY m.seq)
             FROM messages m WHERE m.conversation_id = c.id),
            '[]'::jsonb))
$$;

-- The health check's probe. PL/pgSQL, so it is never inlined and shows up in
-- pg_stat_user_functions like every other call.
CREATE OR REPLACE FUNCTION exai_ping() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION exai_create_thread(
    p_id uuid, p_parent_id uuid, p_title text, p_tool_name text, p_metadata jsonb,
    p_now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c conversations;
BEGIN
    IF p_parent_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM conversations WHERE continuation_id = p_parent_id::text)
    THEN
        RAISE EXCEPTION 'parent thread % not found', p_parent_id USING ERRCODE = 'EX422';
    END IF;
    INSERT INTO conversations (id, continuation_id, parent_id, title, tool_name, metadata,
                               created_at, updated_at, turn_count, version)
    VALUES (p_id, p_id::text, p_parent_id, p_title, p_tool_name, coalesce(p_metadata, '{}'),
            p_now, p_now, 0, 1)
    RETURNING * INTO c;
    RETURN exai_thread_json(c);
END
$$;

CREATE OR REPLACE FUNCTION exai_get_thread(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT exai_thread_document(c) FROM conversations c WHERE c.continuation_id = p_id::text
$$;

-- Threads by latest activity, keyset-paged on (updated_at, id). Rows whose
-- continuation_id is not a UUID (possible in adopted data) cannot be addressed
-- through the API and are left out.
CREATE OR REPLACE FUNCTION exai_list_threads(
    p_limit integer, p_after_updated_at timestamptz, p_after_id uuid, p_search text,
    p_changed_after timestamptz, p_changed_at_or_before timestamptz
) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(exai_thread_json(page) ORDER BY page.updated_at DESC,
                              page.continuation_id COLLATE "C" DESC), '[]'::jsonb)
    FROM (
        SELECT * FROM conversations c
        WHERE (p_after_updated_at IS NULL
               OR c.updated_at < p_after_updated_at
               OR (c.updated_at = p_after_updated_at
                   AND c.continuation_id COLLATE "C" < p_after_id::text))
          AND (p_changed_after IS NULL OR c.updated_at > p_changed_after)
          AND (p_changed_at_or_before IS NULL OR c.updated_at <= p_changed_at_or_before)
          AND (p_search IS NULL OR c.title ILIKE '%' || p_search || '%')
          AND c.continuation_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
        ORDER BY c.updated_at DESC, c.continuation_id COLLATE "C" DESC
        LIMIT p_limit
    ) page
$$;

CREATE OR REPLACE FUNCTION exai_delete_thread(p_id uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    SELECT id INTO v_id FROM conversations WHERE continuation_id = p_id::text FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM messages WHERE conversation_id = v_id;
    DELETE FROM conversations WHERE id = v_id;
    RETURN true;
END
$$;

-- Appends p_turns (a JSON array of turns) under a row lock on the thread, so appends to
-- one thread are serialized and seqs stay contiguous. Order of checks: idempotency
-- replay, expiry, turn limit.
CREATE OR REPLACE FUNCTION exai_append_turns(
    p_id uuid, p_turns jsonb, p_idempotency_key text, p_max_turns integer,
    p_timeout_ms bigint, p_now timestamptz
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
    IF p_now >= c.updated_at + p_timeout_ms * interval '1 millisecond' THEN
        RAISE EXCEPTION 'thread % has expired', p_id USING ERRCODE = 'EX410';
    END IF;
    IF c.turn_count + v_count > p_max_turns THEN
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

CREATE OR REPLACE FUNCTION exai_list_turns(p_id uuid, p_after_seq integer, p_limit integer)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT jsonb_agg(exai_turn_json(m, c.continuation_id) ORDER BY m.seq)
         FROM (SELECT * FROM messages
               WHERE conversation_id = c.id AND seq > p_after_seq
               ORDER BY seq LIMIT p_limit) m),
        '[]'::jsonb)
    FROM conversations c WHERE c.continuation_id = p_id::text
$$;

-- The chain along parent_id, at most p_max_depth links, never revisiting a thread,
-- with every turn: oldest thread first, turns in order.
CREATE OR REPLACE FUNCTION exai_history(p_id uuid, p_max_depth integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE chain AS (
        SELECT c.id, c.continuation_id, c.parent_id, 0 AS depth, ARRAY[c.id] AS visited
        FROM conversations c WHERE c.continuation_id = p_id::text
        UNION ALL
        SELECT p.id, p.continuation_id, p.parent_id, chain.depth + 1, chain.visited || p.id
        FROM chain JOIN conversations p ON p.continuation_id = chain.parent_id::text
        WHERE chain.depth < p_max_depth AND NOT p.id = ANY (chain.visited)
    )
    SELECT CASE WHEN count(*) = 0 THEN NULL ELSE jsonb_build_object(
        'thread_ids', jsonb_agg(chain.continuation_id ORDER BY chain.depth DESC),
        'turns', coalesce(
            (SELECT jsonb_agg(exai_turn_json(m, link.continuation_id)
                              ORDER BY link.depth DESC, m.seq)
             FROM chain link JOIN messages m ON m.conversation_id = link.id),
            '[]'::jsonb))
    END
    FROM chain
$$;
