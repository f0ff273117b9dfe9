//! Any cache, with each call timed for metrics and slow calls logged.

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use super::{Cache, CacheError, CachedThread, Fill, Lease, Lookup, Update};
use crate::metrics::{Metrics, timed};

pub struct MeteredCache {
    inner: Arc<dyn Cache>,
    metrics: Arc<Metrics>,
    slow: Duration,
}

impl MeteredCache {
    pub fn new(inner: Arc<dyn Cache>, metrics: Arc<Metrics>, slow: Duration) -> Self {
        Self { inner, metrics, slow }
    }

    async fn timed<T>(&self, op: &'static str, call: impl Future<Output = T>) -> T {
        timed(&self.metrics.cache, "cache", (op, self.inner.backend()), self.slow, call).await
    }
}

#[async_trait]
impl Cache for MeteredCache {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn outlives_process(&self) -> bool {
        self.inner.outlives_process()
    }

    async fn get(&self, id: Uuid, lease: Lease) -> Result<Lookup, CacheError> {
        self.timed("get", self.inner.get(id, lease)).await
    }

    async fn fill(
        &self,
        id: Uuid,
        lease: Lease,
        entry: CachedThread,
        ttl: Duration,
    ) -> Result<Fill, CacheError> {
        self.timed("fill", self.inner.fill(id, lease, entry, ttl)).await
    }

    async fn put(&self, id: Uuid, entry: CachedThread, ttl: Duration) -> Result<Update, CacheError> {
        self.timed("put", self.inner.put(id, entry, ttl)).await
    }

    async fn invalidate(&self, id: Uuid) -> Result<(), CacheError> {
        self.timed("invalidate", self.inner.invalidate(id)).await
    }

    async fn remove(&self, id: Uuid, block_fills_for: Duration) -> Result<(), CacheError> {
        self.timed("remove", self.inner.remove(id, block_fills_for)).await
    }

    async fn purge(&self, ids: &[Uuid]) -> Result<(), CacheError> {
        self.timed("purge", self.inner.purge(ids)).await
    }

    async fn clear(&self) -> Result<(), CacheError> {
        self.timed("clear", self.inner.clear()).await
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.timed("ping", self.inner.ping()).await
    }
}
