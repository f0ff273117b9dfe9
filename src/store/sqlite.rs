//! The embedded default: one SQLite file in WAL mode, every commit synced to disk.

mod exclusive;
mod group_commit;
mod rows;
mod threads;

pub use exclusive::{LockError, ServingLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row, SqliteConnection};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

use self::group_commit::GroupCommit;
use self::rows::{decode_turn, decode_uuid, thread_with_turns};
use super::{
    AppendTurns, Appended, ExportSink, ImportedThread, Page, RunLease, RunQuery, Store, StoreError, Sweep,
    ThreadQuery, ThreadRecord, WriteError, readable_turn,
};
use crate::domain::{
    Chain, ConversationPolicy, HistoryLimits, NewThread, Thread, ThreadWithTurns, ToolRun, Turn,
};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const READERS: u32 = 4;
/// Prepared statements the writer keeps: every statement its writes run, with room.
const WRITER_STATEMENTS: usize = 64;

macro_rules! thread_columns {
    () => {
        "c.id, c.parent_id, c.title, c.tool_name, c.metadata, c.created_at, c.updated_at, \
         c.turn_count, c.version"
    };
}

/// The turn columns of `messages m`, or, given `""`, of the table a `RETURNING` reads.
#[rustfmt::skip]
macro_rules! turn_columns {
    () => {
        turn_columns!("m.")
    };
    ($table:literal) => {
        concat!(
            $table, "conversation_id AS m_thread_id, ", $table, "seq AS m_seq, ",
            $table, "role AS m_role, ", $table, "content AS m_content, ",
            $table, "tool_name AS m_tool_name, ", $table, "files AS m_files, ",
            $table, "model_provider AS m_model_provider, ", $table, "model_name AS m_model_name, ",
            $table, "metadata AS m_metadata, ", $table, "created_at AS m_created_at"
        )
    };
}

/// How many unfinished runs on thread `?1` hold room for turns not appended yet (their
/// turns carry the key `run:<run id>`), but the one whose turns carry the key `?2`.
macro_rules! open_runs {
    () => {
        "SELECT count(*) FROM tool_runs r \
         WHERE r.continuation_id = ?1 AND r.status IN ('queued', 'running') \
         AND 'run:' || r.id IS NOT ?2 \
         AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = ?1 \
         AND m.idempotency_key = 'run:' || r.id)"
    };
}

/// Inserts turn `?2` of thread `?1` with every column given.
macro_rules! insert_turn {
    () => {
        "INSERT INTO messages (conversation_id, seq, role, content, tool_name, files, model_provider, \
         model_name, metadata, idempotency_key, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    };
}

/// The parameters of `insert_turn!`: `turn`'s own fields (a new turn's or a stored
/// one's, which have the same), as turn `seq` of thread `id`, with its key and time.
/// Encoding the JSON fields can fail: the caller's error takes a `StoreError`.
macro_rules! turn_row {
    ($id:expr, $seq:expr, $turn:expr, $key:expr, $at:expr) => {
        rusqlite::params![
            $id,
            $seq,
            $turn.role.as_str(),
            $turn.content,
            $turn.tool_name,
            $crate::store::sqlite::rows::encode_json(&$turn.files)?,
            $turn.model_provider,
            $turn.model_name,
            $crate::store::sqlite::rows::encode_json(&$turn.metadata)?,
            $key,
            $at,
        ]
    };
}

// After the macros, which their queries use.
mod append;
mod listings;
mod runs;
mod transfer;

const SELECT_THREAD_WITH_TURNS: &str = concat!(
    "SELECT ",
    thread_columns!(),
    ", ",
    turn_columns!(),
    " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id",
    " WHERE c.id = ?1 ORDER BY m.seq"
);

/// `?3` turns from seq `?2` on: the ones an append wrote, read back without the rest.
const SELECT_TURNS_FROM: &str = concat!(
    "SELECT ",
    turn_columns!(),
    " FROM messages m WHERE m.conversation_id = ?1 AND m.seq >= ?2 ORDER BY m.seq LIMIT ?3"
);

const LIST_TURNS: &str = concat!(
    "SELECT c.id, ",
    turn_columns!(),
    " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq > ?2",
    " WHERE c.id = ?1 ORDER BY m.seq LIMIT ?3"
);

/// Walks `parent_id` from the requested thread, refusing to revisit a thread; sizes
/// every turn of the chain newest first without reading it (`octet_length` takes the
/// length from the record header); then joins the turns whose running size stays within
/// the budget: the whole chain in one statement, and no turn beyond the budget loaded.
const HISTORY: &str = concat!(
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

/// The writer's own connection, opened after the migrations have put the file in WAL
/// mode (which the file keeps), every commit synced.
fn open_writer(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
    // The savepoints of a batch journal the pages their writes change; past 64 KiB
    // SQLite would spill that journal to a temporary file, created and deleted again
    // for nearly every batch. It is never needed after a crash.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;")?;
    Ok(conn)
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
        match error.sqlite_error_code() {
            // Another process holds the file, or the disk under it fails: not the request.
            Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure) => {
                StoreError::Unavailable(error.to_string())
            }
            _ => StoreError::Internal(error.to_string()),
        }
    }
}

