-- A history read returns the newest turns of the chain that fit in p_max_bytes (content,
-- files and metadata), so that neither the database nor the server ever handles more
-- than that for one request, however long the chain. Sizes come from the column
-- headers: octet_length of a stored text does not read the text itself.

SET LOCAL lock_timeout = '10s';

DROP FUNCTION IF EXISTS exai_history(uuid, integer);

-- The chain along parent_id, at most p_max_depth links, never revisiting a thread;
-- the turns whose running size, newest first, stays within p_max_bytes, in order
-- (oldest thread first); and how many turns the whole chain holds.
CREATE OR REPLACE FUNCTION exai_history(p_id uuid, p_max_depth integer, p_max_bytes bigint)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE chain AS (
        SELECT c.id, c.continuation_id, c.parent_id, 0 AS depth, ARRAY[c.id] AS visited
        FROM conversations c WHERE c.continuation_id = p_id::text
        UNION ALL
        SELECT p.id, p.continuation_id, p.parent_id, chain.depth + 1, chain.visited || p.id
        FROM chain JOIN conversations p ON p.continuation_id = chain.parent_id::text
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
        'thread_ids', jsonb_agg(chain.continuation_id ORDER BY chain.depth DESC),
        'total_turns', (SELECT count(*) FROM sized),
        'turns', coalesce(
            (SELECT jsonb_agg(exai_turn_json(m, link.continuation_id)
                              ORDER BY link.depth DESC, m.seq)
             FROM sized
             JOIN chain link ON link.id = sized.conversation_id
             JOIN messages m ON m.conversation_id = sized.conversation_id AND m.seq = sized.seq
             WHERE sized.newer_bytes <= p_max_bytes),
            '[]'::jsonb))
    END
    FROM chain
$$;

-- Gives a function the privileges 0004 gives every exai function: none for PUBLIC,
-- anon and authenticated (which Supabase's default privileges grant), EXECUTE for
-- service_role where it exists.
CREATE OR REPLACE FUNCTION exai_restrict_function(p_function regprocedure) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    role_name text;
BEGIN
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', p_function);
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', p_function, role_name);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', p_function);
    END IF;
END
$$;

SELECT exai_restrict_function('exai_restrict_function(regprocedure)');
SELECT exai_restrict_function('exai_history(uuid, integer, bigint)');
