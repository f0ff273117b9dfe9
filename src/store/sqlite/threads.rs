//! Creating and deleting threads in SQLite, on the writer connection.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{encode_json, encode_time};
use crate::domain::{NewThread, Rejection, Thread};
use crate::store::{StoreError, WriteError};

impl SqliteStore {
    pub(super) fn insert_thread(
        &self,
        conn: &Connection,
        id: Uuid,
        new: NewThread,
        now: DateTime<Utc>,
    ) -> Result<Thread, WriteError> {
        self.trip();
        let inserted = conn
            .prepare_cached(
                "INSERT INTO conversations (id, parent_id, title, tool_name, metadata, created_at, \
                 updated_at, turn_count, version) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?6, 0, 1 \
                 WHERE ?2 IS NULL OR EXISTS (SELECT 1 FROM conversations WHERE id = ?2)",
            )?
            .execute(params![
                id.to_string(),
                new.parent_id.map(|p| p.to_string()),
                new.title,
                new.tool_name,
                encode_json(&new.metadata)?,
                encode_time(now),
            ])?;
        match (inserted, new.parent_id) {
            (0, Some(parent)) => Err(Rejection::ParentNotFound(parent).into()),
            (0, None) => Err(StoreError::Internal(format!("thread {id} was not inserted")).into()),
            _ => Ok(Thread {
                id,
                parent_id: new.parent_id,
                title: new.title,
                tool_name: new.tool_name,
                metadata: new.metadata,
                created_at: now,
                updated_at: now,
                turn_count: 0,
                version: 1,
            }),
        }
    }

    pub(super) fn remove_thread(&self, conn: &Connection, id: Uuid) -> Result<bool, StoreError> {
        self.trip();
        let deleted =
            conn.prepare_cached("DELETE FROM conversations WHERE id = ?1")?.execute([id.to_string()])?;
        Ok(deleted > 0)
    }
}
