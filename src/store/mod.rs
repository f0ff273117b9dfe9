//! Durable storage of threads and turns. One trait, one adapter per backend.

mod delegating;
mod functions;
mod leases;
mod metered;
mod postgres;
mod postgres_migrate;
mod sqlite;
mod supabase;
mod transfer;

pub use delegating::{DelegatingStore, StoreHook};
pub use functions::{Arg, Call, CallError, FunctionStore, Session, Transport};
pub use leases::{Abandoned, RunLease, Sweep};
pub use metered::MeteredStore;
pub use postgres::{PgTransport, PostgresStore};
pub use postgres_migrate::{MigrationReport, check_postgres_migration, migrate_postgres};
pub use sqlite::{LockError, ServingLock, SqliteStore};
pub use supabase::{PostgrestTransport, SupabaseStore};
pub use transfer::{Counts, ExportSink, ImportedThread, ThreadRecord};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

use crate::domain::{
    Chain, ConversationPolicy, HistoryLimits, NewThread, NewTurn, Rejection, RunStatus, Thread,
    ThreadWithTurns, ToolRun, Turn,
};
use crate::telemetry::Throttle;

/// Turns a run adds to its thread when it succeeds: the question and the answer.
pub const TURNS_PER_RUN: u32 = 2;

/// The idempotency key a run's two turns are appended with. A run whose turns carry it
/// has spent its reservation (see [`Store::reserve_run`]).
pub fn run_idempotency_key(run_id: Uuid) -> String {
    format!("run:{run_id}")
}

/// Why a store call failed: the backend, not the request, is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or is overloaded; retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refuses us as configured: a wrong key, a missing schema.
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
    /// Anything else: a bug, corrupt data, a full disk.
    #[error("store failure: {0}")]
    Internal(String),
}

/// Why a write the rules may refuse did not happen: refused, or the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Refused(#[from] Rejection),
    #[error(transparent)]
    Failed(#[from] StoreError),
}

impl WriteError {
    /// The refusal or the failure, as an error of a caller that keeps them apart.
    pub fn into_either<E: From<Rejection> + From<StoreError>>(self) -> E {
        match self {
            WriteError::Refused(refusal) => refusal.into(),
            WriteError::Failed(failure) => failure.into(),
        }
    }
}

impl From<sqlx::Error> for WriteError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::from(error).into()
    }
}

/// Turns to append atomically, with the checks that guard them.
#[derive(Debug, Clone)]
pub struct AppendTurns {
    pub thread_id: Uuid,
    pub turns: Vec<NewTurn>,
    /// When set and already used on this thread, the earlier turns are returned instead.
    pub idempotency_key: Option<String>,
    pub policy: ConversationPolicy,
    pub now: DateTime<Utc>,
}

/// What an append answers, read at a cost independent of the thread's size: the
/// thread's header after it, and the turns the append produced (on a replay, those the
/// first attempt produced).
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub thread: Thread,
    pub turns: Vec<Turn>,
    /// The idempotency key had been used: nothing was written.
    pub replayed: bool,
}

/// Which threads a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Any,
    /// Changed after the instant: still open.
    ChangedAfter(DateTime<Utc>),
    /// Changed at or before the instant: expired.
    ChangedAtOrBefore(DateTime<Utc>),
}

/// Position after the last item of a page, for keyset paging in descending
/// (timestamp, id) order: threads by `updated_at`, runs by `created_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn new(at: DateTime<Utc>, id: Uuid) -> Self {
        Self { at, id }
    }

    pub fn encode(&self) -> String {
        format!("{}_{}", self.at.timestamp_micros(), self.id.simple())
    }

    /// The position `encode` wrote, and nothing else: the document promises that every
    /// string of that one shape is a cursor.
    pub fn decode(value: &str) -> Option<Self> {
        let (micros, id) = value.split_once('_')?;
        let digits = (1..=16).contains(&micros.len()) && micros.bytes().all(|b| b.is_ascii_digit());
        let simple_id = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !(digits && simple_id) {
            return None;
        }
        Some(Self::new(DateTime::from_timestamp_micros(micros.parse().ok()?)?, Uuid::try_parse(id).ok()?))
    }
}

/// A page of a keyset listing, and where the next page starts (`None` on the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// One row of a listing as a store read it: decoded, or only its place in the order
/// when the rest cannot be read, so that paging steps over it.
#[derive(Debug)]
pub enum Listed<T> {
    Read(T),
    Unreadable { at: Option<Cursor>, cause: String },
}

