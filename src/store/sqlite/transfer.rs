//! Export from one read snapshot, and whole threads imported in one transaction.

use std::ops::ControlFlow;

use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{decode_thread, decode_turn, encode_json, encode_time};
use super::runs::{RUN_COLUMNS, decode_run};
use crate::domain::Turn;
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

/// Turns stored by one statement: 11 variables each, well under SQLite's limit.
const TURNS_PER_INSERT: usize = 500;

/// One multi-row insert of turns, each with its thread's key for it.
fn insert_turns<'a>(
    rows: &'a [(&'a ThreadRecord, &'a Turn)],
) -> Result<QueryBuilder<'a, Sqlite>, StoreError> {
    let mut insert = QueryBuilder::new(
        "INSERT INTO messages (conversation_id, seq, role, content, tool_name, files, model_provider, \
         model_name, metadata, idempotency_key, created_at) ",
    );
    let encoded = rows
        .iter()
        .map(|(record, turn)| Ok((encode_json(&turn.files)?, encode_json(&turn.metadata)?, record, turn)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    insert.push_values(encoded, |mut values, (files, metadata, record, turn)| {
        values
            .push_bind(record.thread.id.to_string())
            .push_bind(turn.seq)
            .push_bind(turn.role.as_str())
            .push_bind(&turn.content)
            .push_bind(&turn.tool_name)
            .push_bind(files)
            .push_bind(&turn.model_provider)
            .push_bind(&turn.model_name)
            .push_bind(metadata)
            .push_bind(record.keys.get(&turn.seq))
            .push_bind(encode_time(turn.created_at));
    });
    Ok(insert)
}

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

    /// Imports a batch on the writer connection: inside one savepoint of a group commit,
    /// so the batch lands whole or not at all.
    pub(super) async fn import_batch(
        &self,
        conn: &mut SqliteConnection,
        threads: &[ThreadRecord],
    ) -> Result<Vec<ImportedThread>, StoreError> {
        let mut outcomes = Vec::with_capacity(threads.len());
        for record in threads {
            outcomes.push(self.import_in(conn, record).await?);
        }
        let created =
            threads.iter().zip(&outcomes).filter(|(_, outcome)| **outcome == ImportedThread::Created);
        let turns: Vec<(&ThreadRecord, &Turn)> =
            created.flat_map(|(record, _)| record.turns.iter().map(move |turn| (record, turn))).collect();
        for rows in turns.chunks(TURNS_PER_INSERT) {
            self.trip();
            insert_turns(rows)?.build().execute(&mut *conn).await?;
        }
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
        Ok(ImportedThread::Created)
    }
}
