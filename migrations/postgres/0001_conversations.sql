-- Threads ("conversations") and turns ("messages").
--
-- Written to adopt EX-AI's existing Supabase tables in place as well as to create them
-- on an empty database: missing columns are added, `seq` is back-filled in created_at
-- order, and 'tool' joins the message_role enum. A thread's API id is its
-- continuation_id; `id` stays the internal key that messages reference.

-- Never queue behind a long transaction holding these tables: fail and let the
-- operator run the migration again.
SET LOCAL lock_timeout = '10s';

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'message_role') THEN
        CREATE TYPE message_role AS ENUM ('user', 'assistant', 'system');
    END IF;
END
$$;

ALTER TYPE message_role ADD VALUE IF NOT EXISTS 'tool';

CREATE TABLE IF NOT EXISTS conversations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    continuation_id text UNIQUE NOT NULL,
    title           text,
    metadata        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE conversations
    ADD COLUMN IF NOT EXISTS parent_id  uuid,
    ADD COLUMN IF NOT EXISTS tool_name  text,
    ADD COLUMN IF NOT EXISTS turn_count integer,
    ADD COLUMN IF NOT EXISTS version    bigint NOT NULL DEFAULT 1;

CREATE TABLE IF NOT EXISTS messages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role            message_role NOT NULL,
    content         text NOT NULL,
    metadata        jsonb,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE messages
    ADD COLUMN IF NOT EXISTS seq            integer,
    ADD COLUMN IF NOT EXISTS tool_name      text,
    ADD COLUMN IF NOT EXISTS files          jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS model_provider text,
    ADD COLUMN IF NOT EXISTS model_name     text;

-- Adopted rows: number turns per thread in the order they were written, count them,
-- and give missing metadata an empty object.
UPDATE messages m
SET seq = numbered.seq
FROM (
    SELECT id, row_number() OVER (PARTITION BY conversation_id ORDER BY created_at, id) AS seq
    FROM messages
) numbered
WHERE m.id = numbered.id AND m.seq IS NULL;

UPDATE conversations c
SET turn_count = (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
WHERE c.turn_count IS NULL;

UPDATE conversations SET metadata = '{}' WHERE metadata IS NULL;
UPDATE messages SET metadata = '{}' WHERE metadata IS NULL;
UPDATE conversations SET created_at = coalesce(updated_at, now()) WHERE created_at IS NULL;
UPDATE conversations SET updated_at = created_at WHERE updated_at IS NULL;
UPDATE messages m SET created_at = c.created_at
FROM conversations c WHERE m.conversation_id = c.id AND m.created_at IS NULL;
-- UUIDs compare as lower-case text, the way the API writes them.
UPDATE conversations SET continuation_id = lower(continuation_id)
WHERE continuation_id <> lower(continuation_id);

ALTER TABLE conversations
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET NOT NULL,
    ALTER COLUMN turn_count SET DEFAULT 0,
    ALTER COLUMN turn_count SET NOT NULL,
    ALTER COLUMN metadata SET DEFAULT '{}',
    ALTER COLUMN metadata SET NOT NULL;

ALTER TABLE messages
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN seq SET NOT NULL,
    ALTER COLUMN metadata SET DEFAULT '{}',
    ALTER COLUMN metadata SET NOT NULL;

-- An idempotency key is unique per thread, not across all threads.
DO $$
DECLARE
    constraint_name text;
BEGIN
    FOR constraint_name IN
        SELECT con.conname
        FROM pg_constraint con
        JOIN pg_attribute att ON att.attrelid = con.conrelid AND att.attnum = ANY (con.conkey)
        WHERE con.conrelid = 'messages'::regclass
          AND con.contype = 'u'
          AND att.attname = 'idempotency_key'
          AND array_length(con.conkey, 1) = 1
    LOOP
        EXECUTE format('ALTER TABLE messages DROP CONSTRAINT %I', constraint_name);
    END LOOP;
END
$$;

CREATE UNIQUE INDEX IF NOT EXISTS messages_thread_seq ON messages (conversation_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_thread_idempotency_key
    ON messages (conversation_id, idempotency_key);
CREATE INDEX IF NOT EXISTS conversations_by_activity
    ON conversations (updated_at DESC, continuation_id COLLATE "C" DESC);
CREATE INDEX IF NOT EXISTS conversations_by_parent ON conversations (parent_id);