/// Rows that could not be read are logged at most once per interval, with a count.
static UNREADABLE_ROWS: Throttle = Throttle::new(Duration::from_secs(60));

impl<T> Listed<T> {
    /// The decoded row, or where it stands when decoding failed.
    pub fn decode<E: std::fmt::Display>(decoded: Result<T, E>, at: impl FnOnce() -> Option<Cursor>) -> Self {
        decoded.map_or_else(|error| Listed::Unreadable { at: at(), cause: error.to_string() }, Listed::Read)
    }
}

/// A turn of a conversation, or `None` (logged) when it cannot be read: one turn written
/// behind exai's back must not take a whole conversation, and the threads after it in a
/// chain, down with it.
pub fn readable_turn<E: std::fmt::Display>(decoded: Result<Turn, E>) -> Option<Turn> {
    decoded
        .inspect_err(|cause| {
            if let Some(held_back) = UNREADABLE_ROWS.admit() {
                tracing::error!(%cause, held_back, "left an unreadable turn out of a conversation");
            }
        })
        .ok()
}

impl<T> Page<T> {
    /// The page of a `limit + 1` fetch: one unreadable row must not take the page down,
    /// so it is left out (and logged), and the cursor still follows the last row kept,
    /// readable or not. `at` gives an item's keyset position.
    pub fn of(mut rows: Vec<Listed<T>>, limit: u32, at: fn(&T) -> Cursor, what: &str) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let position = |row: &Listed<T>| match row {
            Listed::Read(item) => Some(at(item)),
            Listed::Unreadable { at, .. } => *at,
        };
        let next = if more { rows.iter().rev().find_map(position) } else { None };
        let items = rows
            .into_iter()
            .filter_map(|row| match row {
                Listed::Read(item) => Some(item),
                Listed::Unreadable { at, cause } => {
                    if let Some(held_back) = UNREADABLE_ROWS.admit() {
                        let id = at.map(|at| at.id.to_string()).unwrap_or_default();
                        tracing::error!(what, id, %cause, held_back, "left an unreadable row out of a listing");
                    }
                    None
                }
            })
            .collect();
        Self { items, next }
    }
}

/// Where a thread stands in a listing.
pub fn thread_position(thread: &Thread) -> Cursor {
    Cursor::new(thread.updated_at, thread.id)
}

/// Where a thread stands among its parent's children, newest first.
pub fn child_position(thread: &Thread) -> Cursor {
    Cursor::new(thread.created_at, thread.id)
}

