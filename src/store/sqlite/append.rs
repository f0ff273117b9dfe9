//! Appends: checked, written and answered at a cost independent of the thread's size.

use sqlx::SqliteConnection;
use uuid::Uuid;

use super::rows::{decode_thread, decode_turn, encode_json, encode_time};
use super::{INSERT_TURN, SELECT_THREAD, SELECT_TURNS_FROM, SqliteStore};
use crate::domain::{Rejection, Turn};
use crate::store::{AppendTurns, Appended, StoreError, TURNS_PER_RUN, WriteError};

impl SqliteStore {
    /// Appends within the caller's transaction and answers with the thread's header and
    /// the turns written: the thread's other turns are never read.
    pub(super) async fn append_in(
        &self,
        conn: &mut SqliteConnection,
        append: &AppendTurns,
    ) -> Result<Appended, WriteError> {
        let id = append.thread_id;
        self.trip();
        let row = sqlx::query(SELECT_THREAD).bind(id.to_string()).fetch_optional(&mut *conn).await?;
        let mut thread = decode_thread(&row.ok_or(Rejection::ThreadNotFound(id))?)?;
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
                let turns = self.turns_from(conn, id, first, count).await?;
                return Ok(Appended { thread, turns, replayed: true });
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
        let now = append.now.max(thread.updated_at);
        let encoded_now = encode_time(now);
        let first = thread.turn_count + 1;
        for (offset, turn) in append.turns.iter().enumerate() {
            let key = if offset == 0 { append.idempotency_key.as_deref() } else { None };
            self.trip();
            sqlx::query(INSERT_TURN)
                .bind(id.to_string())
                .bind(first + offset as u32)
                .bind(turn.role.as_str())
                .bind(&turn.content)
                .bind(&turn.tool_name)
                .bind(encode_json(&turn.files)?)
                .bind(&turn.model_provider)
                .bind(&turn.model_name)
                .bind(encode_json(&turn.metadata)?)
                .bind(key)
                .bind(&encoded_now)
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
        .bind(&encoded_now)
        .execute(&mut *conn)
        .await?;
        // The header as the UPDATE left it; only exai writes an SQLite store.
        thread.turn_count += count;
        thread.updated_at = now;
        thread.version += 1;

        let turns = self.turns_from(conn, id, first, count).await?;
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
