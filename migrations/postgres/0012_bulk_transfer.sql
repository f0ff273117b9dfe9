-- Export and import in bulk. A thread's record is its document with the idempotency key of
-- each append that had one, by the seq of the append's first turn, as the client gave it
-- (exai stores keys qualified by the conversation, see 0009). Export reads records page by
-- page in thread id order; import stores a batch of records, turns and keys as they are,
-- in one statement. Runs are exported through exai_list_runs.

CREATE OR REPLACE FUNCTION exai_export_record(c conversations) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT exai_thread_document(c) || jsonb_build_object('keys', coalesce(
        (SELECT jsonb_object_agg(m.seq::text,
                                 CASE WHEN left(m.idempotency_key, 37) = c.id::text || '/'
                                      THEN substr(m.idempotency_key, 38)
                                      ELSE m.idempotency_key END)
         FROM messages m WHERE m.conversation_id = c.id AND m.idempotency_key IS NOT NULL),
        '{}'::jsonb))
$$;

CREATE OR REPLACE FUNCTION exai_export_counts() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'threads', (SELECT count(*) FROM conversations),
        'turns', (SELECT count(*) FROM messages),
        'runs', (SELECT count(*) FROM tool_runs))
$$;

CREATE OR REPLACE FUNCTION exai_export_threads(p_after_id uuid, p_limit integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(exai_export_record(page) ORDER BY page.thread_id), '[]'::jsonb)
    FROM (
        SELECT * FROM conversations c
        WHERE p_after_id IS NULL OR c.thread_id > p_after_id
        ORDER BY c.thread_id
        LIMIT p_limit
    ) page
$$;

-- Stores the records of p_threads that the store does not hold and whose parent is stored
-- or among them. Returns what was not stored, by place in p_threads (from 1): a held
-- thread's record, or that its parent is missing.
CREATE OR REPLACE FUNCTION exai_import_threads(p_threads jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_left jsonb;
BEGIN
    WITH RECURSIVE input AS (
        SELECT t.ord, t.doc, (t.doc #>> '{thread,id}')::uuid AS thread_id,
               (t.doc #>> '{thread,parent_id}')::uuid AS parent_id
        FROM jsonb_array_elements(p_threads) WITH ORDINALITY AS t (doc, ord)
    ),
    fresh AS (
        SELECT * FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.thread_id = i.thread_id)
    ),
    placed (ord, thread_id) AS (
        SELECT f.ord, f.thread_id FROM fresh f
        WHERE f.parent_id IS NULL
           OR EXISTS (SELECT 1 FROM conversations c WHERE c.thread_id = f.parent_id)
        UNION ALL
        SELECT f.ord, f.thread_id FROM fresh f JOIN placed p ON f.parent_id = p.thread_id
    ),
    stored AS (
        SELECT i.* FROM input i JOIN placed p ON p.ord = i.ord
    ),
    threads AS (
        INSERT INTO conversations (id, continuation_id, parent_id, title, tool_name, metadata,
                                   created_at, updated_at, turn_count, version)
        SELECT s.thread_id, s.thread_id::text, s.parent_id, s.doc #>> '{thread,title}',
               s.doc #>> '{thread,tool_name}', s.doc #> '{thread,metadata}',
               (s.doc #>> '{thread,created_at}')::timestamptz,
               (s.doc #>> '{thread,updated_at}')::timestamptz,
               (s.doc #>> '{thread,turn_count}')::integer, (s.doc #>> '{thread,version}')::bigint
        FROM stored s
    ),
    turns AS (
        INSERT INTO messages (conversation_id, seq, role, content, tool_name, files,
                              model_provider, model_name, metadata, idempotency_key, created_at)
        SELECT s.thread_id, (t.turn ->> 'seq')::integer, (t.turn ->> 'role')::message_role,
               t.turn ->> 'content', t.turn ->> 'tool_name', t.turn -> 'files',
               t.turn ->> 'model_provider', t.turn ->> 'model_name', t.turn -> 'metadata',
               exai_turn_key(s.thread_id, s.doc -> 'keys' ->> (t.turn ->> 'seq')),
               (t.turn ->> 'created_at')::timestamptz
        FROM stored s, jsonb_array_elements(s.doc -> 'turns') AS t (turn)
    )
    SELECT coalesce(jsonb_agg(left_out.result ORDER BY left_out.ord), '[]'::jsonb) INTO v_left
    FROM (
        SELECT i.ord, jsonb_build_object('ord', i.ord, 'held', exai_export_record(c)) AS result
        FROM input i JOIN conversations c ON c.thread_id = i.thread_id
        UNION ALL
        SELECT f.ord, jsonb_build_object('ord', f.ord, 'parent_missing', true)
        FROM fresh f WHERE f.ord NOT IN (SELECT ord FROM placed)
    ) left_out;
    RETURN v_left;
END
$$;

SELECT exai_restrict_function('exai_export_record(conversations)');
SELECT exai_restrict_function('exai_export_counts()');
SELECT exai_restrict_function('exai_export_threads(uuid, integer)');
SELECT exai_restrict_function('exai_import_threads(jsonb)');
