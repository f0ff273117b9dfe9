//! Row decoding and value encoding for the SQLite schema, for the rows of either
//! binding: readers go through sqlx, the writer through rusqlite (see `group_commit`).

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

/// A result row read by column name, whichever binding gave it.
pub trait Columns {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn integer(&self, column: &str) -> Result<Option<i64>, StoreError>;
}

impl Columns for SqliteRow {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }

    fn integer(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(column)?)
    }

    fn integer(&self, column: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.get(column)?)
    }
}

pub fn required_text(row: &impl Columns, column: &str) -> Result<String, StoreError> {
    row.text(column)?.ok_or_else(|| corrupt(column, "NULL"))
}

/// A number that must fit `N`: a count, a seq, a version.
pub fn number<N: TryFrom<i64>>(row: &impl Columns, column: &str) -> Result<N, StoreError> {
    let value = row.integer(column)?.ok_or_else(|| corrupt(column, "NULL"))?;
    N::try_from(value).map_err(|_| corrupt(column, value))
}

pub fn optional_number<N: TryFrom<i64>>(row: &impl Columns, column: &str) -> Result<Option<N>, StoreError> {
    match row.integer(column)? {
        Some(value) => N::try_from(value).map(Some).map_err(|_| corrupt(column, value)),
        None => Ok(None),
    }
}

pub fn encode_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn encode_json(value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

pub fn decode_time(row: &impl Columns, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let text = required_text(row, column)?;
    DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(|e| corrupt(column, e))
}

fn decode_json<T: DeserializeOwned>(row: &impl Columns, column: &str) -> Result<T, StoreError> {
    let text = required_text(row, column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e))
}

pub fn decode_uuid(row: &impl Columns, column: &str) -> Result<Uuid, StoreError> {
    let text = required_text(row, column)?;
    Uuid::try_parse(&text).map_err(|e| corrupt(column, e))
}

pub fn decode_thread(row: &impl Columns) -> Result<Thread, StoreError> {
    let parent = row.text("parent_id")?;
    Ok(Thread {
        id: decode_uuid(row, "id")?,
        parent_id: parent.map(|p| Uuid::try_parse(&p)).transpose().map_err(|e| corrupt("parent_id", e))?,
        title: row.text("title")?,
        tool_name: row.text("tool_name")?,
        metadata: decode_json(row, "metadata")?,
        created_at: decode_time(row, "created_at")?,
        updated_at: decode_time(row, "updated_at")?,
        turn_count: number(row, "turn_count")?,
        version: number(row, "version")?,
    })
}

/// Where a row stands in a listing ordered by `(time_column, id)`, read from those
/// two columns alone, for a row whose other columns cannot be read.
pub fn position(row: &impl Columns, time_column: &str) -> Option<Cursor> {
    Some(Cursor::new(decode_time(row, time_column).ok()?, decode_uuid(row, "id").ok()?))
}

/// The turn in a row of a `LEFT JOIN messages m`, or `None` where nothing joined.
pub fn decode_turn(row: &impl Columns) -> Result<Option<Turn>, StoreError> {
    let Some(seq) = optional_number(row, "m_seq")? else {
        return Ok(None);
    };
    let role = required_text(row, "m_role")?;
    Ok(Some(Turn {
        thread_id: decode_uuid(row, "m_thread_id")?,
        seq,
        role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
        content: required_text(row, "m_content")?,
        tool_name: row.text("m_tool_name")?,
        files: decode_json(row, "m_files")?,
        model_provider: row.text("m_model_provider")?,
        model_name: row.text("m_model_name")?,
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
