use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const BUCKET_SECS: u64 = 10;
const BUCKETS: usize = 30;

/// Cache counters kept by the conversations service, whatever the backend:
/// totals since start and hits/misses over the last five minutes.
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    rejected_fills: AtomicU64,
    window: [Bucket; BUCKETS],
}

/// Hits and misses of one 10-second slot; `slot` says which slot it currently counts.
#[derive(Default)]
struct Bucket {
    slot: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HitRate {
    pub hits: u64,
    pub misses: u64,
    /// `hits / (hits + misses)`, or `None` before the first lookup.
    pub ratio: Option<f64>,
}

impl HitRate {
    fn new(hits: u64, misses: u64) -> Self {
        let total = hits + misses;
        let ratio = (total > 0).then(|| hits as f64 / total as f64);
        Self { hits, misses, ratio }
    }
}

impl Default for CacheStats {
    fn default() -> Self {
        Self {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rejected_fills: AtomicU64::new(0),
            window: std::array::from_fn(|_| Bucket::default()),
        }
    }
}

fn current_slot() -> u64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs / BUCKET_SECS
}

impl CacheStats {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.bucket().hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.bucket().misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected_fill(&self) {
        self.rejected_fills.fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn rejected_fills(&self) -> u64 {
        self.rejected_fills.load(Ordering::Relaxed)
    }

    pub fn since_start(&self) -> HitRate {
        HitRate::new(self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    pub fn last_five_minutes(&self) -> HitRate {
        let now = current_slot();
        let recent = |b: &&Bucket| now.saturating_sub(b.slot.load(Ordering::Relaxed)) < BUCKETS as u64;
        let (hits, misses) = self.window.iter().filter(recent).fold((0, 0), |(h, m), b| {
            (h + b.hits.load(Ordering::Relaxed), m + b.misses.load(Ordering::Relaxed))
        });
        HitRate::new(hits, misses)
    }

    /// The bucket of the current slot, reset first if it still holds an older slot.
    /// A count racing the reset may land in the old slot's tally: fine for a rate.
    fn bucket(&self) -> &Bucket {
        let slot = current_slot();
        let bucket = &self.window[(slot % BUCKETS as u64) as usize];
        let seen = bucket.slot.load(Ordering::Relaxed);
        if seen != slot
            && bucket.slot.compare_exchange(seen, slot, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            bucket.hits.store(0, Ordering::Relaxed);
            bucket.misses.store(0, Ordering::Relaxed);
        }
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_hits_and_misses() {
        let stats = CacheStats::default();
        assert_eq!(stats.since_start().ratio, None);
        stats.hit();
        stats.hit();
        stats.hit();
        stats.miss();
        assert_eq!(stats.since_start(), HitRate { hits: 3, misses: 1, ratio: Some(0.75) });
        assert_eq!(stats.last_five_minutes(), stats.since_start());
    }
}
