//! The embedded default: one SQLite file in WAL mode, every commit synced to disk.

mod rows;
mod runs;
mod statements;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

use self::rows::{
    decode_thread, decode_turn, decode_uuid, encode_json, encode_time, position, thread_with_turns,
};
use self::statements::{
    HISTORY, INSERT_TURN, LIST_THREADS, LIST_TURNS, SELECT_THREAD, SELECT_THREAD_WITH_TURNS,
};
use super::{
    Activity, AppendTurns, Appended, Listed, Page, RunLease, RunQuery, Store, StoreError, Sweep,
    TURNS_PER_RUN, ThreadQuery, WriteError, escape_like, readable_turn, thread_position, turns_from,
};
use crate::domain::{
    Chain, ConversationPolicy, HistoryLimits, NewThread, Rejection, Thread, ThreadWithTurns, ToolRun, Turn,
};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const READERS: u32 = 4;

pub struct SqliteStore {
    /// A single connection: SQLite admits one writer at a time, and queueing writers
    /// here rather than in SQLite's lock keeps appends in order without busy errors.
    writer: SqlitePool,
    reader: SqlitePool,
    round_trips: AtomicU64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options =
            SqliteConnectOptions::new().filename(path).busy_timeout(BUSY_TIMEOUT).foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(
                options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Internal(format!("migrating {}: {e}", path.display())))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader, round_trips: AtomicU64::new(0) })
    }

    /// Counts one statement sent to SQLite.
    fn trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
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

    async fn append_in(
        &self,
        conn: &mut SqliteConnection,
        append: &AppendTurns,
    ) -> Result<Appended, WriteError> {
        let id = append.thread_id;
        self.trip();
        let row = sqlx::query(SELECT_THREAD).bind(id.to_string()).fetch_optional(&mut *conn).await?;
        let thread = decode_thread(&row.ok_or(Rejection::ThreadNotFound(id))?)?;
        let count = append.turns.len() as u32;

        if let Some(key) = &append.idempotency_key {
            self.trip();
            let first: Option<u32> = sqlx::query_scalar(
                "SELECT seq FROM messages WHERE conversation_id = ?1 AND idempotency_key = ?2",
            )
            .bind(id.to_string())
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(first) = first {
                let current = self.load_thread_with_turns(conn, id).await?;
                let current = current.ok_or(Rejection::ThreadNotFound(id))?;
                let turns = turns_from(&current.turns, first, count);
                return Ok(Appended { thread: current, turns, replayed: true });
            }
        }
        // A run that reserved its room while the thread was open records its answer even
        // if the thread expired while it ran.
        let key = append.idempotency_key.as_deref();
        if append.policy.is_expired(thread.updated_at, append.now)
            && !self.run_under_way(conn, id, key).await?
        {
            return Err(Rejection::ThreadExpired(id).into());
        }
        // Other runs' reserved room stays free for their answers.
        let reserved = TURNS_PER_RUN * self.open_runs(conn, id, append.idempotency_key.as_deref()).await?;
        if thread.turn_count + count + reserved > append.policy.max_turns {
            return Err(
                Rejection::TurnLimitReached { thread_id: id, max_turns: append.policy.max_turns }.into()
            );
        }

        // Clocks of concurrent callers differ slightly: never move a thread back in time.
        let now = encode_time(append.now.max(thread.updated_at));
        for (offset, turn) in append.turns.iter().enumerate() {
            let key = if offset == 0 { append.idempotency_key.as_deref() } else { None };
            self.trip();
            sqlx::query(INSERT_TURN)
                .bind(id.to_string())
                .bind(thread.turn_count + 1 + offset as u32)
                .bind(turn.role.as_str())
                .bind(&turn.content)
                .bind(&turn.tool_name)
                .bind(encode_json(&turn.files)?)
                .bind(&turn.model_provider)
                .bind(&turn.model_name)
                .bind(encode_json(&turn.metadata)?)
                .bind(key)
                .bind(&now)
                .execute(&mut *conn)
                .await?;
        }
        self.trip();
        sqlx::query(
            "UPDATE conversations SET turn_count = turn_count + ?2, updated_at = ?3, \
             version = version + 1 WHERE id = ?1",
        )
        .bind(id.to_string())
        .bind(count)
        .bind(&now)
        .execute(&mut *conn)
        .await?;

        let current = self.load_thread_with_turns(conn, id).await?;
        let current = current.ok_or(Rejection::ThreadNotFound(id))?;
        let turns = turns_from(&current.turns, thread.turn_count + 1, count);
        Ok(Appended { thread: current, turns, replayed: false })
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
        self.trip();
        let inserted = sqlx::query(
            "INSERT INTO conversations (id, parent_id, title, tool_name, metadata, created_at, \
             updated_at, turn_count, version) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?6, 0, 1 \
             WHERE ?2 IS NULL OR EXISTS (SELECT 1 FROM conversations WHERE id = ?2)",
        )
        .bind(id.to_string())
        .bind(new.parent_id.map(|p| p.to_string()))
        .bind(&new.title)
        .bind(&new.tool_name)
        .bind(encode_json(&new.metadata)?)
        .bind(encode_time(now))
        .execute(&self.writer)
        .await?;
        match (inserted.rows_affected(), new.parent_id) {
            (0, Some(parent)) => Err(Rejection::ParentNotFound(parent).into()),
            (0, None) => Err(StoreError::Internal(format!("thread {id} was not inserted")).into()),
            _ => Ok(Thread {
                id,
                parent_id: new.parent_id,
                title: new.title.clone(),
                tool_name: new.tool_name.clone(),
                metadata: new.metadata.clone(),
                created_at: now,
                updated_at: now,
                turn_count: 0,
                version: 1,
            }),
        }
    }

    async fn get_thread(&self, id: Uuid) -> Result<Option<ThreadWithTurns>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        self.load_thread_with_turns(&mut conn, id).await
    }

    async fn list_threads(&self, query: &ThreadQuery) -> Result<Page<Thread>, StoreError> {
        let (changed_after, changed_at_or_before) = match query.activity {
            Activity::Any => (None, None),
            Activity::ChangedAfter(t) => (Some(encode_time(t)), None),
            Activity::ChangedAtOrBefore(t) => (None, Some(encode_time(t))),
        };
        let pattern = query.search.as_deref().map(escape_like);
        self.trip();
        let rows = sqlx::query(LIST_THREADS)
            .bind(query.after.map(|c| encode_time(c.at)))
            .bind(query.after.map(|c| c.id.to_string()))
            .bind(changed_after)
            .bind(changed_at_or_before)
            .bind(pattern)
            .bind(query.limit + 1)
            .bind(query.continuation_id.as_deref())
            .fetch_all(&self.reader)
            .await?;
        let rows = rows.iter().map(|row| Listed::decode(decode_thread(row), || position(row, "updated_at")));
        Ok(Page::of(rows.collect(), query.limit, thread_position, "thread"))
    }

    async fn delete_thread(&self, id: Uuid) -> Result<bool, StoreError> {
        self.trip();
        let deleted = sqlx::query("DELETE FROM conversations WHERE id = ?1")
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn append_turns(&self, append: &AppendTurns) -> Result<Appended, WriteError> {
        self.trip();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let appended = self.append_in(&mut tx, append).await?;
        self.trip();
        tx.commit().await?;
        Ok(appended)
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
        self.trip();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        self.reserve_in(&mut tx, run, lease, policy, now).await?;
        self.trip();
        tx.commit().await?;
        Ok(())
    }

    async fn save_run(&self, run: &ToolRun) -> Result<(), StoreError> {
        self.upsert_run(run).await
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<ToolRun>, StoreError> {
        self.select_run(id).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<ToolRun>, StoreError> {
        self.select_runs(query).await
    }

    async fn renew_run_leases(&self, lease: &RunLease, runs: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        self.renew_leases(lease, runs).await
    }

    async fn request_run_cancel(&self, id: Uuid) -> Result<bool, StoreError> {
        self.ask_cancel(id).await
    }

    async fn fail_abandoned_runs(&self, sweep: &Sweep<'_>) -> Result<u64, StoreError> {
        self.fail_abandoned(sweep).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.trip();
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
