//! Appends: checked, written and answered at a cost independent of the thread's size,
//! in one round trip to SQLite: one command that reads what the checks need, writes the
//! turns, answers them as stored, and moves the thread's header. The checks judge the
//! thread as it was before the writes; a refused append is undone by its savepoint.

use futures_util::TryStreamExt;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Either, Executor, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::rows::{decode_thread, decode_time, decode_turn, encode_json, encode_time};
use super::{SELECT_TURNS_FROM, SqliteStore};
use crate::domain::{NewTurn, Rejection, Thread, Turn};
use crate::store::{AppendTurns, Appended, StoreError, TURNS_PER_RUN, WriteError};

/// Thread `?1`'s header with, for the idempotency key `?2`: the first seq of the turns
/// it already wrote, whether it is the key of an unfinished run (one holding room) or of
/// one that has ended, and how many other unfinished runs hold room.
const CHECK_APPEND: &str = concat!(
    "SELECT ",
    thread_columns!(),
    ", (SELECT seq FROM messages WHERE conversation_id = ?1 AND idempotency_key = ?2) AS replayed_from",
    ", EXISTS (SELECT 1 FROM tool_runs WHERE continuation_id = ?1",
    " AND status IN ('queued', 'running') AND 'run:' || id = ?2) AS run_under_way",
    ", EXISTS (SELECT 1 FROM tool_runs WHERE ?2 GLOB 'run:*' AND id = substr(?2, 5)",
    " AND status NOT IN ('queued', 'running')) AS run_ended",
    ", (",
    open_runs!(),
    ") AS open_runs FROM conversations c WHERE c.id = ?1;"
);

const INSERT_TURNS: &str = "INSERT INTO messages (conversation_id, seq, role, content, tool_name, \
     files, model_provider, model_name, metadata, idempotency_key, created_at) VALUES ";

const RETURNING_TURNS: &str = concat!(" RETURNING ", turn_columns!(""), ";");

/// `?4` more turns, at the time `?3` unless the thread's is later: clocks of concurrent
/// callers differ slightly, and a thread never moves back in time.
const MOVE_HEADER: &str = "UPDATE conversations SET turn_count = turn_count + ?4, \
     updated_at = max(?3, updated_at), version = version + 1 WHERE id = ?1 \
     RETURNING turn_count, updated_at, version";

/// The fields a turn binds, numbered from `?5` on.
const TURN_FIELDS: usize = 7;

/// Rows per `INSERT`, well within SQLite's limit on bound parameters.
const TURNS_PER_INSERT: usize = 100;

/// The row of the turn at `index` in its append, whose fields are parameters from
/// `?first` on: its seq and time follow the header as it was before the append.
fn turn_values(index: usize, first: usize) -> String {
    let fields: Vec<String> = (first..first + TURN_FIELDS).map(|n| format!("?{n}")).collect();
    let key = if index == 0 { "?2" } else { "NULL" };
    format!(
        "(?1, (SELECT turn_count FROM conversations WHERE id = ?1) + {}, {}, {key}, \
         max(?3, (SELECT updated_at FROM conversations WHERE id = ?1)))",
        index + 1,
        fields.join(", ")
    )
}

/// What one command did: the rows of each statement that completed, in order, and
/// the error that stopped the rest, if one did.
struct Ran {
    statements: Vec<Vec<SqliteRow>>,
    failed: Option<sqlx::Error>,
}

/// Runs every statement of `query` in one round trip to the connection's thread.
async fn run<'q>(conn: &mut SqliteConnection, query: Query<'q, Sqlite, SqliteArguments<'q>>) -> Ran {
    let mut results = conn.fetch_many(query);
    let (mut statements, mut rows) = (Vec::new(), Vec::new());
    loop {
        match results.try_next().await {
            Ok(Some(Either::Right(row))) => rows.push(row),
            Ok(Some(Either::Left(_))) => statements.push(std::mem::take(&mut rows)),
            Ok(None) => return Ran { statements, failed: None },
            Err(error) => return Ran { statements, failed: Some(error) },
        }
    }
}

