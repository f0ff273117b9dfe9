-- EX-AI keeps writing the adopted tables with its own statements for as long as both run:
-- it upserts conversations on continuation_id and inserts messages without seq, with
-- `on conflict (idempotency_key) do nothing`. Its rows are completed in the store:
-- a message gets the next seq under the thread's row lock (the lock exai's appends take),
-- the thread counts it and moves to a new version; missing metadata reads as {}, and the
-- tool and model names EX-AI keeps in metadata fill the turn's own fields.
--
-- `on conflict (idempotency_key)` needs a unique index on that column alone, so keys are
-- unique across the table; exai stores a client's key qualified by its thread
-- ('<conversation id>/<key>'), which keeps a client's keys unique per thread only.

SET LOCAL lock_timeout = '10s';

CREATE OR REPLACE FUNCTION exai_turn_key(p_conversation uuid, p_key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_conversation::text || '/' || p_key
$$;

-- The names EX-AI records in a message's metadata.
CREATE OR REPLACE FUNCTION exai_metadata_tool_name(p_metadata jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_metadata ->> 'tool_name', p_metadata ->> 'tool')
$$;

CREATE OR REPLACE FUNCTION exai_metadata_model_name(p_metadata jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_metadata ->> 'model_name', p_metadata ->> 'model')
$$;

-- Metadata EX-AI left out, as SQL NULL or JSON null, is an empty object.
CREATE OR REPLACE FUNCTION exai_metadata(p_metadata jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_metadata IS NULL OR p_metadata = 'null' THEN '{}' ELSE p_metadata END
$$;

-- A conversation EX-AI stores is completed the same way; when its upsert changes the title
-- or metadata of an existing one, the version moves on like on any change exai makes (exai's
-- own updates set a new version themselves).
CREATE OR REPLACE FUNCTION exai_complete_conversation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.metadata := exai_metadata(NEW.metadata);
    NEW.created_at := coalesce(NEW.created_at, now());
    NEW.updated_at := coalesce(NEW.updated_at, NEW.created_at);
    IF TG_OP = 'UPDATE' AND NEW.version = OLD.version
        AND (NEW.title, NEW.metadata) IS DISTINCT FROM (OLD.title, OLD.metadata) THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END
$$;

-- Before each message is stored: one written without seq (by EX-AI) is numbered after the
-- thread's last turn, under the thread's row lock. Rows stored earlier by the same
-- statement are visible here, so a multi-row insert numbers its rows one after another.
CREATE OR REPLACE FUNCTION exai_complete_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_last integer;
BEGIN
    NEW.metadata := exai_metadata(NEW.metadata);
    NEW.files := coalesce(NEW.files, '[]');
    NEW.created_at := coalesce(NEW.created_at, now());
    NEW.tool_name := coalesce(NEW.tool_name, exai_metadata_tool_name(NEW.metadata));
    NEW.model_name := coalesce(NEW.model_name, exai_metadata_model_name(NEW.metadata));
    IF NEW.seq IS NULL THEN
        SELECT turn_count INTO v_last FROM conversations WHERE id = NEW.conversation_id FOR UPDATE;
        SELECT greatest(v_last, max(seq)) INTO v_last
        FROM messages WHERE conversation_id = NEW.conversation_id;
        NEW.seq := coalesce(v_last, 0) + 1;
    END IF;
    RETURN NEW;
END
$$;

-- After a message numbered by the trigger above is stored (a row skipped by `on conflict
-- do nothing` never gets here): the thread counts it and changes version, so a cached copy
-- is known to be stale. exai's own appends have counted their turns already.
CREATE OR REPLACE FUNCTION exai_count_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations
    SET turn_count = NEW.seq, version = version + 1, updated_at = greatest(updated_at, NEW.created_at)
    WHERE id = NEW.conversation_id AND turn_count < NEW.seq;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS exai_complete_conversation ON conversations;
CREATE TRIGGER exai_complete_conversation BEFORE INSERT OR UPDATE ON conversations
FOR EACH ROW EXECUTE FUNCTION exai_complete_conversation();
DROP TRIGGER IF EXISTS exai_complete_message ON messages;
CREATE TRIGGER exai_complete_message BEFORE INSERT ON messages
FOR EACH ROW EXECUTE FUNCTION exai_complete_message();
DROP TRIGGER IF EXISTS exai_count_message ON messages;
CREATE TRIGGER exai_count_message AFTER INSERT ON messages
FOR EACH ROW EXECUTE FUNCTION exai_count_message();

-- Adopted turns: the names in their metadata become the turn's fields.
UPDATE messages
SET tool_name = coalesce(tool_name, exai_metadata_tool_name(metadata)),
    model_name = coalesce(model_name, exai_metadata_model_name(metadata))
WHERE (tool_name IS NULL AND exai_metadata_tool_name(metadata) IS NOT NULL)
   OR (model_name IS NULL AND exai_metadata_model_name(metadata) IS NOT NULL);

-- Keys an earlier exai stored unqualified may repeat across threads: qualify those.
UPDATE messages m
SET idempotency_key = exai_turn_key(m.conversation_id, m.idempotency_key)
WHERE m.idempotency_key IS NOT NULL
  AND EXISTS (SELECT 1 FROM messages other
              WHERE other.idempotency_key = m.idempotency_key AND other.id <> m.id);

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        WHERE i.indrelid = 'messages'::regclass AND i.indisunique AND i.indnatts = 1
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                             WHERE attrelid = 'messages'::regclass AND attname = 'idempotency_key')
    ) THEN
        CREATE UNIQUE INDEX messages_idempotency_key ON messages (idempotency_key);
    END IF;
