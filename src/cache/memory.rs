use async_trait::async_trait;
use bytes::Bytes;
use moka::future::Cache as Moka;
use moka::ops::compute::{CompResult, Op};
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::{Cache, CacheError, CachedThread, Fill, LEASE_TTL, Lease, Lookup, Update};

/// The in-process cache, used when no Redis is configured. Bounded by the bytes it holds.
pub struct MemoryCache {
    entries: Moka<Uuid, Entry>,
}

#[derive(Clone)]
struct Entry {
    slot: Slot,
    ttl: Duration,
}

#[derive(Clone)]
enum Slot {
    /// A miss is being filled under this lease.
    Leased(Lease),
    /// A document; `lease` is the one it was filled or written under (none on the
    /// empty, newest-of-all document a removal leaves).
    Held { thread: CachedThread, lease: Option<Lease> },
}

impl Entry {
    fn leased(lease: Lease) -> Self {
        Self { slot: Slot::Leased(lease), ttl: LEASE_TTL }
    }

    fn held(thread: CachedThread, lease: Option<Lease>, ttl: Duration) -> Self {
        Self { slot: Slot::Held { thread, lease }, ttl }
    }

    fn weight(&self) -> u32 {
        match &self.slot {
            Slot::Leased(_) => 1,
            Slot::Held { thread, .. } => u32::try_from(thread.body.len()).unwrap_or(u32::MAX).max(1),
        }
    }
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
            .weigher(|_, entry: &Entry| entry.weight())
            .expire_after(PerEntryTtl)
            .build();
        Self { entries }
    }

    /// Runs one atomic read-modify-write of the entry and returns the entry it leaves.
    async fn compute(&self, id: Uuid, change: impl FnOnce(Option<Slot>) -> Op<Entry> + Send) -> Option<Slot> {
        let result = self
            .entries
            .entry(id)
            .and_compute_with(|current| {
                let op = change(current.map(|entry| entry.into_value().slot));
                async move { op }
            })
            .await;
        match result {
            CompResult::Inserted(entry) | CompResult::ReplacedWith(entry) | CompResult::Unchanged(entry) => {
                Some(entry.into_value().slot)
            }
            CompResult::Removed(_) | CompResult::StillNone(_) => None,
        }
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

    async fn get(&self, id: Uuid, lease: Lease) -> Result<Lookup, CacheError> {
        // A hit needs no lock on the entry: reading one document is atomic by itself.
        if let Some(Entry { slot: Slot::Held { thread, .. }, .. }) = self.entries.get(&id).await
            && !thread.body.is_empty()
        {
            return Ok(Lookup::Hit(thread.body));
        }
        let slot = self
            .compute(id, |current| match current {
                None => Op::Put(Entry::leased(lease)),
                Some(_) => Op::Nop,
            })
            .await;
        Ok(match slot {
            Some(Slot::Held { thread, .. }) if !thread.body.is_empty() => Lookup::Hit(thread.body),
            Some(Slot::Leased(held)) => Lookup::Miss(held),
            // Removed: a fill under any lease is refused by the removal's version.
            _ => Lookup::Miss(lease),
        })
    }

    async fn fill(
        &self,
        id: Uuid,
        lease: Lease,
        thread: CachedThread,
        ttl: Duration,
    ) -> Result<Fill, CacheError> {
        let version = thread.version;
        let mut stored = false;
        self.compute(id, |current| {
            let allowed = match current {
                Some(Slot::Leased(held)) => held == lease,
                Some(Slot::Held { thread: current, lease: held }) => {
                    held == Some(lease) && current.version < version
                }
                None => false,
            };
            stored = allowed;
            if allowed { Op::Put(Entry::held(thread, Some(lease), ttl)) } else { Op::Nop }
        })
        .await;
        Ok(if stored { Fill::Stored } else { Fill::Rejected })
    }

    async fn put(&self, id: Uuid, thread: CachedThread, ttl: Duration) -> Result<Update, CacheError> {
        let mut update = Update::Stale;
        self.compute(id, |current| match current {
            Some(Slot::Held { thread: current, .. }) if current.version >= thread.version => Op::Nop,
            Some(Slot::Held { .. }) => {
                update = Update::Stored;
                Op::Put(Entry::held(thread, Some(Lease::random()), ttl))
            }
            None | Some(Slot::Leased(_)) => {
                update = Update::Invalidated;
                Op::Put(Entry::leased(Lease::random()))
            }
        })
        .await;
        Ok(update)
    }

    async fn invalidate(&self, id: Uuid) -> Result<(), CacheError> {
        self.compute(id, |current| match current {
            Some(Slot::Held { thread, lease: None }) if thread.body.is_empty() => Op::Nop,
            _ => Op::Put(Entry::leased(Lease::random())),
        })
        .await;
        Ok(())
    }

    // Removals go through `compute` too: moka serializes computations on a key only
    // with each other, so a plain insert or invalidate could land between a fill's read
    // and its write, and the fill would then overwrite it.
    async fn remove(&self, id: Uuid, block_fills_for: Duration) -> Result<(), CacheError> {
        let marker = CachedThread { version: i64::MAX, body: Bytes::new() };
        self.compute(id, |_| Op::Put(Entry::held(marker, None, block_fills_for))).await;
        Ok(())
    }

    async fn purge(&self, ids: &[Uuid]) -> Result<(), CacheError> {
        for id in ids {
            self.compute(*id, |_| Op::Remove).await;
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