impl From<rusqlite::Error> for WriteError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::from(error).into()
    }
}

/// Cheap to clone: a write takes a clone of the store along to the writer's thread.
#[derive(Clone)]
pub struct SqliteStore {
    /// The single writer connection: SQLite admits one writer at a time, and queueing
    /// writes here rather than in SQLite's lock keeps appends in order without busy
    /// errors, and lets concurrent writes share one commit.
    writer: GroupCommit,
    reader: SqlitePool,
    round_trips: Arc<AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options =
            SqliteConnectOptions::new().filename(path).busy_timeout(BUSY_TIMEOUT).foreign_keys(true);
        let mut migrator = SqliteConnection::connect_with(
            &options.clone().create_if_missing(true).journal_mode(SqliteJournalMode::Wal),
        )
        .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut migrator)
            .await
            .map_err(|e| StoreError::Internal(format!("migrating {}: {e}", path.display())))?;
        // A migration that rewrote a table left a log as large as the table, and the log
        // keeps its size while any connection is open; no other is open yet. Failing that
        // (a backup reading the file, say) costs disk space, not correctness.
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut migrator).await {
            tracing::warn!(%error, "the SQLite log keeps its size until exai stops: emptying it failed");
        }
        let writer = open_writer(path)?;
        migrator.close().await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.read_only(true))
            .await?;
        let round_trips = Arc::new(AtomicU64::new(0));
        Ok(Self { writer: GroupCommit::start(writer, round_trips.clone())?, reader, round_trips })
    }

    /// Runs `write` on the writer connection, in a transaction shared with the writes
    /// queued alongside it; its result once that transaction has committed.
    async fn write<T, E, F>(&self, write: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + std::fmt::Display + Send + 'static,
        F: FnOnce(&Self, &rusqlite::Connection) -> Result<T, E> + Send + 'static,
    {
        let store = self.clone();
        self.writer.write(move |conn| write(&store, conn)).await
    }

    /// Counts one request to SQLite: a command to a reader, a statement of a write.
    fn trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Transactions the writer has committed, however many writes each held.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    async fn load_thread_with_turns(
        &self,
        conn: &mut SqliteConnection,
        id: Uuid,
    ) -> Result<Option<ThreadWithTurns>, StoreError> {
        self.trip();
        let rows = sqlx::query(SELECT_THREAD_WITH_TURNS).bind(id.to_string()).fetch_all(conn).await?;
        thread_with_turns(&rows)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_thread(
        &self,
        id: Uuid,
        new: &NewThread,
        now: DateTime<Utc>,
    ) -> Result<Thread, WriteError> {
        let new = new.clone();
        self.write(move |store, conn| store.insert_thread(conn, id, new, now)).await
    }

    async fn get_thread(&self, id: Uuid) -> Result<Option<ThreadWithTurns>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        self.load_thread_with_turns(&mut conn, id).await
    }

    async fn list_threads(&self, query: &ThreadQuery) -> Result<Page<Thread>, StoreError> {
        self.select_threads(query).await
    }

    async fn list_children(&self, parent_id: Uuid, limit: u32) -> Result<Page<Thread>, StoreError> {
        self.select_children(parent_id, limit).await
    }

    async fn delete_thread(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(move |store, conn| store.remove_thread(conn, id)).await
    }

    async fn append_turns(&self, append: &AppendTurns) -> Result<Appended, WriteError> {
        let append = append.clone();
        self.write(move |store, conn| store.append_in(conn, &append)).await
    }

    async fn list_turns(
        &self,
        thread_id: Uuid,
        after_seq: u32,
        limit: u32,
    ) -> Result<Option<Vec<Turn>>, StoreError> {
        self.trip();
        let rows = sqlx::query(LIST_TURNS)
            .bind(thread_id.to_string())
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let turns = rows.iter().map(decode_turn).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(turns.into_iter().flatten().collect()))
    }

    async fn history(&self, thread_id: Uuid, limits: HistoryLimits) -> Result<Option<Chain>, StoreError> {
        self.trip();
        let id = thread_id.to_string();
        let mut rows =
            sqlx::query(HISTORY).bind(&id).bind(limits.max_depth).bind(limits.max_bytes).fetch(&self.reader);
        // Decoded row by row, so a row's copy of a turn is gone before the next arrives.
        let mut chain: Option<Chain> = None;
        while let Some(row) = rows.try_next().await? {
            let chain = chain.get_or_insert(Chain {
                thread_ids: Vec::new(),
                turns: Vec::new(),
                total_turns: row.try_get("chain_turns")?,
            });
            let link = decode_uuid(&row, "chain_id")?;
            if chain.thread_ids.last() != Some(&link) {
                chain.thread_ids.push(link);
            }
            if let Some(turn) = decode_turn(&row).transpose() {
                chain.turns.extend(readable_turn(turn));
            }
        }
        Ok(chain)
    }

    async fn reserve_run(
        &self,
        run: &ToolRun,
        lease: &RunLease,
        policy: ConversationPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), WriteError> {
        let (run, lease) = (run.clone(), lease.clone());
        self.write(move |store, conn| store.reserve_in(conn, &run, &lease, policy, now)).await
    }

    async fn save_run(&self, run: &ToolRun) -> Result<bool, StoreError> {
        let run = run.clone();
        self.write(move |store, conn| store.upsert_run(conn, &run)).await
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<ToolRun>, StoreError> {
        self.select_run(id).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<ToolRun>, StoreError> {
        self.select_runs(query).await
    }

    async fn renew_run_leases(&self, lease: &RunLease, runs: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let (lease, runs) = (lease.clone(), runs.to_vec());
        self.write(move |store, conn| store.renew_leases(conn, &lease, &runs)).await
    }

    async fn request_run_cancel(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(move |store, conn| store.ask_cancel(conn, id)).await
    }

    async fn fail_abandoned_runs(&self, sweep: &Sweep<'_>) -> Result<u64, StoreError> {
        let (owner, error) = (sweep.owner.to_owned(), sweep.error.to_owned());
        let (abandoned, now) = (sweep.abandoned, sweep.now);
        self.write(move |store, conn| {
            store.fail_abandoned(conn, &Sweep { owner: &owner, abandoned, error: &error, now })
        })
        .await
    }

    async fn export(&self, sink: &mut dyn ExportSink) -> Result<(), StoreError> {
        self.export_snapshot(sink).await
    }

    async fn import_threads(&self, threads: &[ThreadRecord]) -> Result<Vec<ImportedThread>, StoreError> {
        let threads = threads.to_vec();
        self.write(move |store, conn| store.import_batch(conn, &threads)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.writer.is_running() {
            return Err(group_commit::stopped());
        }
        self.trip();
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_connection_syncs_every_commit_with_foreign_keys_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("exai.db");
        drop(SqliteStore::open(&path).await.expect("open"));
        let writer = open_writer(&path).expect("writer");
        let pragma = |name: &str| -> i64 {
            writer.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0)).expect("pragma")
        };
        // FULL, on, MEMORY.
        assert_eq!((pragma("synchronous"), pragma("foreign_keys"), pragma("temp_store")), (2, 1, 2));
        let mode: String = writer.query_row("PRAGMA journal_mode", [], |row| row.get(0)).expect("mode");
        assert_eq!(mode, "wal");
    }
}
