//! Every thread record in one streamed query: rows decoded as they arrive, a thread
//! delivered once its last turn is read.

use std::ops::ControlFlow;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{Metadata, Role, Thread, Turn};
use crate::store::{ExportSink, StoreError, ThreadRecord};

/// Threads with their turns in (conversation, seq) order, which the primary key and
/// `messages_thread_seq` give without sorting; keys as the client gave them (see 0009).
const THREAD_RECORDS: &str = "SELECT c.id AS conversation, c.thread_id, c.parent_id, c.title, c.tool_name, \
     c.metadata, c.created_at, c.updated_at, c.turn_count, c.version, m.seq, m.role::text AS role, \
     m.content, m.tool_name AS turn_tool_name, m.files, m.model_provider, m.model_name, \
     m.metadata AS turn_metadata, m.created_at AS turn_created_at, \
     CASE WHEN left(m.idempotency_key, 37) = c.id::text || '/' THEN substr(m.idempotency_key, 38) \
          ELSE m.idempotency_key END AS key \
     FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id \
     ORDER BY c.id, m.seq";

fn thread(row: &PgRow) -> Result<Thread, sqlx::Error> {
    Ok(Thread {
        id: row.try_get("thread_id")?,
        parent_id: row.try_get("parent_id")?,
        title: row.try_get("title")?,
        tool_name: row.try_get("tool_name")?,
        metadata: row.try_get::<Json<Metadata>, _>("metadata")?.0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        turn_count: u32::try_from(row.try_get::<i32, _>("turn_count")?).unwrap_or_default(),
        version: row.try_get("version")?,
    })
}

/// The row's turn, or `None` for a thread without turns.
fn turn(row: &PgRow, thread_id: Uuid) -> Result<Option<Turn>, StoreError> {
    let Some(seq) = row.try_get::<Option<i32>, _>("seq")? else { return Ok(None) };
    let role: String = row.try_get("role")?;
    Ok(Some(Turn {
        thread_id,
        seq: u32::try_from(seq).map_err(|_| StoreError::Internal(format!("turn seq {seq}")))?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Internal(format!("unreadable role {role:?}")))?,
        content: row.try_get("content")?,
        tool_name: row.try_get("turn_tool_name")?,
        files: row.try_get::<Json<Vec<String>>, _>("files")?.0,
        model_provider: row.try_get("model_provider")?,
        model_name: row.try_get("model_name")?,
        metadata: row.try_get::<Json<Metadata>, _>("turn_metadata")?.0,
        created_at: row.try_get::<DateTime<Utc>, _>("turn_created_at")?,
    }))
}

/// Streams every thread record read on `conn` to `sink`.
pub(super) async fn stream_threads(
    conn: &mut PgConnection,
    sink: &mut dyn ExportSink,
) -> Result<ControlFlow<()>, StoreError> {
    let mut rows = sqlx::query(THREAD_RECORDS).fetch(conn);
    let mut current: Option<(Uuid, ThreadRecord)> = None;
    while let Some(row) = rows.try_next().await? {
        let conversation: Uuid = row.try_get("conversation")?;
        if current.as_ref().is_none_or(|(held, _)| *held != conversation) {
            let record = ThreadRecord { thread: thread(&row)?, turns: Vec::new(), keys: Default::default() };
            if let Some((_, done)) = current.replace((conversation, record))
                && sink.thread(done).is_break()
            {
                return Ok(ControlFlow::Break(()));
            }
        }
        let Some((_, record)) = current.as_mut() else { continue };
        if let Some(turn) = turn(&row, record.thread.id)? {
            if let Some(key) = row.try_get::<Option<String>, _>("key")? {
                record.keys.insert(turn.seq, key);
            }
            record.turns.push(turn);
        }
    }
    Ok(match current {
        Some((_, record)) => sink.thread(record),
        None => ControlFlow::Continue(()),
    })
}
