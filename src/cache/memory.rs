use async_trait::async_trait;
use bytes::Bytes;
use moka::future::Cache as Moka;
use moka::ops::compute::{CompResult, Op};
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::{Cache, CacheError, CachedThread, Fill};

/// The in-process cache, used when no Redis is configured. Bounded by the bytes it holds.
pub struct MemoryCache {
    entries: Moka<Uuid, Entry>,
}

#[derive(Clone)]
struct Entry {
    thread: CachedThread,
    ttl: Duration,
}

/// Each entry lives for the TTL it was written with.
struct PerEntryTtl;

impl moka::Expiry<Uuid, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &Uuid, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Uuid,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> Self {
        let entries = Moka::builder()
            .max_capacity(max_bytes)
            .weigher(|_, entry: &Entry| u32::try_from(entry.thread.body.len()).unwrap_or(u32::MAX).max(1))
            .expire_after(PerEntryTtl)
            .build();
        Self { entries }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn outlives_process(&self) -> bool {
        false
    }

    async fn get(&self, id: Uuid) -> Result<Option<Bytes>, CacheError> {
        let body = self.entries.get(&id).await.map(|entry| entry.thread.body);
        Ok(body.filter(|body| !body.is_empty()))
    }

    async fn put(&self, id: Uuid, thread: CachedThread, ttl: Duration) -> Result<Fill, CacheError> {
        let version = thread.version;
        let result = self
            .entries
            .entry(id)
            .and_compute_with(|current| async move {
                match current {
                    Some(current) if current.value().thread.version >= version => Op::Nop,
                    _ => Op::Put(Entry { thread, ttl }),
                }
            })
            .await;
        Ok(match result {
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => Fill::Stored,
            _ => Fill::Stale,
        })
    }

    async fn purge(&self, ids: &[Uuid]) -> Result<(), CacheError> {
        for id in ids {
            self.entries.invalidate(id).await;
        }
        Ok(())
    }

    async fn clear(&self) -> Result<(), CacheError> {
        self.entries.invalidate_all();
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}
