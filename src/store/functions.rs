//! A store made of the SQL functions in `migrations/postgres`. Each operation is one
//! function call, one round trip; a [`Transport`] carries it — the Postgres wire
//! protocol or PostgREST — so the Postgres and Supabase stores share every line here.

mod answers;
mod transfer;

use self::answers::{Rejections, decode, decode_unrefused, unrefused};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

mod rows;

use self::rows::{ChainRows, Keys, page_of};
use super::{
    Activity, AppendTurns, Appended, Cursor, ExportSink, ImportedThread, Page, RunLease, RunQuery, Store,
    StoreError, Sweep, TURNS_PER_RUN, ThreadQuery, ThreadRecord, WriteError, child_position, escape_like,
    run_position, thread_position,
};
use crate::domain::{
    Chain, ConversationPolicy, HistoryLimits, NewThread, Rejection, Thread, ThreadWithTurns, ToolRun, Turn,
};

/// One argument of a function call, typed so the wire protocol can bind it.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Uuid(Option<Uuid>),
    Text(Option<String>),
    Int(i32),
    BigInt(i64),
    Bool(bool),
    Json(serde_json::Value),
    Time(Option<DateTime<Utc>>),
}

/// A call of one of the store's SQL functions with named arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub function: &'static str,
    pub args: Vec<(&'static str, Arg)>,
}

/// Why a call failed, before it is given its meaning as a [`WriteError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The function raised an `EX…` SQLSTATE: a rejection the caller must see.
    Rejected { sqlstate: String },
    /// The backend cannot be reached or is overloaded.
    Unavailable(String),
    /// The backend refuses us as configured: a bad key, a missing schema.
    Misconfigured(String),
    /// Anything else.
    Failed(String),
}

/// Carries a call to the database and brings back the function's result as JSON text
/// (`null` for SQL NULL).
#[async_trait]
pub trait Transport: Send + Sync {
    fn backend(&self) -> &'static str;

    async fn call(&self, call: &Call) -> Result<String, CallError>;

    /// A session whose calls all read one snapshot, where the transport can hold one
    /// open (a read-only repeatable-read transaction); otherwise each call reads the
    /// database as it is then.
    async fn snapshot(&self) -> Result<Box<dyn Session + '_>, CallError>;
}

/// Calls made one after another, see [`Transport::snapshot`].
#[async_trait]
pub trait Session: Send {
    async fn call(&mut self, call: &Call) -> Result<String, CallError>;

    /// Delivers every thread record to `sink`: page after page of `exai_export_threads`,
    /// unless the transport can stream them straight from its tables.
    async fn export_threads(&mut self, sink: &mut dyn ExportSink) -> Result<ControlFlow<()>, StoreError> {
        transfer::threads_page_by_page(self, sink).await
    }
}

pub struct FunctionStore<T> {
    transport: T,
    round_trips: AtomicU64,
}

/// What `exai_append_turns` returns: the thread's header and the turns from `first_seq`
/// on (all of them, from a function older than migration 0010).
#[derive(Deserialize)]
struct AppendResult {
    thread: Thread,
    turns: Vec<Turn>,
    first_seq: u32,
    replayed: bool,
}

impl<T: Transport> FunctionStore<T> {
    pub fn new(transport: T) -> Self {
        Self { transport, round_trips: AtomicU64::new(0) }
    }

    /// Makes a call the rules may refuse and decodes its JSON result.
    async fn refusable<R: DeserializeOwned>(
        &self,
        call: Call,
        rejections: Rejections,
    ) -> Result<R, WriteError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        decode(call.function, self.transport.call(&call).await, rejections)
    }

    /// Makes a call no rule refuses and decodes its JSON result.
    async fn call<R: DeserializeOwned>(&self, call: Call, rejections: Rejections) -> Result<R, StoreError> {
        let function = call.function;
        self.refusable(call, rejections).await.map_err(|error| unrefused(function, error))
    }

    /// Makes the call in `session` and decodes its JSON result.
    async fn call_in<R: DeserializeOwned>(
        &self,
        session: &mut dyn Session,
        call: Call,
    ) -> Result<R, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        decode_unrefused(call.function, session.call(&call).await)
    }
}

fn time(t: DateTime<Utc>) -> Arg {
    Arg::Time(Some(t))
}

fn int(value: u32) -> Arg {
    Arg::Int(i32::try_from(value).unwrap_or(i32::MAX))
}

