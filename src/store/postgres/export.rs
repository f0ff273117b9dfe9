//! Every thread record from two queries reading one snapshot on two connections:
//! threads in id order and turns in (thread, seq) order, each an index scan of its own
//! table, streamed side by side and merged here. Postgres neither joins nor sorts,
//! sends a thread's columns once rather than with every turn, and both tables are read
//! while exai writes.

use std::ops::ControlFlow;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{Metadata, Role, Thread, Turn};
use crate::store::{ExportSink, StoreError, ThreadRecord};

/// Threads in the order of `conversations`' primary key.
const THREADS: &str = "SELECT id, thread_id, parent_id, title, tool_name, metadata, created_at, \
     updated_at, turn_count, version FROM conversations ORDER BY id";

/// Turns in the order of `messages_thread_seq`; keys as the client gave them (see 0009).
const TURNS: &str = "SELECT conversation_id, seq, role::text AS role, content, tool_name, files, \
     model_provider, model_name, metadata, created_at, \
     CASE WHEN left(idempotency_key, 37) = conversation_id::text || '/' \
          THEN substr(idempotency_key, 38) ELSE idempotency_key END AS key \
     FROM messages ORDER BY conversation_id, seq";

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

fn turn(row: &PgRow, thread_id: Uuid) -> Result<Turn, StoreError> {
    let seq: i32 = row.try_get("seq")?;
    let role: String = row.try_get("role")?;
    Ok(Turn {
        thread_id,
        seq: u32::try_from(seq).map_err(|_| StoreError::Internal(format!("turn seq {seq}")))?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Internal(format!("unreadable role {role:?}")))?,
        content: row.try_get("content")?,
        tool_name: row.try_get("tool_name")?,
        files: row.try_get::<Json<Vec<String>>, _>("files")?.0,
        model_provider: row.try_get("model_provider")?,
        model_name: row.try_get("model_name")?,
        metadata: row.try_get::<Json<Metadata>, _>("metadata")?.0,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at")?,
    })
}

/// Streams every thread record in the snapshot of the transaction on `conn` to `sink`,
/// reading the turns on a second transaction from `pool` that imports that snapshot.
pub(super) async fn stream_threads(
    conn: &mut PgConnection,
    pool: &PgPool,
    sink: &mut dyn ExportSink,
) -> Result<ControlFlow<()>, StoreError> {
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()").fetch_one(&mut *conn).await?;
    let mut beside = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let share = format!("SET TRANSACTION SNAPSHOT '{}'", snapshot.replace('\'', "''"));
    sqlx::query(&share).execute(&mut *beside).await?;

    let mut threads = sqlx::query(THREADS).fetch(&mut *conn);
    let mut turns = sqlx::query(TURNS).fetch(&mut *beside);
    let mut next_turn = turns.try_next().await?;
    while let Some(row) = threads.try_next().await? {
        let conversation: Uuid = row.try_get("id")?;
        let mut record = ThreadRecord { thread: thread(&row)?, turns: Vec::new(), keys: Default::default() };
        // A turn of an earlier conversation (none, while the foreign key holds) is
        // passed over, as a join would.
        while let Some(row) = &next_turn {
            let owner: Uuid = row.try_get("conversation_id")?;
            if owner > conversation {
                break;
            }
            if owner == conversation {
                let turn = turn(row, record.thread.id)?;
                if let Some(key) = row.try_get::<Option<String>, _>("key")? {
                    record.keys.insert(turn.seq, key);
                }
                record.turns.push(turn);
            }
            next_turn = turns.try_next().await?;
        }
        if sink.thread(record).is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}
