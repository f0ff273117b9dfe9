//! A real store with a pause after each thread read, to widen the window between a
//! store read and the cache fill that follows it; or, for one chosen read, a pause
//! that lasts until the test lets it go.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

use exai::domain::{
    Chain, ConversationPolicy, HistoryLimits, NewThread, Thread, ThreadWithTurns, ToolRun, Turn,
};
use exai::store::{AppendTurns, Appended, Page, RunQuery, Store, StoreError, ThreadQuery};

pub struct SlowStore {
    pub inner: Arc<dyn Store>,
    pub read_delay: Duration,
    pub gate: ReadGate,
}

impl SlowStore {
    pub fn new(inner: Arc<dyn Store>, read_delay: Duration) -> Self {
        Self { inner, read_delay, gate: ReadGate::default() }
    }
}

/// Holds the next thread read, once it has read the store, until released.
#[derive(Default)]
pub struct ReadGate {
    armed: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

/// A read held by the gate: `reached` resolves once the read has read the store;
/// sending on `release` lets it carry on.
pub struct HeldRead {
    pub reached: oneshot::Receiver<()>,
    pub release: oneshot::Sender<()>,
}

impl ReadGate {
    pub fn hold_next(&self) -> HeldRead {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        *self.armed.lock().unwrap() = Some((reached_tx, release_rx));
        HeldRead { reached, release }
    }

    async fn pass(&self) {
        let armed = self.armed.lock().unwrap().take();
        if let Some((reached, release)) = armed {
            let _ = reached.send(());
            let _ = release.await;
        }
    }
}

#[async_trait]
impl Store for SlowStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn create_thread(
        &self,
        id: Uuid,
        new: &NewThread,
        now: DateTime<Utc>,
    ) -> Result<Thread, StoreError> {
        self.inner.create_thread(id, new, now).await
    }

    async fn get_thread(&self, id: Uuid) -> Result<Option<ThreadWithTurns>, StoreError> {
        let read = self.inner.get_thread(id).await;
        tokio::time::sleep(self.read_delay).await;
        self.gate.pass().await;
        read
    }

    async fn list_threads(&self, query: &ThreadQuery) -> Result<Page<Thread>, StoreError> {
        self.inner.list_threads(query).await
    }

    async fn delete_thread(&self, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_thread(id).await
    }

    async fn append_turns(&self, append: &AppendTurns) -> Result<Appended, StoreError> {
        self.inner.append_turns(append).await
    }

    async fn list_turns(
        &self,
        id: Uuid,
        after_seq: u32,
        limit: u32,
    ) -> Result<Option<Vec<Turn>>, StoreError> {
        self.inner.list_turns(id, after_seq, limit).await
    }

    async fn history(&self, id: Uuid, limits: HistoryLimits) -> Result<Option<Chain>, StoreError> {
        self.inner.history(id, limits).await
    }

    async fn reserve_run(
        &self,
        run: &ToolRun,
        policy: ConversationPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.reserve_run(run, policy, now).await
    }

    async fn save_run(&self, run: &ToolRun) -> Result<(), StoreError> {
        self.inner.save_run(run).await
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<ToolRun>, StoreError> {
        self.inner.get_run(id).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<ToolRun>, StoreError> {
        self.inner.list_runs(query).await
    }

    async fn fail_unfinished_runs(
        &self,
        created_before: DateTime<Utc>,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.fail_unfinished_runs(created_before, error, now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn round_trips(&self) -> u64 {
        self.inner.round_trips()
    }
}
