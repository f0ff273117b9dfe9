//! Group commit: every write to the SQLite file goes through one task that owns the
//! only writer connection. It takes the writes queued meanwhile (at most [`MAX_BATCH`]),
//! runs them in one transaction with a savepoint each, so that a write that is refused
//! or fails undoes only its own statements, commits once — one fsync for the batch —
//! and only then answers each caller. A failed commit fails every write of its batch.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::{Connection, SqliteConnection};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, Span};

use crate::store::StoreError;

/// Writes in one transaction at most: bounds how long the first of them waits for the rest.
const MAX_BATCH: usize = 64;
/// Writes waiting for the writer before callers wait for room to queue theirs.
const QUEUE: usize = 1024;
/// How long a caller waits for room in a full queue before the store answers
/// unavailable: a write not queued is certainly not written, so it can be retried.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The sender side of the writer's queue; cheap to clone. The writer ends, closing its
/// connection, once every clone is gone and the queue is drained.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Box<dyn Job>>,
}

impl GroupCommit {
    /// Starts the writer on `conn`, counting each command it sends in `round_trips`.
    pub fn start(conn: SqliteConnection, round_trips: Arc<AtomicU64>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(Writer { conn, round_trips }.run(pending));
        Self { queue }
    }

    /// Runs `write` inside the next batch's transaction; its result once that commits.
    /// The write must await nothing but statements on the connection it is given: the
    /// whole batch waits for it. `E` is the write's error: a store failure, or also a
    /// refusal by the rules.
    pub async fn write<T, E, F>(&self, write: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Pending { write: Some(write), span: Span::current(), outcome: None, reply };
        self.queue.send_timeout(Box::new(job), QUEUE_WAIT).await.map_err(|error| match error {
            SendTimeoutError::Timeout(_) => {
                StoreError::Unavailable(format!("{QUEUE} SQLite writes are waiting; try again later"))
            }
            SendTimeoutError::Closed(_) => stopped(),
        })?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

/// One queued write, its outcome once run, and its caller.
trait Job: Send {
    /// The caller has given up waiting.
    fn abandoned(&self) -> bool;
    /// Runs the write inside the open transaction; whether it succeeded.
    fn run<'a>(&'a mut self, conn: &'a mut SqliteConnection) -> BoxFuture<'a, bool>;
    /// Answers the caller with the write's outcome if the batch `committed`, else with why not.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Pending<T, E, F> {
    write: Option<F>,
    /// The caller's span, so that what the write logs names its request.
    span: Span,
    outcome: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
{
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run<'a>(&'a mut self, conn: &'a mut SqliteConnection) -> BoxFuture<'a, bool> {
        let write = self.write.take();
        let span = self.span.clone();
        async move {
            let Some(write) = write else { return false };
            let outcome = AssertUnwindSafe(async move { write(conn).await })
                .catch_unwind()
                .instrument(span)
                .await
                .unwrap_or_else(|_| Err(StoreError::Internal("a write to SQLite panicked".into()).into()));
            let succeeded = outcome.is_ok();
            self.outcome = Some(outcome);
            succeeded
        }
        .boxed()
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let Self { outcome, reply, .. } = *self;
        let outcome = committed.map_err(E::from).and_then(|()| {
            outcome
                .unwrap_or_else(|| Err(StoreError::Internal("a write to SQLite did not run".into()).into()))
        });
        // A caller that gave up no longer listens; its write stands if it committed.
        let _ = reply.send(outcome);
    }
}

struct Writer {
    conn: SqliteConnection,
    round_trips: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self, mut pending: mpsc::Receiver<Box<dyn Job>>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
            batch.retain(|job| !job.abandoned());
            let committed = self.commit(&mut batch).await;
            for job in batch.drain(..) {
                job.answer(committed.clone());
            }
        }
        if let Err(error) = self.conn.close().await {
            tracing::warn!(%error, "closing the SQLite writer connection failed");
        }
    }

    /// Runs the batch in one transaction and commits it.
    async fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let committed = self.run_and_commit(batch).await;
        if committed.is_err() {
            // SQLite may have rolled back already; either way nothing of the batch stays.
            let _ = self.execute("ROLLBACK").await;
        }
        committed
    }

