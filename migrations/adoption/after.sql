-- Ends what adoption/before.sql began, in the same transaction: the guard on
-- continuation_id goes, and EX-AI's triggers run again from the commit on.

DROP TRIGGER exai_keep_continuation_id ON conversations;
DROP FUNCTION exai_keep_continuation_id();

DO $$
DECLARE
    paused record;
BEGIN
    FOR paused IN SELECT * FROM exai_paused_triggers LOOP
        EXECUTE format('ALTER TABLE %I ENABLE TRIGGER %I', paused.table_name, paused.trigger_name);
    END LOOP;
END
$$;
