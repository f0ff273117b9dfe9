//! TTL cache of thread documents in front of the store.

mod memory;
mod metered;
mod redis;
mod stats;

pub use memory::MemoryCache;
pub use metered::MeteredCache;
pub use redis::RedisCache;
pub use stats::{CacheStats, HitRate};

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;
use uuid::Uuid;

/// A thread document as the API returns it, tagged with the thread version it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedThread {
    pub version: i64,
    pub body: Bytes,
}

/// What a `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Stored,
    /// The cache already held this version or a newer one; nothing changed.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct CacheError(pub String);

#[async_trait]
pub trait Cache: Send + Sync {
    /// Short backend name for logs, health and metrics.
    fn backend(&self) -> &'static str;

    /// Whether entries may predate this process (a shared server), so that nothing in
    /// the cache can be trusted until it has been cleared.
    fn outlives_process(&self) -> bool;

    /// The cached document, if any.
    async fn get(&self, id: Uuid) -> Result<Option<Bytes>, CacheError>;

    /// Stores `entry` for `ttl` unless an entry of the same or a newer version is
    /// present. The comparison and the write are one atomic step.
    async fn put(&self, id: Uuid, entry: CachedThread, ttl: Duration) -> Result<Fill, CacheError>;

    /// Drops the entry and blocks fills for `block_fills_for`, so that a read which
    /// began before a delete cannot bring the deleted thread back.
    async fn remove(&self, id: Uuid, block_fills_for: Duration) -> Result<(), CacheError> {
        let marker = CachedThread { version: i64::MAX, body: Bytes::new() };
        self.put(id, marker, block_fills_for).await.map(drop)
    }

    /// Deletes entries outright, whatever their version: for entries that may be stale
    /// because their write-through failed.
    async fn purge(&self, ids: &[Uuid]) -> Result<(), CacheError>;

    /// Deletes every entry of this cache.
    async fn clear(&self) -> Result<(), CacheError>;

    /// Checks that the cache answers.
    async fn ping(&self) -> Result<(), CacheError>;
}