END
$$;

-- As in 0008, with a run's key looked up qualified or, as an earlier exai stored it, not.
CREATE OR REPLACE FUNCTION exai_open_runs(p_conversation uuid, p_thread uuid, p_except_key text)
RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM tool_runs r
    WHERE r.status IN ('queued', 'running') AND r.continuation_id = p_thread
      AND 'run:' || r.id::text IS DISTINCT FROM p_except_key
      AND NOT EXISTS (SELECT 1 FROM messages m
                      WHERE m.conversation_id = p_conversation
                        AND m.idempotency_key IN ('run:' || r.id::text,
                                                  exai_turn_key(p_conversation, 'run:' || r.id::text)))
$$;


-- Every adopted conversation gets a thread id in the API, stable for the row's life:
-- its continuation_id when that is a lower-case UUID (as exai and, mostly, EX-AI write
-- it), else the row's own id, since EX-AI's continuation_id may be upper-case or not a
-- UUID at all and must stay as written. A generated column: adding it rewrites no value
-- and fires no trigger, and rows EX-AI writes later get theirs as they are stored.
-- Functions that found a thread by continuation_id now find it by thread_id; the list
-- shows every conversation.

ALTER TABLE conversations ADD COLUMN IF NOT EXISTS thread_id uuid NOT NULL GENERATED ALWAYS AS (
    CASE WHEN continuation_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
         THEN continuation_id::uuid ELSE id END
) STORED;

CREATE UNIQUE INDEX IF NOT EXISTS conversations_thread_id ON conversations (thread_id);
CREATE INDEX IF NOT EXISTS conversations_by_thread_activity
    ON conversations (updated_at DESC, thread_id DESC);
DROP INDEX IF EXISTS conversations_by_activity;

DROP FUNCTION IF EXISTS exai_list_threads(integer, timestamptz, uuid, text, timestamptz, timestamptz);

-- Threads by latest activity, keyset-paged on (updated_at, thread id); a uuid orders as
-- its lower-case text does. p_continuation_id finds a conversation by the id EX-AI knows.
CREATE OR REPLACE FUNCTION exai_list_threads(
    p_limit integer, p_after_updated_at timestamptz, p_after_id uuid, p_search text,
    p_changed_after timestamptz, p_changed_at_or_before timestamptz, p_continuation_id text
) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(exai_thread_json(page) ORDER BY page.updated_at DESC,
                              page.thread_id DESC), '[]'::jsonb)
    FROM (
        SELECT * FROM conversations c
        WHERE (p_after_updated_at IS NULL
               OR c.updated_at < p_after_updated_at
               OR (c.updated_at = p_after_updated_at AND c.thread_id < p_after_id))
          AND (p_changed_after IS NULL OR c.updated_at > p_changed_after)
          AND (p_changed_at_or_before IS NULL OR c.updated_at <= p_changed_at_or_before)
          AND (p_search IS NULL OR c.title ILIKE '%' || p_search || '%')
          AND (p_continuation_id IS NULL OR c.continuation_id = p_continuation_id)
        ORDER BY c.updated_at DESC, c.thread_id DESC
        LIMIT p_limit
    ) page
$$;

-- As before (0002, 0006, 0008), finding threads by thread_id; exai_append_turns as in 0008,
-- also storing the key qualified by its thread, and counting the new turns before storing
-- them (so the count trigger above leaves them alone).

