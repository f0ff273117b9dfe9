//! The cache as the service uses it: a failing cache costs time, never correctness.
//!
//! That no older fill lands after a write is the cache adapters' job (leases, see
//! `crate::cache`). What is left here is what an unreachable cache needs: every failure
//! is counted, logged at most once per interval, and makes the service leave the cache
//! alone for a short cool-down. A write whose cache update could not be made leaves that
//! thread's entry possibly stale: its id is remembered, and that one thread is read from
//! the store until its entry has been purged. No lock is held across a cache call, so
//! no request waits for another's timeout.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::cache::{Cache, CacheError, CacheStats, CachedThread, Fill, Lease, Lookup};
use crate::telemetry::Throttle;

/// How long the cache is left alone after a failure before it is tried again.
const COOL_DOWN: Duration = Duration::from_secs(1);
/// At most one warning per interval; the rest are counted into the next one.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Past this many remembered ids, the whole namespace is cleared instead.
const MAX_STALE_IDS: usize = 100_000;
/// How long a thread whose write may still commit stays out of the cache: longer than
/// any store call can take (10 s at most), so that no fill which read the store before
/// that commit can land after it.
const IN_DOUBT: Duration = Duration::from_secs(30);

pub struct GuardedCache {
    cache: Arc<dyn Cache>,
    stats: CacheStats,
    stale: Mutex<Stale>,
    /// Set while `stale` holds anything, so reads check it without locking.
    has_stale: AtomicBool,
    purging: AtomicBool,
    started: Instant,
    down_until_ms: AtomicU64,
    warnings: Throttle,
}

/// What a read found in the cache.
pub enum Read {
    Hit(Bytes),
    /// Read the store; fill the cache under the lease, if there is one (none when the
    /// cache could not be asked or trusted).
    Miss(Option<Lease>),
}

/// Entries that may be stale, each with the number of the mark that made it so, so that
/// a purge only forgets marks older than what it purged.
#[derive(Default)]
struct Stale {
    ids: HashMap<Uuid, u64>,
    /// The whole cache is suspect, since this mark.
    everything: Option<u64>,
    marks: u64,
}

impl Stale {
    fn covers(&self, id: Uuid) -> bool {
        self.everything.is_some() || self.ids.contains_key(&id)
    }
}

