-- Runs in the migration transaction, before 0001, when EX-AI's tables are about to be
-- adopted (messages has no `seq` yet). 0001 cannot change any more (sqlx records its
-- checksum), so its back-fill is made harmless here instead:
--  * EX-AI's own triggers (its BEFORE UPDATE trigger stamps updated_at = now()) are
--    paused, so back-filling changes no timestamp; adoption/after.sql resumes them.
--  * continuation_id is kept as EX-AI wrote it (EX-AI matches it exactly) while 0001
--    tries to lower-case it.
--  * turns are numbered here, in the order they were written: by created_at, ties and
--    unknown times in the order the rows were stored; an unknown created_at becomes the
--    latest time known before it, so seq and time never disagree. 0001 then finds
--    nothing left to number.

SET LOCAL lock_timeout = '10s';

CREATE TEMP TABLE exai_paused_triggers ON COMMIT DROP AS
SELECT t.tgrelid::regclass::text AS table_name, t.tgname::text AS trigger_name
FROM pg_trigger t
WHERE t.tgrelid IN ('conversations'::regclass, 'messages'::regclass)
  AND NOT t.tgisinternal AND t.tgenabled <> 'D';

DO $$
DECLARE
    paused record;
BEGIN
    FOR paused IN SELECT * FROM exai_paused_triggers LOOP
        EXECUTE format('ALTER TABLE %I DISABLE TRIGGER %I', paused.table_name, paused.trigger_name);
    END LOOP;
END
$$;

CREATE FUNCTION exai_keep_continuation_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.continuation_id := OLD.continuation_id;
    RETURN NEW;
END
$$;

CREATE TRIGGER exai_keep_continuation_id BEFORE UPDATE OF continuation_id ON conversations
FOR EACH ROW EXECUTE FUNCTION exai_keep_continuation_id();

ALTER TABLE messages ADD COLUMN seq integer;

UPDATE messages m
SET seq = numbered.seq
FROM (
    SELECT id, row_number() OVER (PARTITION BY conversation_id
                                  ORDER BY created_at NULLS LAST, ctid) AS seq
    FROM messages
) numbered
WHERE m.id = numbered.id;

UPDATE messages m
SET created_at = coalesce(
    (SELECT max(earlier.created_at) FROM messages earlier
     WHERE earlier.conversation_id IS NOT DISTINCT FROM m.conversation_id
       AND earlier.seq < m.seq),
    (SELECT coalesce(c.created_at, c.updated_at) FROM conversations c
     WHERE c.id = m.conversation_id),
    now())
WHERE m.created_at IS NULL;
