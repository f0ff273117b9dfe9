//! Creating and deleting threads in SQLite, on the writer connection.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{encode_json, encode_time};
use crate::domain::{NewThread, Rejection, Thread};
use crate::store::{StoreError, WriteError};

impl SqliteStore {
    pub(super) async fn insert_thread(
        &self,
        conn: &mut SqliteConnection,
        id: Uuid,
        new: NewThread,
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
        .execute(conn)
        .await?;
        match (inserted.rows_affected(), new.parent_id) {
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

    pub(super) async fn remove_thread(
        &self,
        conn: &mut SqliteConnection,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        self.trip();
        let deleted =
            sqlx::query("DELETE FROM conversations WHERE id = ?1").bind(id.to_string()).execute(conn).await?;
        Ok(deleted.rows_affected() > 0)
    }
}
