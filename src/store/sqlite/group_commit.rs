//! Group commit: every write to the SQLite file runs on one thread that owns the only
//! writer connection. It takes the writes queued meanwhile (at most [`MAX_BATCH`]),
//! runs them in one transaction with a savepoint each, so that a write that is refused
//! or fails undoes only its own statements, commits once — one fsync for the batch —
//! and only then answers each caller. A failed commit fails every write of its batch.
//!
//! The writer calls SQLite synchronously, through rusqlite, where the readers go
//! through sqlx: sqlx runs each SQLite connection on a thread of its own and every
//! statement is a hand-off to that thread and back, tens of microseconds under load
//! that the single writer would pay in turn for each statement of each write. Here a
//! whole batch runs on one thread with no hand-off but the queue's.

use rusqlite::Connection;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

use crate::store::StoreError;

/// Writes in one transaction at most: bounds how long the first of them waits for the rest.
const MAX_BATCH: usize = 64;
/// Writes waiting for the writer before callers wait for room to queue theirs.
const QUEUE: usize = 1024;
/// How long a caller waits for room in a full queue before the store answers
/// unavailable: a write not queued is certainly not written, so it can be retried.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The sender side of the writer's queue; cheap to clone. The writer's thread ends,
/// closing its connection, once every clone is gone and the queue is drained.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Box<dyn Job>>,
    commits: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the writer's thread on `conn`, counting in `statements` each statement of
    /// its own (the transactions and savepoints around the writes) before it runs it.
    pub fn start(conn: Connection, statements: Arc<AtomicU64>) -> Result<Self, StoreError> {
        let (queue, pending) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer { conn, statements, commits: commits.clone() };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(pending))
            .map_err(|e| StoreError::Internal(format!("starting the SQLite writer: {e}")))?;
        Ok(Self { queue, commits })
    }

    /// Transactions committed so far, however many writes each held.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Whether the writer's thread still takes writes.
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Runs `write` inside the next batch's transaction; its result once that commits.
    /// `E` is the write's error: a store failure, or also a refusal by the rules. The
    /// write runs on the one writer thread while it holds SQLite's write lock: it must
    /// not wait for anything but SQLite, and must leave the transaction open.
    pub async fn write<T, E, F>(&self, write: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + std::fmt::Display + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
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

pub fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

/// One queued write, its outcome once run, and its caller.
trait Job: Send {
    /// The caller has given up waiting.
    fn abandoned(&self) -> bool;
    /// Runs the write inside the open transaction; why it failed, if it did.
    fn run(&mut self, conn: &Connection) -> Option<String>;
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
    E: From<StoreError> + std::fmt::Display + Send + 'static,
    F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
{
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(&mut self, conn: &Connection) -> Option<String> {
        let Some(write) = self.write.take() else { return Some("the write ran twice".into()) };
        let outcome = self
            .span
            .in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| write(conn))))
            .unwrap_or_else(|_| Err(StoreError::Internal("a write to SQLite panicked".into()).into()));
        let failure = outcome.as_ref().err().map(ToString::to_string);
        self.outcome = Some(outcome);
        failure
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
    conn: Connection,
    statements: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, mut pending: mpsc::Receiver<Box<dyn Job>>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = pending.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH
                && let Ok(job) = pending.try_recv()
            {
                batch.push(job);
            }
            batch.retain(|job| !job.abandoned());
            let committed = self.commit(&mut batch);
            for job in batch.drain(..) {
                job.answer(committed.clone());
            }
        }
        if let Err((_, error)) = self.conn.close() {
            tracing::warn!(%error, "closing the SQLite writer connection failed");
        }
    }

    /// Runs the batch in one transaction and commits it.
    fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let committed = self.run_and_commit(batch);
        match &committed {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::error!(%error, writes = batch.len(), "a batch of SQLite writes failed");
                if let Err(error) = self.roll_back_if_open() {
                    tracing::error!(%error, "rolling back the failed batch failed; the next batch tries again");
                }
            }
        }
        committed
    }

    /// Each write in a savepoint of its own. A write whose failure made SQLite roll back
    /// the whole transaction (a full disk, an I/O error) fails the batch rather than
    /// letting the writes after it run outside it.
    fn run_and_commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        self.roll_back_if_open()?;
        self.execute("BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            self.execute("SAVEPOINT write")?;
            let failure = job.run(&self.conn);
            if self.conn.is_autocommit() {
                return Err(match failure {
                    Some(reason) => StoreError::Unavailable(format!(
                        "SQLite rolled back a batch of writes after one failed ({reason}); try again"
                    )),
                    None => StoreError::Internal("a write ended the transaction of its batch".into()),
                });
            }
            if failure.is_some() {
                self.execute("ROLLBACK TO write")?;
            }
            self.execute("RELEASE write")?;
        }
        self.execute("COMMIT")
    }

    /// Ends a transaction left open by a batch whose rollback failed.
    fn roll_back_if_open(&mut self) -> Result<(), StoreError> {
        if self.conn.is_autocommit() { Ok(()) } else { self.execute("ROLLBACK") }
    }

    /// Runs a statement of the writer's own, prepared once.
    fn execute(&mut self, statement: &str) -> Result<(), StoreError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.conn.prepare_cached(statement)?.execute([])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Rejection;
    use crate::store::WriteError;
    use futures_util::FutureExt;
    use futures_util::future::{BoxFuture, join_all};
    use std::path::{Path, PathBuf};

    fn connect(path: &Path) -> Connection {
        let conn = Connection::open(path).expect("open sqlite");
        conn.pragma_update(None, "journal_mode", "wal").expect("wal");
        conn.pragma_update(None, "foreign_keys", "on").expect("foreign keys");
        conn
    }

    /// A writer on a fresh database, in a directory removed on drop. A row of `t` may
    /// name a parent that does not exist until its transaction commits.
    fn start() -> (tempfile::TempDir, PathBuf, GroupCommit) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let conn = connect(&path);
        conn.execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE t (v TEXT NOT NULL, \
             parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .expect("create tables");
        (dir, path, GroupCommit::start(conn, Arc::default()).expect("start"))
    }

    fn insert(conn: &Connection, value: &str) -> Result<(), StoreError> {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [value])?;
        Ok(())
    }

    /// Queues an insert of `value`, then does what `then` says.
    fn write(
        writer: &GroupCommit,
        value: &'static str,
        then: &'static str,
    ) -> BoxFuture<'static, Result<(), WriteError>> {
        let writer = writer.clone();
        async move {
            writer
                .write(move |conn| {
                    insert(conn, value)?;
                    match then {
                        "refuse" => Err(Rejection::ThreadExpired(uuid::Uuid::nil()).into()),
                        "panic" => panic!("a failing write"),
                        // A second insert, then a statement that fails.
                        "fail after writing" => {
                            insert(conn, value)?;
                            conn.execute("INSERT INTO t (v) VALUES (NULL)", [])?;
                            Ok(())
                        }
                        "end the transaction" => {
                            conn.execute_batch("ROLLBACK")?;
                            Ok(())
                        }
                        // Accepted now; fails the commit, where the parent is checked.
                        "name no parent" => {
                            conn.execute("INSERT INTO t (v, parent) VALUES (?1, 42)", [value])?;
                            Ok(())
                        }
                        _ => Ok(()),
                    }
                })
                .await
        }
        .boxed()
    }

    type Holding = (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<(), StoreError>>);

    /// Holds the writer's thread inside a write of its own until the sender is dropped,
    /// so that the writes queued meanwhile wait, then share the next batch.
    async fn hold(writer: &GroupCommit) -> Holding {
        let (entering, entered) = std::sync::mpsc::channel::<()>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = writer.clone();
        let holding = tokio::spawn(async move {
            holder
                .write(move |_| {
                    let _ = entering.send(());
                    // Dropping the sender ends the wait as well as sending does.
                    let _ = held.recv();
                    Ok::<_, StoreError>(())
                })
                .await
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match entered.try_recv() {
                Ok(()) => return (release, holding),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    assert!(std::time::Instant::now() < deadline, "the writer never ran the holding write");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    panic!("the holding write was dropped unrun")
                }
            }
        }
    }

    async fn release((release, holding): Holding) {
        drop(release);
        holding.await.expect("holding task").expect("holding write");
    }

    /// Runs `writes` in one batch; their outcomes, and the commits made from the hold on.
    async fn batched(
        writer: &GroupCommit,
        writes: Vec<BoxFuture<'static, Result<(), WriteError>>>,
    ) -> (Vec<Result<(), WriteError>>, u64) {
        let before = writer.commits();
        let holding = hold(writer).await;
        let mut writes = join_all(writes);
        assert!(futures_util::poll!(&mut writes).is_pending(), "not answered while the writer is held");
        release(holding).await;
        let outcomes = writes.await;
        (outcomes, writer.commits() - before)
    }

    fn values(path: &Path) -> Vec<String> {
        let conn = connect(path);
        let mut select = conn.prepare("SELECT v FROM t ORDER BY rowid").expect("prepare");
        select.query_map([], |row| row.get(0)).expect("select").collect::<Result<_, _>>().expect("rows")
    }

    #[tokio::test]
    async fn a_refused_or_panicking_write_undoes_only_itself() {
        let (_dir, path, writer) = start();
        let (outcomes, commits) = batched(
            &writer,
            vec![
                write(&writer, "a", "keep"),
                write(&writer, "b", "refuse"),
                write(&writer, "c", "panic"),
                write(&writer, "d", "keep"),
            ],
        )
        .await;
        assert_eq!(commits, 2, "the holding write's, then one for the four");
        assert!(outcomes[0].is_ok() && outcomes[3].is_ok(), "{outcomes:?}");
        assert_eq!(outcomes[1], Err(Rejection::ThreadExpired(uuid::Uuid::nil()).into()));
        assert!(
            matches!(&outcomes[2], Err(WriteError::Failed(StoreError::Internal(m))) if m.contains("panicked"))
        );
        assert_eq!(values(&path), ["a", "d"]);
    }

    #[tokio::test]
    async fn a_write_failing_after_it_wrote_undoes_only_itself_first_or_last() {
        let (_dir, path, writer) = start();
        let (outcomes, commits) = batched(
            &writer,
            vec![
                write(&writer, "a", "fail after writing"),
                write(&writer, "b", "keep"),
                write(&writer, "c", "fail after writing"),
                write(&writer, "d", "keep"),
                write(&writer, "e", "fail after writing"),
            ],
        )
        .await;
        assert_eq!(commits, 2, "the holding write's, then one for the five");
        let failed: Vec<bool> = outcomes.iter().map(Result::is_err).collect();
        assert_eq!(failed, [true, false, true, false, true], "{outcomes:?}");
        assert_eq!(values(&path), ["b", "d"]);
    }

    /// Runs a batch whose middle write does what `culprit` says, checks that nothing of
    /// it stays and that the writer goes on, and returns the batch's outcomes.
    async fn a_failed_batch(culprit: &'static str) -> Vec<Result<(), WriteError>> {
        let (_dir, path, writer) = start();
        let (outcomes, commits) = batched(
            &writer,
            vec![write(&writer, "a", "keep"), write(&writer, "b", culprit), write(&writer, "c", "keep")],
        )
        .await;
        assert_eq!(commits, 1, "the holding write's only");
        assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
        assert!(values(&path).is_empty());
        write(&writer, "after", "keep").await.expect("the writer goes on");
        assert_eq!(values(&path), ["after"]);
        outcomes
    }

    #[tokio::test]
    async fn a_batch_whose_transaction_ends_early_fails_every_write_in_it() {
        a_failed_batch("end the transaction").await;
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_fails_every_write_in_it() {
        let outcomes = a_failed_batch("name no parent").await;
        assert!(
            outcomes.iter().all(|o| matches!(o, Err(e) if e.to_string().contains("FOREIGN KEY"))),
            "{outcomes:?}"
        );
    }

    #[tokio::test]
    async fn a_write_whose_caller_gave_up_is_not_run() {
        let (_dir, path, writer) = start();
        let holding = hold(&writer).await;
        let mut abandoned = write(&writer, "abandoned", "keep");
        assert!(futures_util::poll!(&mut abandoned).is_pending(), "not answered while the writer is held");
        drop(abandoned);
        release(holding).await;
        write(&writer, "kept", "keep").await.expect("write");
        assert_eq!(values(&path), ["kept"]);
    }

    #[tokio::test]
    async fn the_writer_closes_its_connection_when_the_store_is_gone() {
        let (dir, _, writer) = start();
        write(&writer, "a", "keep").await.expect("write");
        let wal = dir.path().join("db-wal");
        assert!(wal.exists(), "an open connection keeps the log");
        drop(writer);
        // The last connection to close checkpoints the log and removes it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while wal.exists() {
            assert!(std::time::Instant::now() < deadline, "the writer never closed its connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
