//! Appends: checked, written and answered at a cost independent of the thread's size,
//! in two round trips to SQLite: one statement that reads what the checks need, then
//! one command that writes the turns, answers them as stored, and moves the thread's
//! header.

use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::rows::{decode_thread, decode_turn, encode_json, encode_time};
use super::{SELECT_TURNS_FROM, SqliteStore};
use crate::domain::{NewTurn, Rejection, Turn};
use crate::store::{AppendTurns, Appended, StoreError, TURNS_PER_RUN, WriteError};

/// Thread `?1`'s header with, for the idempotency key `?2`: the first seq of the turns
/// it already wrote, whether it is the key of an unfinished run (one holding room), and
/// how many other unfinished runs hold room.
const CHECK_APPEND: &str = concat!(
    "SELECT ",
    thread_columns!(),
    ", (SELECT seq FROM messages WHERE conversation_id = ?1 AND idempotency_key = ?2) AS replayed_from",
    ", EXISTS (SELECT 1 FROM tool_runs WHERE continuation_id = ?1",
    " AND status IN ('queued', 'running') AND 'run:' || id = ?2) AS run_under_way",
    ", (",
    open_runs!(),
    ") AS open_runs FROM conversations c WHERE c.id = ?1"
);

const INSERT_TURNS: &str = "INSERT INTO messages (conversation_id, seq, role, content, tool_name, \
     files, model_provider, model_name, metadata, idempotency_key, created_at) VALUES ";

const TURN_VALUES: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

const RETURNING_TURNS: &str = concat!(" RETURNING ", turn_columns!(""));

/// Follows the last `INSERT` of an append in the same command; its parameters come
/// after the turns': the number of turns, the time, the thread.
const MOVE_HEADER: &str = "UPDATE conversations SET turn_count = turn_count + ?, updated_at = ?, \
     version = version + 1 WHERE id = ?";

/// Rows per `INSERT`, well within SQLite's limit on bound parameters.
const TURNS_PER_INSERT: usize = 100;

impl SqliteStore {
    /// Appends within the caller's transaction and answers with the thread's header and
    /// the turns written: the thread's other turns are never read.
    pub(super) async fn append_in(
        &self,
        conn: &mut SqliteConnection,
        append: &AppendTurns,
    ) -> Result<Appended, WriteError> {
        let id = append.thread_id;
        let key = append.idempotency_key.as_deref();
        self.trip();
        let row = sqlx::query(CHECK_APPEND)
            .bind(id.to_string())
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(Rejection::ThreadNotFound(id))?;
        let mut thread = decode_thread(&row)?;
        let count = append.turns.len() as u32;

        if let Some(first) = row.try_get::<Option<u32>, _>("replayed_from")? {
            let turns = self.turns_from(conn, id, first, count).await?;
            return Ok(Appended { thread, turns, replayed: true });
        }
        // A run that reserved its room while the thread was open records its answer even
        // if the thread expired while it ran.
        if append.policy.is_expired(thread.updated_at, append.now)
            && !row.try_get::<bool, _>("run_under_way")?
        {
            return Err(Rejection::ThreadExpired(id).into());
        }
        // Other runs' reserved room stays free for their answers.
        let reserved = TURNS_PER_RUN * row.try_get::<u32, _>("open_runs")?;
        if thread.turn_count + count + reserved > append.policy.max_turns {
            return Err(
                Rejection::TurnLimitReached { thread_id: id, max_turns: append.policy.max_turns }.into()
            );
        }

        // Clocks of concurrent callers differ slightly: never move a thread back in time.
        let now = append.now.max(thread.updated_at);
        let encoded_now = encode_time(now);
        let first = thread.turn_count + 1;
        let mut turns = Vec::with_capacity(append.turns.len());
        let chunks: Vec<&[NewTurn]> = append.turns.chunks(TURNS_PER_INSERT).collect();
        // The header moves in the command that writes the last turns (alone if there are
        // none): a round trip less. Should it fail, the write's savepoint undoes the turns.
        let last = chunks.len().saturating_sub(1);
        for chunk_index in 0..=last {
            let chunk = chunks.get(chunk_index).copied().unwrap_or_default();
            let mut sql = String::new();
            if !chunk.is_empty() {
                let values = vec![TURN_VALUES; chunk.len()].join(", ");
                sql = format!("{INSERT_TURNS}{values}{RETURNING_TURNS};");
            }
            if chunk_index == last {
                sql.push_str(MOVE_HEADER);
            }
            let mut insert = sqlx::query(&sql);
            for (offset, turn) in chunk.iter().enumerate() {
                let offset = chunk_index * TURNS_PER_INSERT + offset;
                insert = insert
                    .bind(id.to_string())
                    .bind(first + offset as u32)
                    .bind(turn.role.as_str())
                    .bind(&turn.content)
                    .bind(&turn.tool_name)
                    .bind(encode_json(&turn.files)?)
                    .bind(&turn.model_provider)
                    .bind(&turn.model_name)
                    .bind(encode_json(&turn.metadata)?)
                    .bind(if offset == 0 { key } else { None })
                    .bind(&encoded_now);
            }
            if chunk_index == last {
                insert = insert.bind(count).bind(&encoded_now).bind(id.to_string());
            }
            self.trip();
            for row in insert.fetch_all(&mut *conn).await? {
                turns.extend(decode_turn(&row)?);
            }
        }
        // RETURNING answers rows in no particular order.
        turns.sort_by_key(|turn| turn.seq);

        // The header as the UPDATE left it; only exai writes an SQLite store.
        thread.turn_count += count;
        thread.updated_at = now;
        thread.version += 1;
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
