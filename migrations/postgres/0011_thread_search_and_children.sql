-- Dashboard listings that stay fast with many threads: titles found through a trigram
-- index, listings planned for the filters they are given, and a thread's children.

SET LOCAL lock_timeout = '10s';

-- pg_trgm is a trusted extension: the database owner may create it. Supabase keeps
-- extensions in their own schema, so the operator class is named where it lives.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

DO $$
DECLARE
    trgm_schema text;
BEGIN
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    EXECUTE format('CREATE INDEX IF NOT EXISTS conversations_title_trigrams '
                   'ON conversations USING gin (title %I.gin_trgm_ops)', trgm_schema);
END
$$;

-- Children newest first; it also serves every lookup by parent the old index did.
CREATE INDEX IF NOT EXISTS conversations_children
    ON conversations (parent_id, created_at DESC, thread_id DESC);
DROP INDEX IF EXISTS conversations_by_parent;

-- As in 0009, but planned for the arguments of each call: a plan made for any
-- arguments cannot use an index for a filter that may be absent ("p IS NULL OR …"),
-- so it read every thread newer than an expiry cutoff, and every title for a search.
-- A search first reads the 2,000 most recent threads of its range, which hold a whole
-- page of matches when the term is common, and only when they do not asks the trigram
-- index for every match (OFFSET 0 keeps that part planned on its own).
CREATE OR REPLACE FUNCTION exai_list_threads(
    p_limit integer, p_after_updated_at timestamptz, p_after_id uuid, p_search text,
    p_changed_after timestamptz, p_changed_at_or_before timestamptz, p_continuation_id text
) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    in_range constant text := '($2 IS NULL OR (c.updated_at, c.thread_id) < ($2, $3))
          AND ($5 IS NULL OR c.updated_at > $5) AND ($6 IS NULL OR c.updated_at <= $6)
          AND ($7 IS NULL OR c.continuation_id = $7)';
    newest_first constant text := ' ORDER BY c.updated_at DESC, c.thread_id DESC';
    page constant text := 'SELECT coalesce(jsonb_agg(exai_thread_json(page) ORDER BY page.updated_at DESC,
                                                      page.thread_id DESC), ''[]''::jsonb)
        FROM (SELECT * FROM %s c WHERE ' || in_range
        || ' AND ($4 IS NULL OR c.title ILIKE ''%%'' || $4 || ''%%'')' || newest_first || ' LIMIT $1) page';
    result jsonb;
BEGIN
    IF p_search IS NULL THEN
        EXECUTE format(page, 'conversations') INTO result
        USING p_limit, p_after_updated_at, p_after_id, p_search, p_changed_after,
              p_changed_at_or_before, p_continuation_id;
        RETURN result;
    END IF;
    EXECUTE format(page, '(SELECT * FROM conversations c WHERE ' || in_range || newest_first
                         || ' LIMIT 2000)') INTO result
    USING p_limit, p_after_updated_at, p_after_id, p_search, p_changed_after,
          p_changed_at_or_before, p_continuation_id;
    IF jsonb_array_length(result) < p_limit THEN
        EXECUTE format(page, '(SELECT * FROM conversations WHERE title ILIKE ''%'' || $4 || ''%'' OFFSET 0)')
        INTO result
        USING p_limit, p_after_updated_at, p_after_id, p_search, p_changed_after,
              p_changed_at_or_before, p_continuation_id;
    END IF;
    RETURN result;
END
$$;

CREATE OR REPLACE FUNCTION exai_list_children(p_parent_id uuid, p_limit integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(exai_thread_json(page) ORDER BY page.created_at DESC,
                              page.thread_id DESC), '[]'::jsonb)
    FROM (
        SELECT * FROM conversations c WHERE c.parent_id = p_parent_id
        ORDER BY c.created_at DESC, c.thread_id DESC
        LIMIT p_limit
    ) page
$$;

SELECT exai_restrict_function('exai_list_children(uuid, integer)');
