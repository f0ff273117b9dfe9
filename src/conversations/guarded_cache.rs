//! The cache as the service uses it: a failing cache costs time, never correctness.
//!
//! Every failure is counted, logged at most once per interval, and makes the service
//! leave the cache alone for a short cool-down. A write-through that fails after its
//! store commit leaves the thread's entry possibly stale: such ids are remembered and
//! purged before the cache serves reads again.
//!
//! Versions keep an older document from replacing a newer entry, but once an entry is
//! gone (evicted by a full Redis, or purged) a slow fill that read the store before a
//! commit would find nothing to compare with. So the newest version seen for each thread
//! is remembered for a while, an older document is dropped before it is sent, and a
//! thread's cache writes take turns so that they land in the order they were checked.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::cache::{Cache, CacheError, CacheStats, CachedThread, Fill};
use crate::telemetry::Throttle;

/// How long the cache is left alone after a failure before it is tried again.
const COOL_DOWN: Duration = Duration::from_secs(1);
/// At most one warning per interval; the rest are counted into the next one.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Past this many remembered ids, the whole namespace is cleared instead.
const MAX_STALE_IDS: usize = 100_000;
/// How long a written version is remembered: far longer than a store read and the
/// fill after it can take, both being bounded by their timeouts.
const RECENT_WRITE_WINDOW: Duration = Duration::from_secs(60);
const TURN_STRIPES: usize = 64;

pub struct GuardedCache {
    cache: Arc<dyn Cache>,
    stats: CacheStats,
    stale: Mutex<Stale>,
    recent_writes: Mutex<RecentWrites>,
    /// Striped: threads that share a stripe only wait for each other's cache writes.
    turns: [tokio::sync::Mutex<()>; TURN_STRIPES],
    /// Set while `stale` holds anything, so reads check it without locking.
    has_stale: AtomicBool,
    purging: AtomicBool,
    started: Instant,
    down_until_ms: AtomicU64,
    warnings: Throttle,
}

/// The newest document version recently sent to the cache, by thread.
struct RecentWrites {
    versions: HashMap<Uuid, (i64, Instant)>,
    prune_at: usize,
}

impl Default for RecentWrites {
    fn default() -> Self {
        Self { versions: HashMap::new(), prune_at: 1024 }
    }
}

impl RecentWrites {
    /// Records `version` for the thread; `false` if a newer one was seen recently, in
    /// which case the document must not be sent.
    fn claim(&mut self, id: Uuid, version: i64) -> bool {
        let now = Instant::now();
        let newest = match self.versions.get(&id) {
            Some((seen, at)) if *seen > version && now.duration_since(*at) < RECENT_WRITE_WINDOW => {
                return false;
            }
            Some((seen, at)) if now.duration_since(*at) < RECENT_WRITE_WINDOW => (*seen).max(version),
            _ => version,
        };
        self.versions.insert(id, (newest, now));
        if self.versions.len() >= self.prune_at {
            self.versions.retain(|_, (_, at)| now.duration_since(*at) < RECENT_WRITE_WINDOW);
            self.prune_at = (self.versions.len() * 2).max(1024);
        }
        true
    }
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

impl GuardedCache {
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        let everything = cache.outlives_process();
        Self {
            cache,
            stats: CacheStats::default(),
            stale: Mutex::new(Stale { everything: everything.then_some(0), ..Stale::default() }),
            recent_writes: Mutex::new(RecentWrites::default()),
            turns: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
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

    /// The cached document, or `None` on a miss or whenever the cache cannot be
    /// trusted or reached right now.
    pub async fn get(self: &Arc<Self>, id: Uuid) -> Option<Bytes> {
        let usable = !self.cooling_down() && !self.purge_pending();
        let found = if usable {
            self.cache.get(id).await.unwrap_or_else(|error| {
                self.failed(error);
                None
            })
        } else {
            None
        };
        match found {
            Some(_) => self.stats.hit(),
            None => self.stats.miss(),
        }
        found
    }

    /// Fills the cache after a store read. Losing a fill only costs a later miss.
    pub async fn fill(&self, id: Uuid, document: CachedThread, ttl: Duration) {
        if self.cooling_down() {
            return;
        }
        let _turn = self.turn_for(id).lock().await;
        if !self.claim(id, document.version) {
            return self.stats.rejected_fill();
        }
        match self.cache.put(id, document, ttl).await {
            Ok(Fill::Stored) => {}
            Ok(Fill::Stale) => self.stats.rejected_fill(),
            Err(error) => self.failed(error),
        }
    }

    /// Updates the entry after a store commit; if that fails the old entry may
    /// still be there, so the id is purged before the cache serves again.
    pub async fn write_through(&self, id: Uuid, document: CachedThread, ttl: Duration) {
        if self.cooling_down() {
            return self.mark_stale(id);
        }
        let _turn = self.turn_for(id).lock().await;
        if !self.claim(id, document.version) {
            // A newer version has been written already: the entry holds it, or nothing.
            return self.stats.rejected_fill();
        }
        match self.cache.put(id, document, ttl).await {
            Ok(Fill::Stored) => {}
            Ok(Fill::Stale) => self.stats.rejected_fill(),
            Err(error) => {
                self.failed(error);
                self.mark_stale(id);
            }
        }
    }

    /// Removes the entry after a store delete, with the same fallback as `write_through`.
    pub async fn remove(&self, id: Uuid, block_fills_for: Duration) {
        let _turn = self.turn_for(id).lock().await;
        self.claim(id, i64::MAX);
        if self.cooling_down() {
            return self.mark_stale(id);
        }
        if let Err(error) = self.cache.remove(id, block_fills_for).await {
            self.failed(error);
            self.mark_stale(id);
        }
    }

    /// The lock a thread's cache writes take turns on. Holding it from the version check
    /// to the write's answer makes writes reach the cache in the order of their versions:
    /// without it, a writer could check first and send last, and its older document
    /// could land after a newer one had been evicted.
    fn turn_for(&self, id: Uuid) -> &tokio::sync::Mutex<()> {
        &self.turns[(id.as_u128() % TURN_STRIPES as u128) as usize]
    }

    fn claim(&self, id: Uuid, version: i64) -> bool {
        self.recent_writes.lock().unwrap_or_else(PoisonError::into_inner).claim(id, version)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn cooling_down(&self) -> bool {
        self.now_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    /// The entry may be stale: purge it before the cache serves again.
    pub fn mark_stale(&self, id: Uuid) {
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
    }

    /// True while stale entries may remain; starts one background purge if none runs.
    fn purge_pending(self: &Arc<Self>) -> bool {
        if !self.has_stale.load(Ordering::Acquire) {
            return false;
        }
        if !self.purging.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            tokio::spawn(async move {
                this.purge().await;
                this.purging.store(false, Ordering::Release);
            });
        }
        true
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