/// Where a run stands in a listing.
pub fn run_position(run: &ToolRun) -> Cursor {
    Cursor::new(run.created_at, run.id)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadQuery {
    /// Page size.
    pub limit: u32,
    pub after: Option<Cursor>,
    /// Case-insensitive substring of the title.
    pub search: Option<String>,
    pub activity: Activity,
    /// Only the thread whose continuation_id is exactly this (an adopted EX-AI
    /// conversation's may differ from its thread id).
    pub continuation_id: Option<String>,
}

/// Which runs a listing returns, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunQuery {
    /// Page size.
    pub limit: u32,
    pub after: Option<Cursor>,
    pub tool: Option<String>,
    pub status: Option<RunStatus>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Short backend name for logs, health and metrics.
    fn backend(&self) -> &'static str;

    async fn create_thread(
        &self,
        id: Uuid,
        thread: &NewThread,
        now: DateTime<Utc>,
    ) -> Result<Thread, WriteError>;

    async fn get_thread(&self, id: Uuid) -> Result<Option<ThreadWithTurns>, StoreError>;

    /// A page of threads by most recent activity first, at most `query.limit` of them.
    async fn list_threads(&self, query: &ThreadQuery) -> Result<Page<Thread>, StoreError>;

    /// The threads whose parent is `parent_id`, newest first, at most `limit` of them
    /// (`next` is set when there are more).
    async fn list_children(&self, parent_id: Uuid, limit: u32) -> Result<Page<Thread>, StoreError>;

    /// Removes a thread and its turns; `false` when there was none.
    async fn delete_thread(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Appends turns with contiguous `seq`s, serialized per thread, after checking
    /// idempotency, then expiry, then the turn limit.
    async fn append_turns(&self, append: &AppendTurns) -> Result<Appended, WriteError>;

    /// Turns with `seq > after_seq`, at most `limit`; `None` when the thread does not exist.
    async fn list_turns(
        &self,
        thread_id: Uuid,
        after_seq: u32,
        limit: u32,
    ) -> Result<Option<Vec<Turn>>, StoreError>;

    /// The chain of threads along `parent_id`, at most `limits.max_depth` links,
    /// cycle-safe, with its newest turns up to `limits.max_bytes` (content, files and
    /// metadata as stored): read in one round trip, older turns never loaded.
    async fn history(&self, thread_id: Uuid, limits: HistoryLimits) -> Result<Option<Chain>, StoreError>;

    /// Records a new run on its thread, atomically with the thread's checks: it exists,
    /// has not expired at `now`, and has room for [`TURNS_PER_RUN`] turns besides those
    /// every other unfinished run on it has reserved (a run whose turns are appended no
    /// longer holds a reservation). So no run calls its upstream for an answer that
    /// cannot be recorded, however many processes share the store.
    /// The run is recorded as `lease`'s owner's, for as long as the lease lasts.
    async fn reserve_run(
        &self,
        run: &ToolRun,
        lease: &RunLease,
        policy: ConversationPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), WriteError>;

    /// Inserts a run, or replaces the stored state of one that has not ended: a final
    /// state is never overwritten. Returns whether `run` was written: `false` when the
    /// store already held the run's end.
    async fn save_run(&self, run: &ToolRun) -> Result<bool, StoreError>;

    async fn get_run(&self, id: Uuid) -> Result<Option<ToolRun>, StoreError>;

    /// A page of runs by creation, newest first, at most `query.limit`.
    async fn list_runs(&self, query: &RunQuery) -> Result<Page<ToolRun>, StoreError>;

    /// Moves the lease of each of `runs` that `lease.owner` owns and that has not ended
    /// to `lease.expires_at`, in one round trip. Returns those of them for the owner to
    /// stop: those whose cancel was asked (see [`Store::request_run_cancel`]), and those
    /// that have ended (another process failed them when their lease lapsed).
    async fn renew_run_leases(&self, lease: &RunLease, runs: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;

    /// Records that the run, if it has not ended, is to be cancelled by its owner, which
    /// finds out when it next renews its lease. Returns whether the run had not ended.
    async fn request_run_cancel(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Marks the abandoned runs of `sweep` as failed with its error. Returns how many.
    async fn fail_abandoned_runs(&self, sweep: &Sweep<'_>) -> Result<u64, StoreError>;

    /// Delivers every thread (with its turns and keys) and then every run to `sink`,
    /// streamed in constant memory and read from one snapshot where the backend has one
    /// (SQLite, Postgres; not Supabase, whose pages are read one after another).
    async fn export(&self, sink: &mut dyn ExportSink) -> Result<(), StoreError>;

    /// Stores `threads` exactly as they are — ids, `seq`s, times, versions and keys —
    /// all in one transaction, with one outcome per thread in order: a thread the store
    /// holds under its id already is left alone and returned as held, and one whose
    /// parent is neither stored nor created earlier in the batch is not written.
    async fn import_threads(&self, threads: &[ThreadRecord]) -> Result<Vec<ImportedThread>, StoreError>;

    /// Checks that the backend answers (and warms a connection).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Requests sent to the backend since start.
    fn round_trips(&self) -> u64;
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(error.to_string())
            }
            sqlx::Error::Database(ref db) if is_busy(db.code().as_deref()) => {
                StoreError::Unavailable(error.to_string())
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}

/// Trims a `limit + 1` fetch to `limit` and returns the last item kept when more follow:
/// where the next page starts.
pub fn next_page<T>(items: &mut Vec<T>, limit: u32) -> Option<&T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    if more { items.last() } else { None }
}

/// Makes `%`, `_` and `\` in a search term match themselves in LIKE and ILIKE.
fn escape_like(term: &str) -> String {
    term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// SQLite's SQLITE_BUSY and SQLITE_LOCKED (with extended codes): another writer holds the lock.
fn is_busy(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor::new(crate::domain::truncate_to_micros(Utc::now()), Uuid::new_v4());
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("nonsense"), None);
        assert_eq!(Cursor::decode("12_zz"), None);
        let id = cursor.id;
        for other_spelling in [
            format!("-12_{}", id.simple()),
            format!("+12_{}", id.simple()),
            format!("12_{}", id.hyphenated()),
            format!("12_{}", id.simple().to_string().to_uppercase()),
            format!("12345678901234567_{}", id.simple()),
        ] {
            assert_eq!(Cursor::decode(&other_spelling), None, "{other_spelling}");
        }
    }
}