    /// Each write in a savepoint of its own, left to COMMIT to release: `ROLLBACK TO`
    /// undoes the newest savepoint of the name, the one of the write that failed, and
    /// keeps it, so that it marks where the next write starts. Releasing `batch` fails
    /// if the transaction ended early (an I/O error rolls it back, say) and the writes
    /// after that began another. The statements between two writes go to SQLite as one
    /// command: each command is a round trip to the connection's thread, and the batch
    /// waits for each in turn. A command stops at its first failing statement.
    async fn run_and_commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        self.execute("BEGIN IMMEDIATE; SAVEPOINT batch; SAVEPOINT write").await?;
        let last = batch.len() - 1;
        for (index, job) in batch.iter_mut().enumerate() {
            let succeeded = job.run(&mut self.conn).await;
            self.execute(match (succeeded, index == last) {
                (true, false) => "SAVEPOINT write",
                (false, false) => "ROLLBACK TO write",
                (true, true) => "RELEASE batch; COMMIT",
                (false, true) => "ROLLBACK TO write; RELEASE batch; COMMIT",
            })
            .await?;
        }
        Ok(())
    }

    async fn execute(&mut self, statement: &'static str) -> Result<(), StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        sqlx::query(statement).execute(&mut self.conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Rejection;
    use crate::store::WriteError;
    use futures_util::future::join_all;
    use std::path::{Path, PathBuf};

    async fn connect(path: &Path) -> SqliteConnection {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        SqliteConnection::connect_with(&options).await.expect("open sqlite")
    }

    /// A writer on a fresh database with one table, in a directory removed on drop.
    async fn start() -> (tempfile::TempDir, PathBuf, GroupCommit) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let mut conn = connect(&path).await;
        sqlx::query("CREATE TABLE t (v TEXT NOT NULL)").execute(&mut conn).await.expect("create table");
        (dir, path, GroupCommit::start(conn, Arc::default()))
    }

    async fn insert(conn: &mut SqliteConnection, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO t (v) VALUES (?1)").bind(value).execute(conn).await?;
        Ok(())
    }

    /// Queues an insert of `value`, then does what `then` says.
    fn write<'a>(
        writer: &'a GroupCommit,
        value: &'static str,
        then: &'static str,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        writer
            .write(move |conn| {
                async move {
                    insert(conn, value).await?;
                    match then {
                        "refuse" => Err(Rejection::ThreadExpired(uuid::Uuid::nil()).into()),
                        "panic" => panic!("a failing write"),
                        // Then one command whose second statement fails once the first has run.
                        "fail mid-command" => {
                            sqlx::query("INSERT INTO t (v) VALUES (?1); INSERT INTO t (v) VALUES (NULL)")
                                .bind(value)
                                .execute(conn)
                                .await?;
                            Ok(())
                        }
                        "end the transaction" => {
                            sqlx::query("ROLLBACK").execute(conn).await?;
                            Ok(())
                        }
                        _ => Ok(()),
                    }
                }
                .boxed()
            })
            .boxed()
    }

    async fn values(path: &Path) -> Vec<String> {
        let mut conn = connect(path).await;
        sqlx::query_scalar("SELECT v FROM t ORDER BY rowid").fetch_all(&mut conn).await.expect("select")
    }

    #[tokio::test]
    async fn a_refused_or_panicking_write_undoes_only_itself() {
        let (_dir, path, writer) = start().await;
        // On this single-threaded runtime all four are queued before the writer runs:
        // they share one transaction.
        let outcomes = join_all([
            write(&writer, "a", "keep"),
            write(&writer, "b", "refuse"),
            write(&writer, "c", "panic"),
            write(&writer, "d", "keep"),
        ])
        .await;
        assert!(outcomes[0].is_ok() && outcomes[3].is_ok(), "{outcomes:?}");
        assert_eq!(outcomes[1], Err(Rejection::ThreadExpired(uuid::Uuid::nil()).into()));
        assert!(
            matches!(&outcomes[2], Err(WriteError::Failed(StoreError::Internal(m))) if m.contains("panicked"))
        );
        assert_eq!(values(&path).await, ["a", "d"]);
    }

    #[tokio::test]
    async fn a_write_failing_inside_a_command_undoes_only_itself_first_or_last() {
        let (_dir, path, writer) = start().await;
        let outcomes = join_all([
            write(&writer, "a", "fail mid-command"),
            write(&writer, "b", "keep"),
            write(&writer, "c", "fail mid-command"),
            write(&writer, "d", "keep"),
            write(&writer, "e", "fail mid-command"),
        ])
        .await;
        let failed: Vec<bool> = outcomes.iter().map(Result::is_err).collect();
        assert_eq!(failed, [true, false, true, false, true], "{outcomes:?}");
        assert_eq!(values(&path).await, ["b", "d"]);
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_fails_every_write_in_it() {
        let (_dir, path, writer) = start().await;
        let outcomes = join_all([
            write(&writer, "a", "keep"),
            write(&writer, "b", "end the transaction"),
            write(&writer, "c", "keep"),
        ])
        .await;
        assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
        assert!(values(&path).await.is_empty());
        write(&writer, "after", "keep").await.expect("the writer goes on");
        assert_eq!(values(&path).await, ["after"]);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_hold_up_the_others() {
        let (_dir, path, writer) = start().await;
        let mut abandoned = write(&writer, "abandoned", "keep");
        assert!(futures_util::poll!(&mut abandoned).is_pending(), "queued");
        drop(abandoned);
        write(&writer, "kept", "keep").await.expect("write");
        assert_eq!(values(&path).await, ["kept"]);
    }

    #[tokio::test]
    async fn the_writer_closes_its_connection_when_the_store_is_gone() {
        let (dir, _, writer) = start().await;
        write(&writer, "a", "keep").await.expect("write");
        let wal = dir.path().join("db-wal");
        assert!(wal.exists(), "an open connection keeps the log");
        drop(writer);
        // The last connection to close checkpoints the log and removes it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while wal.exists() {
            assert!(std::time::Instant::now() < deadline, "the writer never closed its connection");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
