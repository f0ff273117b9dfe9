//! Row decoding and value encoding for the SQLite schema.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::domain::{Role, Thread, ThreadWithTurns, Turn};
use crate::store::{Cursor, StoreError};

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("unreadable {what} in database: {detail}"))
}

pub fn encode_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn encode_json(value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

pub fn decode_time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let text: String = row.try_get(column)?;
    DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(|e| corrupt(column, e))
}

fn decode_json<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e))
}

pub fn decode_uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::try_parse(&text).map_err(|e| corrupt(column, e))
}

pub fn decode_thread(row: &SqliteRow) -> Result<Thread, StoreError> {
    let parent: Option<String> = row.try_get("parent_id")?;
    Ok(Thread {
        id: decode_uuid(row, "id")?,
        parent_id: parent.map(|p| Uuid::try_parse(&p)).transpose().map_err(|e| corrupt("parent_id", e))?,
        title: row.try_get("title")?,
        tool_name: row.try_get("tool_name")?,
        metadata: decode_json(row, "metadata")?,
        created_at: decode_time(row, "created_at")?,
        updated_at: decode_time(row, "updated_at")?,
        turn_count: row.try_get("turn_count")?,
        version: row.try_get("version")?,
    })
}

/// Where a row stands in a listing ordered by `(time_column, id)`, read from those
/// two columns alone, for a row whose other columns cannot be read.
pub fn position(row: &SqliteRow, time_column: &str) -> Option<Cursor> {
    Some(Cursor::new(decode_time(row, time_column).ok()?, decode_uuid(row, "id").ok()?))
}

/// The turn in a row of a `LEFT JOIN messages m`, or `None` where nothing joined.
pub fn decode_turn(row: &SqliteRow) -> Result<Option<Turn>, StoreError> {
    let Some(seq) = row.try_get::<Option<u32>, _>("m_seq")? else {
        return Ok(None);
    };
    let role: String = row.try_get("m_role")?;
    Ok(Some(Turn {
        thread_id: decode_uuid(row, "m_thread_id")?,
        seq,
        role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        content: row.try_get("m_content")?,
        tool_name: row.try_get("m_tool_name")?,
        files: decode_json(row, "m_files")?,
        model_provider: row.try_get("m_model_provider")?,
        model_name: row.try_get("m_model_name")?,
        metadata: decode_json(row, "m_metadata")?,
        created_at: decode_time(row, "m_created_at")?,
    }))
}

/// A thread and its turns from the rows of a thread `LEFT JOIN messages` query.
pub fn thread_with_turns(rows: &[SqliteRow]) -> Result<Option<ThreadWithTurns>, StoreError> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let thread = decode_thread(first)?;
    let turns = rows.iter().map(decode_turn).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(ThreadWithTurns { thread, turns: turns.into_iter().flatten().collect() }))
}
