//! A store that forwards every call to an inner store through a hook, so that a
//! wrapper (timing, test delays) writes only what it adds around the calls.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

use super::{
    AppendTurns, Appended, ExportSink, ImportedThread, Page, RunLease, RunQuery, Store, StoreError, Sweep,
    ThreadQuery, ThreadRecord, WriteError,
};
use crate::domain::{
    Chain, ConversationPolicy, HistoryLimits, NewThread, Thread, ThreadWithTurns, ToolRun, Turn,
};

/// What a wrapper does around each call it forwards.
pub trait StoreHook: Send + Sync {
    /// Runs `call`, the inner store's operation named `op` (the `Store` method name),
    /// and returns its output.
    fn around<T: Send>(
        &self,
        op: &'static str,
        call: impl Future<Output = T> + Send,
    ) -> impl Future<Output = T> + Send;
}

/// Forwards every `Store` call to `inner` through `hook`; `backend` and `round_trips`,
/// which do no I/O, go straight to `inner`.
pub struct DelegatingStore<H> {
    pub inner: Arc<dyn Store>,
    pub hook: H,
}

/// Implements `Store` for `DelegatingStore`: each listed operation goes to the inner
/// store's method of the same name, through the hook.
macro_rules! forward_through_hook {
    ($($op:ident($($arg:ident: $ty:ty),*) -> $output:ty;)*) => {
        #[async_trait]
        impl<H: StoreHook> Store for DelegatingStore<H> {
            fn backend(&self) -> &'static str {
                self.inner.backend()
            }

            fn round_trips(&self) -> u64 {
                self.inner.round_trips()
            }

            $(async fn $op(&self, $($arg: $ty),*) -> $output {
                self.hook.around(stringify!($op), self.inner.$op($($arg),*)).await
            })*
        }
    };
}

forward_through_hook! {
    create_thread(id: Uuid, new: &NewThread, now: DateTime<Utc>) -> Result<Thread, WriteError>;
    get_thread(id: Uuid) -> Result<Option<ThreadWithTurns>, StoreError>;
    list_threads(query: &ThreadQuery) -> Result<Page<Thread>, StoreError>;
    list_children(parent_id: Uuid, limit: u32) -> Result<Page<Thread>, StoreError>;
    delete_thread(id: Uuid) -> Result<bool, StoreError>;
    append_turns(append: &AppendTurns) -> Result<Appended, WriteError>;
    list_turns(id: Uuid, after_seq: u32, limit: u32) -> Result<Option<Vec<Turn>>, StoreError>;
    history(id: Uuid, limits: HistoryLimits) -> Result<Option<Chain>, StoreError>;
    reserve_run(run: &ToolRun, lease: &RunLease, policy: ConversationPolicy, now: DateTime<Utc>) -> Result<(), WriteError>;
    save_run(run: &ToolRun) -> Result<bool, StoreError>;
    get_run(id: Uuid) -> Result<Option<ToolRun>, StoreError>;
    list_runs(query: &RunQuery) -> Result<Page<ToolRun>, StoreError>;
    renew_run_leases(lease: &RunLease, runs: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;
    request_run_cancel(id: Uuid) -> Result<bool, StoreError>;
    fail_abandoned_runs(sweep: &Sweep<'_>) -> Result<u64, StoreError>;
    export(sink: &mut dyn ExportSink) -> Result<(), StoreError>;
    import_threads(threads: &[ThreadRecord]) -> Result<Vec<ImportedThread>, StoreError>;
    ping() -> Result<(), StoreError>;
}
