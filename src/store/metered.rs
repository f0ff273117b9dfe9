//! Any store, with each call timed for metrics and slow calls logged.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use super::{AppendTurns, Appended, Page, RunQuery, Store, StoreError, ThreadQuery};
use crate::domain::{
    Chain, ConversationPolicy, HistoryLimits, NewThread, Thread, ThreadWithTurns, ToolRun, Turn,
};
use crate::metrics::{Metrics, timed};

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    slow: Duration,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>, slow: Duration) -> Self {
        Self { inner, metrics, slow }
    }

    async fn timed<T>(&self, op: &'static str, call: impl Future<Output = T>) -> T {
        timed(&self.metrics.store, "store", (op, self.inner.backend()), self.slow, call).await
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn create_thread(
        &self,
        id: Uuid,
        new: &NewThread,
        now: DateTime<Utc>,
    ) -> Result<Thread, StoreError> {
        self.timed("create_thread", self.inner.create_thread(id, new, now)).await
    }

    async fn get_thread(&self, id: Uuid) -> Result<Option<ThreadWithTurns>, StoreError> {
        self.timed("get_thread", self.inner.get_thread(id)).await
    }

    async fn list_threads(&self, query: &ThreadQuery) -> Result<Page<Thread>, StoreError> {
        self.timed("list_threads", self.inner.list_threads(query)).await
    }

    async fn delete_thread(&self, id: Uuid) -> Result<bool, StoreError> {
        self.timed("delete_thread", self.inner.delete_thread(id)).await
    }

    async fn append_turns(&self, append: &AppendTurns) -> Result<Appended, StoreError> {
        self.timed("append_turns", self.inner.append_turns(append)).await
    }

    async fn list_turns(
        &self,
        id: Uuid,
        after_seq: u32,
        limit: u32,
    ) -> Result<Option<Vec<Turn>>, StoreError> {
        self.timed("list_turns", self.inner.list_turns(id, after_seq, limit)).await
    }

    async fn history(&self, id: Uuid, limits: HistoryLimits) -> Result<Option<Chain>, StoreError> {
        self.timed("history", self.inner.history(id, limits)).await
    }

    async fn reserve_run(
        &self,
        run: &ToolRun,
        policy: ConversationPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.timed("reserve_run", self.inner.reserve_run(run, policy, now)).await
    }

    async fn save_run(&self, run: &ToolRun) -> Result<(), StoreError> {
        self.timed("save_run", self.inner.save_run(run)).await
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<ToolRun>, StoreError> {
        self.timed("get_run", self.inner.get_run(id)).await
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Page<ToolRun>, StoreError> {
        self.timed("list_runs", self.inner.list_runs(query)).await
    }

    async fn fail_unfinished_runs(
        &self,
        created_before: DateTime<Utc>,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.timed("fail_unfinished_runs", self.inner.fail_unfinished_runs(created_before, error, now)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }

    fn round_trips(&self) -> u64 {
        self.inner.round_trips()
    }
}