#[async_trait]
impl<T: Transport> Store for FunctionStore<T> {
    fn backend(&self) -> &'static str {
        self.transport.backend()
    }

    async fn create_thread(
        &self,
        id: Uuid,
        new: &NewThread,
        now: DateTime<Utc>,
    ) -> Result<Thread, WriteError> {
        let call = Call {
            function: "exai_create_thread",
            args: vec![
                ("p_id", Arg::Uuid(Some(id))),
                ("p_parent_id", Arg::Uuid(new.parent_id)),
                ("p_title", Arg::Text(new.title.clone())),
                ("p_tool_name", Arg::Text(new.tool_name.clone())),
                ("p_metadata", Arg::Json(json!(new.metadata))),
                ("p_now", time(now)),
            ],
        };
        let parent_not_found = new.parent_id.map(Rejection::ParentNotFound);
        self.refusable(call, Rejections { parent_not_found, ..Rejections::default() }).await
    }

    async fn get_thread(&self, id: Uuid) -> Result<Option<ThreadWithTurns>, StoreError> {
        let call = Call { function: "exai_get_thread", args: vec![("p_id", Arg::Uuid(Some(id)))] };
        self.call(call, Rejections::default()).await
    }

    async fn list_threads(&self, query: &ThreadQuery) -> Result<Page<Thread>, StoreError> {
        let (changed_after, changed_at_or_before) = match query.activity {
            Activity::Any => (None, None),
            Activity::ChangedAfter(t) => (Some(t), None),
            Activity::ChangedAtOrBefore(t) => (None, Some(t)),
        };
        let call = Call {
            function: "exai_list_threads",
            args: vec![
                ("p_limit", int(query.limit + 1)),
                ("p_after_updated_at", Arg::Time(query.after.map(|c| c.at))),
                ("p_after_id", Arg::Uuid(query.after.map(|c| c.id))),
                ("p_search", Arg::Text(query.search.as_deref().map(escape_like))),
                ("p_changed_after", Arg::Time(changed_after)),
                ("p_changed_at_or_before", Arg::Time(changed_at_or_before)),
                ("p_continuation_id", Arg::Text(query.continuation_id.clone())),
            ],
        };
        let rows = self.call(call, Rejections::default()).await?;
        let at_keys = |keys: Keys| Cursor::new(keys.updated_at.unwrap_or(keys.created_at), keys.id);
        Ok(page_of(rows, query.limit, thread_position, at_keys, "thread"))
    }

    async fn list_children(&self, parent_id: Uuid, limit: u32) -> Result<Page<Thread>, StoreError> {
        let call = Call {
            function: "exai_list_children",
            args: vec![("p_parent_id", Arg::Uuid(Some(parent_id))), ("p_limit", int(limit + 1))],
        };
        let rows = self.call(call, Rejections::default()).await?;
        let at_keys = |keys: Keys| Cursor::new(keys.created_at, keys.id);
        Ok(page_of(rows, limit, child_position, at_keys, "thread"))
    }

    async fn delete_thread(&self, id: Uuid) -> Result<bool, StoreError> {
        let call = Call { function: "exai_delete_thread", args: vec![("p_id", Arg::Uuid(Some(id)))] };
        self.call(call, Rejections::default()).await
    }

    async fn append_turns(&self, append: &AppendTurns) -> Result<Appended, WriteError> {
        let id = append.thread_id;
        let call = Call {
            function: "exai_append_turns",
            args: vec![
                ("p_id", Arg::Uuid(Some(id))),
                ("p_turns", Arg::Json(json!(append.turns))),
                ("p_idempotency_key", Arg::Text(append.idempotency_key.clone())),
                ("p_max_turns", int(append.policy.max_turns)),
                ("p_timeout_ms", Arg::BigInt(append.policy.timeout.num_milliseconds())),
                ("p_now", time(append.now)),
                ("p_turns_per_run", int(TURNS_PER_RUN)),
            ],
        };
        let rejections = Rejections {
            not_found: Some(Rejection::ThreadNotFound(id)),
            expired: Some(Rejection::ThreadExpired(id)),
            turn_limit: Some(Rejection::TurnLimitReached {
                thread_id: id,
                max_turns: append.policy.max_turns,
            }),
            run_ended: Some(Rejection::RunEnded),
            ..Rejections::default()
        };
        let result: AppendResult = self.refusable(call, rejections).await?;
        let produced = result.turns.into_iter().filter(|turn| turn.seq >= result.first_seq);
        let turns = produced.take(append.turns.len()).collect();
        Ok(Appended { thread: result.thread, turns, replayed: result.replayed })
    }

    async fn list_turns(
        &self,
        id: Uuid,
        after_seq: u32,
        limit: u32,
    ) -> Result<Option<Vec<Turn>>, StoreError> {
        let call = Call {
            function: "exai_list_turns",
            args: vec![
                ("p_id", Arg::Uuid(Some(id))),
                ("p_after_seq", int(after_seq)),
                ("p_limit", int(limit)),
            ],
        };
        self.call(call, Rejections::default()).await
    }

    async fn history(&self, id: Uuid, limits: HistoryLimits) -> Result<Option<Chain>, StoreError> {
        let call = Call {
            function: "exai_history",
            args: vec![
                ("p_id", Arg::Uuid(Some(id))),
                ("p_max_depth", int(limits.max_depth)),
                ("p_max_bytes", Arg::BigInt(limits.max_bytes.into())),
            ],
        };
        let chain: Option<ChainRows> = self.call(call, Rejections::default()).await?;
        Ok(chain.map(ChainRows::readable))
    }

    async fn reserve_run(
        &self,
        run: &ToolRun,
        lease: &RunLease,
        policy: ConversationPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), WriteError> {
        let id = run.continuation_id;
        // The row is the run's document with its owner's columns.
        let mut row = json!(run);
        row["owner"] = json!(lease.owner);
        row["lease_expires_at"] = json!(lease.expires_at);
        let call = Call {
            function: "exai_reserve_run",
            args: vec![
                ("p_run", Arg::Json(row)),
                ("p_turns_per_run", int(TURNS_PER_RUN)),
                ("p_max_turns", int(policy.max_turns)),
                ("p_timeout_ms", Arg::BigInt(policy.timeout.num_milliseconds())),
                ("p_now", time(now)),
            ],
        };
        let rejections = Rejections {
            not_found: Some(Rejection::ThreadNotFound(id)),
            expired: Some(Rejection::ThreadExpired(id)),
            turn_limit: Some(Rejection::TurnLimitReached { thread_id: id, max_turns: policy.max_turns }),
            ..Rejections::default()
        };
        self.refusable::<bool>(call, rejections).await.map(drop)
    }

    async fn save_run(&self, run: &ToolRun) -> Result<bool, StoreError> {
        let call = Call { function: "exai_save_run", args: vec![("p_run", Arg::Json(json!(run)))] };
        self.call::<Option<bool>>(call, Rejections::default()).await.map(|saved| saved.is_some())
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<ToolRun>, StoreError> {
        let call = Call { function: "exai_get_run", args: vec![("p_id", Arg::Uuid(Some(id)))] };
        self.call(call, Rejections::default()).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<ToolRun>, StoreError> {
        let call = Call {
            function: "exai_list_runs",
            args: vec![
                ("p_limit", int(query.limit + 1)),
                ("p_after_created_at", Arg::Time(query.after.map(|c| c.at))),
                ("p_after_id", Arg::Uuid(query.after.map(|c| c.id))),
                ("p_tool", Arg::Text(query.tool.clone())),
                ("p_status", Arg::Text(query.status.map(|s| s.as_str().to_owned()))),
            ],
        };
        let rows = self.call(call, Rejections::default()).await?;
        let at_keys = |keys: Keys| Cursor::new(keys.created_at, keys.id);
        Ok(page_of(rows, query.limit, run_position, at_keys, "run"))
    }

    async fn renew_run_leases(&self, lease: &RunLease, runs: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let call = Call {
            function: "exai_renew_run_leases",
            args: vec![
                ("p_owner", Arg::Text(Some(lease.owner.clone()))),
                ("p_runs", Arg::Json(json!(runs))),
                ("p_expires_at", time(lease.expires_at)),
            ],
        };
        self.call(call, Rejections::default()).await
    }

    async fn request_run_cancel(&self, id: Uuid) -> Result<bool, StoreError> {
        let call = Call { function: "exai_request_run_cancel", args: vec![("p_id", Arg::Uuid(Some(id)))] };
        self.call(call, Rejections::default()).await
    }

    async fn fail_abandoned_runs(&self, sweep: &Sweep<'_>) -> Result<u64, StoreError> {
        let (every_one, legacy_grace) = sweep.scope();
        let call = Call {
            function: "exai_fail_abandoned_runs",
            args: vec![
                ("p_owner", Arg::Text(Some(sweep.owner.to_owned()))),
                ("p_every_one", Arg::Bool(every_one)),
                (
                    "p_legacy_grace_ms",
                    Arg::BigInt(i64::try_from(legacy_grace.as_millis()).unwrap_or(i64::MAX)),
                ),
                ("p_error", Arg::Text(Some(sweep.error.to_owned()))),
                ("p_now", time(sweep.now)),
            ],
        };
        self.call(call, Rejections::default()).await
    }

    async fn export(&self, sink: &mut dyn ExportSink) -> Result<(), StoreError> {
        self.export_pages(sink).await
    }

    async fn import_threads(&self, threads: &[ThreadRecord]) -> Result<Vec<ImportedThread>, StoreError> {
        self.import_records(threads).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let call = Call { function: "exai_ping", args: vec![] };
        let answered: bool = self.call(call, Rejections::default()).await?;
        answered.then_some(()).ok_or_else(|| StoreError::Internal("exai_ping returned false".into()))
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
