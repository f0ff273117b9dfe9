//! The longer statements of the SQLite store on threads and turns.

macro_rules! thread_columns {
    () => {
        "c.id, c.parent_id, c.title, c.tool_name, c.metadata, c.created_at, c.updated_at, \
         c.turn_count, c.version"
    };
}

macro_rules! turn_columns {
    () => {
        "m.conversation_id AS m_thread_id, m.seq AS m_seq, m.role AS m_role, \
         m.content AS m_content, m.tool_name AS m_tool_name, m.files AS m_files, \
         m.model_provider AS m_model_provider, m.model_name AS m_model_name, \
         m.metadata AS m_metadata, m.created_at AS m_created_at"
    };
}

pub(super) const SELECT_THREAD: &str =
    concat!("SELECT ", thread_columns!(), " FROM conversations c WHERE c.id = ?1");

pub(super) const SELECT_THREAD_WITH_TURNS: &str = concat!(
    "SELECT ",
    thread_columns!(),
    ", ",
    turn_columns!(),
    " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id",
    " WHERE c.id = ?1 ORDER BY m.seq"
);

pub(super) const LIST_THREADS: &str = concat!(
    "SELECT ",
    thread_columns!(),
    " FROM conversations c",
    " WHERE (?1 IS NULL OR (c.updated_at, c.id) < (?1, ?2))",
    " AND (?3 IS NULL OR c.updated_at > ?3)",
    " AND (?4 IS NULL OR c.updated_at <= ?4)",
    " AND (?5 IS NULL OR c.title LIKE '%' || ?5 || '%' ESCAPE '\\')",
    // A thread's continuation_id is its id here.
    " AND (?7 IS NULL OR c.id = ?7)",
    " ORDER BY c.updated_at DESC, c.id DESC LIMIT ?6"
);

pub(super) const LIST_TURNS: &str = concat!(
    "SELECT c.id, ",
    turn_columns!(),
    " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq > ?2",
    " WHERE c.id = ?1 ORDER BY m.seq LIMIT ?3"
);

/// Walks `parent_id` from the requested thread, refusing to revisit a thread; sizes
/// every turn of the chain newest first without reading it (`octet_length` takes the
/// length from the record header); then joins the turns whose running size stays within
/// the budget: the whole chain in one statement, and no turn beyond the budget loaded.
pub(super) const HISTORY: &str = concat!(
    "WITH RECURSIVE chain (id, parent_id, depth, visited) AS (",
    " SELECT id, parent_id, 0, '/' || id || '/' FROM conversations WHERE id = ?1",
    " UNION ALL",
    " SELECT c.id, c.parent_id, chain.depth + 1, chain.visited || c.id || '/'",
    " FROM conversations c JOIN chain ON c.id = chain.parent_id",
    " WHERE chain.depth < ?2 AND instr(chain.visited, '/' || c.id || '/') = 0",
    "), sized AS (",
    " SELECT s.conversation_id, s.seq, sum(octet_length(s.content) + octet_length(s.files)",
    "  + octet_length(s.metadata)) OVER (ORDER BY chain.depth, s.seq DESC",
    "  ROWS UNBOUNDED PRECEDING) AS newer_bytes",
    " FROM chain JOIN messages s ON s.conversation_id = chain.id",
    "), kept AS (SELECT conversation_id, seq FROM sized WHERE newer_bytes <= ?3)",
    " SELECT chain.id AS chain_id, (SELECT count(*) FROM sized) AS chain_turns, ",
    turn_columns!(),
    " FROM chain LEFT JOIN kept ON kept.conversation_id = chain.id",
    " LEFT JOIN messages m ON m.conversation_id = kept.conversation_id AND m.seq = kept.seq",
    " ORDER BY chain.depth DESC, m.seq"
);

pub(super) const INSERT_TURN: &str = "INSERT INTO messages (conversation_id, seq, role, content, tool_name, \
     files, model_provider, model_name, metadata, idempotency_key, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
