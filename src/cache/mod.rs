//! TTL cache of thread documents in front of the store.
//!
//! Every adapter keeps one invariant atomically, whatever else touches the cache (an
//! eviction, a purge, another process sharing the server): **no document read from the
//! store before a write lands after that write.** A miss hands out a lease (a random
//! nonce kept on the entry); a fill stores only while the entry still holds that lease;
//! every write-through or invalidation replaces the lease, and a purge or an eviction
//! drops it with the entry. So a fill that read the store before a write either lands
//! before the write's update (which then replaces or empties it) or not at all.

mod memory;
mod metered;
mod none;
mod redis;
mod stats;

pub use memory::MemoryCache;
pub use metered::MeteredCache;
pub use none::NoCache;
pub use redis::RedisCache;
pub use stats::{CacheStats, HitRate};

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;
use uuid::Uuid;

/// How long a lease waits for its fill: far longer than a store read takes. A fill
/// that comes later finds the lease gone and is dropped, which only costs a later miss.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// A thread document as the API returns it, tagged with the thread version it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedThread {
    pub version: i64,
    pub body: Bytes,
}

/// The right to fill one missing entry, as long as nothing has written it since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease(pub u64);

impl Lease {
    /// A fresh nonce. Random rather than counted, so that a lease can never come back
    /// after its entry was evicted or the server restarted.
    pub fn random() -> Self {
        Self(Uuid::new_v4().as_u64_pair().0)
    }
}

/// What a `get` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(Bytes),
    /// No document: the store may be read and the result filled under this lease.
    Miss(Lease),
}

/// What a `fill` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Stored,
    /// The lease was gone (the entry was written, purged or evicted since the miss) or
    /// the entry already held this version or a newer one; nothing changed.
    Rejected,
}

/// What a write-through `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The entry held an older document and now holds this one.
    Stored,
    /// The entry held no document: it was left empty with a new lease, since a document
    /// stored after an eviction could be older than one that was evicted.
    Invalidated,
    /// The entry already held this version or a newer one; nothing changed.
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

    /// The cached document, or the lease a fill must present: the one the entry holds
    /// already, else `lease`, which the entry then holds for [`LEASE_TTL`]. One atomic step.
    async fn get(&self, id: Uuid, lease: Lease) -> Result<Lookup, CacheError>;

    /// Stores `entry` for `ttl` if the entry still holds `lease` and no document of the
    /// same or a newer version. One atomic step.
    async fn fill(
        &self,
        id: Uuid,
        lease: Lease,
        entry: CachedThread,
        ttl: Duration,
    ) -> Result<Fill, CacheError>;

    /// The write-through after a store commit: replaces an older document, or leaves an
    /// empty entry with a new lease; either way any lease handed out before is void.
    /// One atomic step.
    async fn put(&self, id: Uuid, entry: CachedThread, ttl: Duration) -> Result<Update, CacheError>;

    /// The update after a store commit that leaves the document to the next miss (an
    /// append: re-encoding a whole thread per append would make its cost grow with the
    /// thread): drops the document and leaves an empty entry under a new lease, so any
    /// lease handed out before is void. A removal's entry stays as it is. One atomic step.
    async fn invalidate(&self, id: Uuid) -> Result<(), CacheError>;

    /// Drops the entry and refuses every update for `block_fills_for`, so that neither a
    /// late fill nor a late write-through can bring a deleted thread back.
    async fn remove(&self, id: Uuid, block_fills_for: Duration) -> Result<(), CacheError>;

    /// Deletes entries outright, leases included: for entries that may be stale because
    /// their write-through failed.
    async fn purge(&self, ids: &[Uuid]) -> Result<(), CacheError>;

    /// Deletes every entry of this cache.
    async fn clear(&self) -> Result<(), CacheError>;

    /// Checks that the cache answers.
    async fn ping(&self) -> Result<(), CacheError>;
}