impl SqliteStore {
    /// Appends within the caller's transaction and answers with the thread's header and
    /// the turns written: the thread's other turns are never read.
    pub(super) async fn append_in(
        &self,
        conn: &mut SqliteConnection,
        append: &AppendTurns,
    ) -> Result<Appended, WriteError> {
        let id = append.thread_id;
        let chunks: Vec<&[NewTurn]> = append.turns.chunks(TURNS_PER_INSERT).collect();
        // The header moves in the command that writes the last turns (with the checks
        // only, if there are none).
        let last = chunks.len().saturating_sub(1);
        let mut thread = None;
        let mut written = Vec::new();
        for chunk_index in 0..=last {
            let chunk = chunks.get(chunk_index).copied().unwrap_or_default();
            let mut sql = String::new();
            if chunk_index == 0 {
                sql.push_str(CHECK_APPEND);
            }
            if !chunk.is_empty() {
                let start = chunk_index * TURNS_PER_INSERT;
                let values: Vec<String> =
                    (0..chunk.len()).map(|n| turn_values(start + n, 5 + n * TURN_FIELDS)).collect();
                sql.push_str(&format!("{INSERT_TURNS}{}{RETURNING_TURNS}", values.join(", ")));
            }
            if chunk_index == last {
                sql.push_str(MOVE_HEADER);
            }
            let mut query = sqlx::query(&sql)
                .bind(id.to_string())
                .bind(append.idempotency_key.as_deref())
                .bind(encode_time(append.now))
                .bind(append.turns.len() as u32);
            for turn in chunk {
                query = query
                    .bind(turn.role.as_str())
                    .bind(&turn.content)
                    .bind(&turn.tool_name)
                    .bind(encode_json(&turn.files)?)
                    .bind(&turn.model_provider)
                    .bind(&turn.model_name)
                    .bind(encode_json(&turn.metadata)?);
            }
            self.trip();
            let Ran { mut statements, failed } = run(conn, query).await;
            if chunk_index == 0 {
                let Some(check) = statements.first() else {
                    return Err(StoreError::from(failed.unwrap_or(sqlx::Error::RowNotFound)).into());
                };
                let row = check.first().ok_or(Rejection::ThreadNotFound(id))?;
                let checked = decode_thread(row)?;
                // A key already used fails the INSERT: nothing of this command is written.
                if let Some(first) = row.try_get::<Option<u32>, _>("replayed_from")? {
                    let turns = self.turns_from(conn, id, first, append.turns.len() as u32).await?;
                    return Ok(Appended { thread: checked, turns, replayed: true });
                }
                refusal(append, &checked, row)?;
                thread = Some(checked);
                statements.remove(0);
            }
            if let Some(error) = failed {
                return Err(StoreError::from(error).into());
            }
            written.extend(statements);
        }
        let mut thread = thread.ok_or_else(|| StoreError::Internal("an append ran no check".into()))?;
        let header = written.pop().and_then(|rows| rows.into_iter().next());
        let header = header.ok_or_else(|| StoreError::Internal("an append moved no header".into()))?;
        thread.turn_count = header.try_get("turn_count")?;
        thread.updated_at = decode_time(&header, "updated_at")?;
        thread.version = header.try_get("version")?;
        let mut turns = Vec::with_capacity(append.turns.len());
        for row in written.iter().flatten() {
            turns.extend(decode_turn(row)?);
        }
        // RETURNING answers rows in no particular order.
        turns.sort_by_key(|turn| turn.seq);
        Ok(Appended { thread, turns, replayed: false })
    }

    /// `count` turns of the thread from `first` on, as stored.
    async fn turns_from(
        &self,
        conn: &mut SqliteConnection,
        id: Uuid,
        first: u32,
        count: u32,
    ) -> Result<Vec<Turn>, StoreError> {
        self.trip();
        let rows = sqlx::query(SELECT_TURNS_FROM)
            .bind(id.to_string())
            .bind(first)
            .bind(count)
            .fetch_all(&mut *conn)
            .await?;
        let turns = rows.iter().map(decode_turn).collect::<Result<Vec<_>, _>>()?;
        Ok(turns.into_iter().flatten().collect())
    }
}

/// Why `thread`, as it was before the append, refuses it, if it does; `row` is its check.
fn refusal(append: &AppendTurns, thread: &Thread, row: &SqliteRow) -> Result<(), WriteError> {
    let id = append.thread_id;
    // A run's end is final: the answer of a run that ended without it stays out.
    if row.try_get::<bool, _>("run_ended")? {
        return Err(Rejection::RunEnded.into());
    }
    // A run that reserved its room while the thread was open records its answer even
    // if the thread expired while it ran.
    if append.policy.is_expired(thread.updated_at, append.now) && !row.try_get::<bool, _>("run_under_way")? {
        return Err(Rejection::ThreadExpired(id).into());
    }
    // Other runs' reserved room stays free for their answers.
    let reserved = TURNS_PER_RUN * row.try_get::<u32, _>("open_runs")?;
    if thread.turn_count + append.turns.len() as u32 + reserved > append.policy.max_turns {
        return Err(Rejection::TurnLimitReached { thread_id: id, max_turns: append.policy.max_turns }.into());
    }
    Ok(())
}
