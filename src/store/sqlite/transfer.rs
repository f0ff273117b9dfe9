//! Export from one read snapshot, and whole threads imported in one transaction.

use std::ops::ControlFlow;

use futures_util::TryStreamExt;
use rusqlite::{Connection, params};
use sqlx::Row;
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{Columns, decode_thread, decode_turn, encode_json, encode_time, required_text};
use super::runs::{RUN_COLUMNS, decode_run};
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
fn fold_row(
    current: &mut Option<ThreadRecord>,
    row: &impl Columns,
) -> Result<Option<ThreadRecord>, StoreError> {
    let id = required_text(row, "id")?;
    let same = current.as_ref().is_some_and(|record| Uuid::try_parse(&id).ok() == Some(record.thread.id));
    let finished = if same {
        None
    } else {
        let record =
            ThreadRecord { thread: decode_thread(row)?, turns: Vec::new(), keys: Default::default() };
        current.replace(record)
    };
    let record = current.as_mut().expect("a record was just started or continued");
    if let Some(turn) = decode_turn(row)? {
        if let Some(key) = row.text("m_key")? {
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

    /// Imports a batch on the writer connection: inside one savepoint of a group commit,
    /// so the batch lands whole or not at all.
    pub(super) fn import_batch(
        &self,
        conn: &Connection,
        threads: &[ThreadRecord],
    ) -> Result<Vec<ImportedThread>, StoreError> {
        let mut outcomes = Vec::with_capacity(threads.len());
        let held = format!("{THREAD_RECORDS} WHERE c.id = ?1 ORDER BY m.seq");
        for record in threads {
            outcomes.push(self.import_in(conn, &held, record)?);
        }
        let mut insert = conn.prepare_cached(insert_turn!())?;
        let created =
            threads.iter().zip(&outcomes).filter(|(_, outcome)| **outcome == ImportedThread::Created);
        for (record, _) in created {
            let id = record.thread.id.to_string();
            for turn in &record.turns {
                self.trip();
                insert.execute(turn_row!(
                    id,
                    turn.seq,
                    turn,
                    record.keys.get(&turn.seq),
                    encode_time(turn.created_at)
                ))?;
            }
        }
        Ok(outcomes)
    }

    /// Imports one thread unless the store holds it already, as `held` reads it.
    fn import_in(
        &self,
        conn: &Connection,
        held: &str,
        record: &ThreadRecord,
    ) -> Result<ImportedThread, StoreError> {
        let thread = &record.thread;
        let id = thread.id.to_string();
        self.trip();
        let mut existing = None;
        let mut select = conn.prepare_cached(held)?;
        let mut rows = select.query([&id])?;
        while let Some(row) = rows.next()? {
            fold_row(&mut existing, row)?;
        }
        drop(rows);
        if let Some(existing) = existing {
            return Ok(ImportedThread::Held(Box::new(existing)));
        }
        self.trip();
        let inserted = conn.prepare_cached(INSERT_THREAD)?.execute(params![
            id,
            thread.parent_id.map(|parent| parent.to_string()),
            thread.title,
            thread.tool_name,
            encode_json(&thread.metadata)?,
            encode_time(thread.created_at),
            encode_time(thread.updated_at),
            thread.turn_count,
            thread.version,
        ])?;
        if inserted == 0 {
            return Ok(ImportedThread::ParentMissing);
        }
        Ok(ImportedThread::Created)
    }
}