impl GuardedCache {
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        // Entries left by an earlier process may be stale (it may have died between a
        // commit and its cache update), and its marks died with it.
        let everything = cache.outlives_process();
        Self {
            cache,
            stats: CacheStats::default(),
            stale: Mutex::new(Stale { everything: everything.then_some(0), ..Stale::default() }),
            has_stale: AtomicBool::new(everything),
            purging: AtomicBool::new(false),
            started: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            warnings: Throttle::new(WARNING_INTERVAL),
        }
    }

    pub fn inner(&self) -> &Arc<dyn Cache> {
        &self.cache
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The cached document, or a miss: with a lease to fill it under, or without one
    /// whenever the cache cannot be trusted or reached right now.
    pub async fn get(self: &Arc<Self>, id: Uuid) -> Read {
        let read = if self.cooling_down() || self.distrusted(id) {
            Read::Miss(None)
        } else {
            match self.cache.get(id, Lease::random()).await {
                Ok(Lookup::Hit(body)) => Read::Hit(body),
                Ok(Lookup::Miss(lease)) => Read::Miss(Some(lease)),
                Err(error) => {
                    self.failed(error);
                    Read::Miss(None)
                }
            }
        };
        match read {
            Read::Hit(_) => self.stats.hit(),
            Read::Miss(_) => self.stats.miss(),
        }
        read
    }

    /// Fills the cache after a store read under the lease of the miss. Losing a fill
    /// only costs a later miss.
    pub async fn fill(&self, id: Uuid, lease: Lease, document: CachedThread, ttl: Duration) {
        if self.cooling_down() {
            return;
        }
        match self.cache.fill(id, lease, document, ttl).await {
            Ok(Fill::Stored) => {}
            Ok(Fill::Rejected) => self.stats.rejected_fill(),
            Err(error) => self.failed(error),
        }
    }

    /// Updates the entry after a store commit; if that cannot be done the old entry
    /// may still be there, so the id is purged before the cache serves it again.
    pub async fn write_through(self: &Arc<Self>, id: Uuid, document: CachedThread, ttl: Duration) {
        self.update(id, self.cache.put(id, document, ttl)).await;
    }

    /// Empties the entry after a store commit, for the next miss to fill, with the same
    /// fallback as `write_through`.
    pub async fn invalidate(self: &Arc<Self>, id: Uuid) {
        self.update(id, self.cache.invalidate(id)).await;
    }

    /// Removes the entry after a store delete, with the same fallback as `write_through`.
    pub async fn remove(self: &Arc<Self>, id: Uuid, block_fills_for: Duration) {
        self.update(id, self.cache.remove(id, block_fills_for)).await;
    }

    /// A write to the thread failed without a clear answer and may have committed, or
    /// still commit: the entry is replaced by a removal marker that keeps every fill out
    /// for longer than the store call could still take; when the cache cannot be reached,
    /// the entry is purged as soon as it can be.
    pub async fn distrust(self: &Arc<Self>, id: Uuid) {
        self.remove(id, IN_DOUBT).await;
    }

    /// Makes an update after a store write (not even started while cooling down); the
    /// entry is marked stale when it may still hold what the write changed.
    async fn update<T>(self: &Arc<Self>, id: Uuid, call: impl Future<Output = Result<T, CacheError>>) {
        if self.cooling_down() {
            return self.mark_stale(id);
        }
        if let Err(error) = call.await {
            self.failed(error);
            self.mark_stale(id);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn cooling_down(&self) -> bool {
        self.now_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    fn cool_down_left(&self) -> Duration {
        Duration::from_millis(self.down_until_ms.load(Ordering::Relaxed).saturating_sub(self.now_ms()))
    }

    /// The entry may be stale: purge it before the cache serves it again. The purge
    /// starts at once and is retried after each cool-down, not left for this process's
    /// next read: other processes sharing the cache read that entry too.
    fn mark_stale(self: &Arc<Self>, id: Uuid) {
        let mut stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
        stale.marks += 1;
        let mark = stale.marks;
        if stale.ids.len() >= MAX_STALE_IDS {
            stale.ids.clear();
            stale.everything = Some(mark);
        } else {
            stale.ids.insert(id, mark);
        }
        self.has_stale.store(true, Ordering::Release);
        drop(stale);
        self.start_purging();
    }

    /// True while this id's entry may be stale. A purge pending since start-up (a shared
    /// cache's entries from before this process) starts with the first read.
    fn distrusted(self: &Arc<Self>, id: Uuid) -> bool {
        if !self.has_stale.load(Ordering::Acquire) {
            return false;
        }
        self.start_purging();
        self.stale.lock().unwrap_or_else(PoisonError::into_inner).covers(id)
    }

    /// Purges in the background until no mark is left, one purge at a time, waiting out
    /// each cool-down in between.
    fn start_purging(self: &Arc<Self>) {
        if self.purging.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                while this.has_stale.load(Ordering::Acquire) {
                    tokio::time::sleep(this.cool_down_left()).await;
                    this.purge().await;
                }
                this.purging.store(false, Ordering::Release);
                // A mark made between the last check and clearing the flag found a purge
                // still running and left the work to it.
                if !this.has_stale.load(Ordering::Acquire) || this.purging.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }

    async fn purge(&self) {
        let (ids, everything, marks) = {
            let stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
            (stale.ids.keys().copied().collect::<Vec<_>>(), stale.everything, stale.marks)
        };
        let purged = match everything {
            Some(_) => self.cache.clear().await,
            None => self.cache.purge(&ids).await,
        };
        if let Err(error) = purged {
            return self.failed(error);
        }
        // Marks made while the purge ran may concern entries it had already passed.
        let mut stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
        stale.ids.retain(|_, mark| *mark > marks);
        stale.everything = stale.everything.filter(|mark| *mark > marks);
        self.has_stale.store(stale.everything.is_some() || !stale.ids.is_empty(), Ordering::Release);
    }

    fn failed(&self, error: CacheError) {
        self.stats.error();
        self.down_until_ms.store(self.now_ms() + COOL_DOWN.as_millis() as u64, Ordering::Relaxed);
        if let Some(held_back) = self.warnings.admit() {
            tracing::warn!(
                cache = self.cache.backend(),
                %error,
                held_back,
                "cache failing; serving from the store, retrying the cache after a cool-down"
            );
        }
    }
}
