//! A store that forwards every call to an inner store through a hook, so that a
//! wrapper (timing, test delays) writes only what it adds around the calls.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

use super::{
    AppendTurns, Appended, ExportSink, ImportedThread, Page, RunQuery, Store, StoreError, ThreadQuery,
    ThreadRecord,
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

            $(async fn $op(&self, $($arg: $ty),*) -> Result<$output, StoreError> {
                self.hook.around(stringify!($op), self.inner.$op($($arg),*)).await
            })*
        }
    };
}

forward_through_hook! {
    create_thread(id: Uuid, new: &NewThread, now: DateTime<Utc>) -> Thread;
    get_thread(id: Uuid) -> Option<ThreadWithTurns>;
    list_threads(query: &ThreadQuery) -> Page<Thread>;
    delete_thread(id: Uuid) -> bool;
    append_turns(append: &AppendTurns) -> Appended;
    list_turns(id: Uuid, after_seq: u32, limit: u32) -> Option<Vec<Turn>>;
    history(id: Uuid, limits: HistoryLimits) -> Option<Chain>;
    reserve_run(run: &ToolRun, policy: ConversationPolicy, now: DateTime<Utc>) -> ();
    save_run(run: &ToolRun) -> ();
    get_run(id: Uuid) -> Option<ToolRun>;
    list_runs(query: &RunQuery) -> Page<ToolRun>;
    fail_unfinished_runs(created_before: DateTime<Utc>, error: &str, now: DateTime<Utc>) -> u64;
    export(sink: &mut dyn ExportSink) -> ();
    import_threads(threads: &[ThreadRecord]) -> Vec<ImportedThread>;
    ping() -> ();
}