CREATE OR REPLACE FUNCTION exai_thread_json(c conversations) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.thread_id,
        'parent_id', c.parent_id,
        'title', c.title,
        'tool_name', c.tool_name,
        'metadata', c.metadata,
        'created_at', c.created_at,
        'updated_at', c.updated_at,
        'turn_count', c.turn_count,
        'version', c.version)
$$;

CREATE OR REPLACE FUNCTION exai_thread_document(c conversations) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'thread', exai_thread_json(c),
        'turns', coalesce(
            (SELECT jsonb_agg(exai_turn_json(m, c.thread_id::text) ORDER BY m.seq)
             FROM messages m WHERE m.conversation_id = c.id),
            '[]'::jsonb))
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
        AND NOT EXISTS (SELECT 1 FROM conversations WHERE thread_id = p_parent_id)
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
    SELECT exai_thread_document(c) FROM conversations c WHERE c.thread_id = p_id
$$;

CREATE OR REPLACE FUNCTION exai_delete_thread(p_id uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    SELECT id INTO v_id FROM conversations WHERE thread_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM messages WHERE conversation_id = v_id;
    DELETE FROM conversations WHERE id = v_id;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION exai_list_turns(p_id uuid, p_after_seq integer, p_limit integer)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT jsonb_agg(exai_turn_json(m, c.thread_id::text) ORDER BY m.seq)
         FROM (SELECT * FROM messages
               WHERE conversation_id = c.id AND seq > p_after_seq
               ORDER BY seq LIMIT p_limit) m),
        '[]'::jsonb)
    FROM conversations c WHERE c.thread_id = p_id
$$;

CREATE OR REPLACE FUNCTION exai_history(p_id uuid, p_max_depth integer, p_max_bytes bigint)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE chain AS (
        SELECT c.id, c.thread_id::text AS api_id, c.parent_id, 0 AS depth, ARRAY[c.id] AS visited
        FROM conversations c WHERE c.thread_id = p_id
        UNION ALL
        SELECT p.id, p.thread_id::text, p.parent_id, chain.depth + 1, chain.visited || p.id
        FROM chain JOIN conversations p ON p.thread_id = chain.parent_id
        WHERE chain.depth < p_max_depth AND NOT p.id = ANY (chain.visited)
    ),
    sized AS (
        SELECT s.conversation_id, s.seq,
               sum(octet_length(s.content) + octet_length(s.files::text)
                   + octet_length(s.metadata::text))
                   OVER (ORDER BY chain.depth, s.seq DESC ROWS UNBOUNDED PRECEDING) AS newer_bytes
        FROM chain JOIN messages s ON s.conversation_id = chain.id
    )
    SELECT CASE WHEN count(*) = 0 THEN NULL ELSE jsonb_build_object(
        'thread_ids', jsonb_agg(chain.api_id ORDER BY chain.depth DESC),
        'total_turns', (SELECT count(*) FROM sized),
        'turns', coalesce(
            (SELECT jsonb_agg(exai_turn_json(m, link.api_id)
                              ORDER BY link.depth DESC, m.seq)
             FROM sized
             JOIN chain link ON link.id = sized.conversation_id
             JOIN messages m ON m.conversation_id = sized.conversation_id AND m.seq = sized.seq
             WHERE sized.newer_bytes <= p_max_bytes),
            '[]'::jsonb))
    END
    FROM chain
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
    SELECT * INTO c FROM conversations WHERE thread_id = v_thread FOR UPDATE;
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
            RETURN exai_thread_document(c)
                || jsonb_build_object('first_seq', v_first, 'replayed', true);
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
    RETURN exai_thread_document(c) || jsonb_build_object('first_seq', v_first, 'replayed', false);
END
$$;

SELECT exai_restrict_function(
    'exai_list_threads(integer, timestamptz, uuid, text, timestamptz, timestamptz, text)');
SELECT exai_restrict_function('exai_turn_key(uuid, text)');
SELECT exai_restrict_function('exai_metadata(jsonb)');
SELECT exai_restrict_function('exai_metadata_tool_name(jsonb)');
SELECT exai_restrict_function('exai_metadata_model_name(jsonb)');
SELECT exai_restrict_function('exai_complete_conversation()');
SELECT exai_restrict_function('exai_complete_message()');
SELECT exai_restrict_function('exai_count_message()');
SELECT exai_restrict_function('exai_open_runs(uuid, uuid, text)');
SELECT exai_restrict_function('exai_append_turns(uuid, jsonb, text, integer, bigint, timestamptz, integer)');
