//! No cache: every read goes to the store.

use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

use super::{Cache, CacheError, CachedThread, Fill, Lease, Lookup, Update};

/// The cache when the store may be shared by several exai processes and there is no
/// Redis to share: a document kept in one process would not see another's writes.
/// Every read misses under a fresh lease, so no two reads wait for one store call
/// either, and every fill is dropped as an entry evicted at once would be.
pub struct NoCache;

#[async_trait]
impl Cache for NoCache {
    fn backend(&self) -> &'static str {
        "none"
    }

    fn outlives_process(&self) -> bool {
        false
    }

    async fn get(&self, _: Uuid, lease: Lease) -> Result<Lookup, CacheError> {
        Ok(Lookup::Miss(lease))
    }

    async fn fill(&self, _: Uuid, _: Lease, _: CachedThread, _: Duration) -> Result<Fill, CacheError> {
        Ok(Fill::Stored)
    }

    async fn put(&self, _: Uuid, _: CachedThread, _: Duration) -> Result<Update, CacheError> {
        Ok(Update::Invalidated)
    }

    async fn invalidate(&self, _: Uuid) -> Result<(), CacheError> {
        Ok(())
    }

    async fn remove(&self, _: Uuid, _: Duration) -> Result<(), CacheError> {
        Ok(())
    }

    async fn purge(&self, _: &[Uuid]) -> Result<(), CacheError> {
        Ok(())
    }

    async fn clear(&self) -> Result<(), CacheError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}
