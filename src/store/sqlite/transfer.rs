//! Export from one read snapshot, and whole threads imported in one transaction.

use std::ops::ControlFlow;

use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::rows::{decode_thread, decode_turn, encode_json, encode_time};
use super::runs::{RUN_COLUMNS, decode_run};
use super::{SqliteStore, insert_turn};
use crate::store::{Counts, ExportSink, ImportedThread, StoreError, ThreadRecord};

const THREAD_RECORDS: &str = concat!(
    "SELECT ",
    thread_columns!(),
    ", ",
    turn_columns!(),
    ", m.idempotency_key AS m_key",
    " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
);

const COUNTS: &str = "SELECT (SELECT count(*) FROM conversations) AS threads, \
     (SELECT count(*) FROM messages) AS turns, (SELECT count(*) FROM tool_runs) AS runs";

/// Inserts a thread as it was, unless its parent is missing.
const INSERT_THREAD: &str = "INSERT INTO conversations (id, parent_id, title, tool_name, metadata, \
     created_at, updated_at, turn_count, version) \
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
     WHERE ?2 IS NULL OR EXISTS (SELECT 1 FROM conversations WHERE id = ?2)";

/// Adds a row of a `THREAD_RECORDS` query to the record it belongs to, or starts the
/// next record (returning the finished one) when the row is of another thread.
fn fold_row(current: &mut Option<ThreadRecord>, row: &SqliteRow) -> Result<Option<ThreadRecord>, StoreError> {
    let id: &str = row.try_get("id")?;
    let same = current.as_ref().is_some_and(|record| Uuid::try_parse(id).ok() == Some(record.thread.id));
    let finished = if same {
        None
    } else {
        let record =
            ThreadRecord { thread: decode_thread(row)?, turns: Vec::new(), keys: Default::default() };
        current.replace(record)
    };
    let record = current.as_mut().expect("a record was just started or continued");
    if let Some(turn) = decode_turn(row)? {
        if let Some(key) = row.try_get::<Option<String>, _>("m_key")? {
            record.keys.insert(turn.seq, key);
        }
        record.turns.push(turn);
    }
    Ok(finished)
}

impl SqliteStore {
    /// Reads everything in one read transaction on a reader connection: one WAL
    /// snapshot, while writers go on committing.
    pub(super) async fn export_snapshot(&self, sink: &mut dyn ExportSink) -> Result<(), StoreError> {
        let mut tx = self.reader.begin().await?;
        self.trip();
        let counts = sqlx::query(COUNTS).fetch_one(&mut *tx).await?;
        let counts = Counts {
            threads: counts.try_get::<i64, _>("threads")? as u64,
            turns: counts.try_get::<i64, _>("turns")? as u64,
            runs: counts.try_get::<i64, _>("runs")? as u64,
        };
        if sink.counts(counts).is_break() {
            return Ok(());
        }
        self.trip();
        let query = format!("{THREAD_RECORDS} ORDER BY c.id, m.seq");
        let mut rows = sqlx::query(&query).fetch(&mut *tx);
        let mut current = None;
        while let Some(row) = rows.try_next().await? {
            if let Some(record) = fold_row(&mut current, &row)?
                && sink.thread(record).is_break()
            {
                return Ok(());
            }
        }
        drop(rows);
        if let Some(record) = current
            && sink.thread(record).is_break()
        {
            return Ok(());
        }
        self.trip();
        let query = format!("SELECT {RUN_COLUMNS} FROM tool_runs ORDER BY id");
        let mut rows = sqlx::query(&query).fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            if let ControlFlow::Break(()) = sink.run(decode_run(&row)?) {
                break;
            }
        }
        Ok(())
    }

    pub(super) async fn import_batch(
        &self,
        threads: &[ThreadRecord],
    ) -> Result<Vec<ImportedThread>, StoreError> {
        self.trip();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut outcomes = Vec::with_capacity(threads.len());
        for record in threads {
            outcomes.push(self.import_in(&mut tx, record).await?);
        }
        self.trip();
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn import_in(
        &self,
        conn: &mut SqliteConnection,
        record: &ThreadRecord,
    ) -> Result<ImportedThread, StoreError> {
        let thread = &record.thread;
        let id = thread.id.to_string();
        self.trip();
        let query = format!("{THREAD_RECORDS} WHERE c.id = ?1 ORDER BY m.seq");
        let rows = sqlx::query(&query).bind(&id).fetch_all(&mut *conn).await?;
        let mut held = None;
        for row in &rows {
            fold_row(&mut held, row)?;
        }
        if let Some(held) = held {
            return Ok(ImportedThread::Held(Box::new(held)));
        }
        self.trip();
        let inserted = sqlx::query(INSERT_THREAD)
            .bind(&id)
            .bind(thread.parent_id.map(|parent| parent.to_string()))
            .bind(&thread.title)
            .bind(&thread.tool_name)
            .bind(encode_json(&thread.metadata)?)
            .bind(encode_time(thread.created_at))
            .bind(encode_time(thread.updated_at))
            .bind(thread.turn_count)
            .bind(thread.version)
            .execute(&mut *conn)
            .await?;
        if inserted.rows_affected() == 0 {
            return Ok(ImportedThread::ParentMissing);
        }
        for turn in &record.turns {
            self.trip();
            let key = record.keys.get(&turn.seq).map(String::as_str);
            insert_turn(conn, &id, turn.seq, &turn.as_new(), key, &encode_time(turn.created_at)).await?;
        }
        Ok(ImportedThread::Created)
    }
}
