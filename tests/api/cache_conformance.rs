//! One behaviour for every cache backend.

use bytes::Bytes;
use exai::cache::{Cache, CachedThread, Fill, Lease, Lookup, RedisCache, Update};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::support;
use crate::support::services;

const TTL: Duration = Duration::from_secs(60);

fn doc(version: i64) -> CachedThread {
    CachedThread { version, body: Bytes::from(format!("{{\"version\":{version}}}")) }
}

fn hit(version: i64) -> Lookup {
    Lookup::Hit(doc(version).body)
}

/// The lease a miss hands out; fails if the entry holds a document.
async fn lease(cache: &dyn Cache, id: Uuid) -> Lease {
    match cache.get(id, Lease::random()).await.unwrap() {
        Lookup::Miss(lease) => lease,
        Lookup::Hit(body) => panic!("expected a miss, found {body:?}"),
    }
}

/// Fills the entry through a miss and checks that it is there.
async fn filled(cache: &dyn Cache, id: Uuid, version: i64, ttl: Duration) -> Lease {
    let lease = lease(cache, id).await;
    assert_eq!(cache.fill(id, lease, doc(version), ttl).await.unwrap(), Fill::Stored);
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(version), "the fill left no entry");
    lease
}

pub async fn misses_then_hits(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    let offered = Lease::random();
    assert_eq!(cache.get(id, offered).await.unwrap(), Lookup::Miss(offered));
    assert_eq!(cache.fill(id, offered, doc(1), TTL).await.unwrap(), Fill::Stored);
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(1));
}

pub async fn a_miss_keeps_the_lease_already_handed_out(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    let first = lease(cache, id).await;
    assert_eq!(lease(cache, id).await, first, "concurrent misses share one lease");
    assert_eq!(cache.fill(id, Lease::random(), doc(1), TTL).await.unwrap(), Fill::Rejected);
    assert_eq!(lease(cache, id).await, first, "a refused fill leaves nothing");
    assert_eq!(cache.fill(id, first, doc(1), TTL).await.unwrap(), Fill::Stored);
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(1));
}

pub async fn a_write_voids_the_leases_handed_out_before(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    let before = lease(cache, id).await;
    assert_eq!(cache.put(id, doc(2), TTL).await.unwrap(), Update::Invalidated);
    assert_eq!(cache.fill(id, before, doc(1), TTL).await.unwrap(), Fill::Rejected);
    let after = lease(cache, id).await;
    assert_ne!(after, before);
    assert_eq!(cache.fill(id, after, doc(2), TTL).await.unwrap(), Fill::Stored);
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(2));
}

pub async fn an_invalidation_empties_the_entry_and_voids_earlier_leases(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    let held = filled(cache, id, 1, TTL).await;
    let missing = Uuid::new_v4();
    let before = lease(cache, missing).await;
    cache.invalidate(id).await.unwrap();
    cache.invalidate(missing).await.unwrap();
    assert_eq!(cache.fill(id, held, doc(2), TTL).await.unwrap(), Fill::Rejected);
    assert_eq!(cache.fill(missing, before, doc(2), TTL).await.unwrap(), Fill::Rejected);
    let after = lease(cache, id).await;
    assert_ne!(after, held);
    assert_eq!(cache.fill(id, after, doc(2), TTL).await.unwrap(), Fill::Stored);
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(2));
}

pub async fn an_invalidation_keeps_a_removal(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    filled(cache, id, 1, TTL).await;
    cache.remove(id, TTL).await.unwrap();
    cache.invalidate(id).await.unwrap();
    let after = lease(cache, id).await;
    assert_eq!(cache.fill(id, after, doc(2), TTL).await.unwrap(), Fill::Rejected, "the removal stays");
}

pub async fn a_purge_voids_the_leases_handed_out_before(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    let before = lease(cache, id).await;
    cache.purge(&[id]).await.unwrap();
    assert_eq!(cache.fill(id, before, doc(1), TTL).await.unwrap(), Fill::Rejected);
    assert_ne!(lease(cache, id).await, before, "a nonce never comes back");
}

pub async fn a_write_replaces_only_an_older_document(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    let lease = filled(cache, id, 5, TTL).await;
    assert_eq!(cache.put(id, doc(4), TTL).await.unwrap(), Update::Stale);
    assert_eq!(cache.put(id, doc(5), TTL).await.unwrap(), Update::Stale);
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(5));
    assert_eq!(cache.put(id, doc(6), TTL).await.unwrap(), Update::Stored);
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(6));
    assert_eq!(
        cache.fill(id, lease, doc(7), TTL).await.unwrap(),
        Fill::Rejected,
        "the write voided the lease"
    );
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(6));
}

pub async fn a_write_after_an_eviction_stores_no_document(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    filled(cache, id, 1, TTL).await;
    cache.purge(&[id]).await.unwrap();
    // Another write's newer document may have been evicted: this one is not known to be the newest.
    assert_eq!(cache.put(id, doc(2), TTL).await.unwrap(), Update::Invalidated);
    lease(cache, id).await;
}

pub async fn removal_blocks_late_fills_and_writes(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    let lease = filled(cache, id, 1, TTL).await;
    cache.remove(id, TTL).await.unwrap();
    let after = self::lease(cache, id).await;
    assert_eq!(cache.fill(id, lease, doc(2), TTL).await.unwrap(), Fill::Rejected);
    assert_eq!(cache.fill(id, after, doc(2), TTL).await.unwrap(), Fill::Rejected);
    assert_eq!(cache.put(id, doc(3), TTL).await.unwrap(), Update::Stale);
    self::lease(cache, id).await;
}

pub async fn entries_expire_after_their_ttl(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    filled(cache, id, 1, Duration::from_millis(300)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Lookup::Hit(_) = cache.get(id, Lease::random()).await.unwrap() {
        assert!(Instant::now() < deadline, "entry outlived its TTL by far");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn racing_fills_and_writes_leave_the_newest(cache: Arc<dyn Cache>) {
    let id = Uuid::new_v4();
    let lease = filled(cache.as_ref(), id, 1, TTL).await;
    let fills = (2..=50).rev().chain(2..=50).map(|version| {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache.fill(id, lease, doc(version), TTL).await.unwrap();
            cache.put(id, doc(version + 50), TTL).await.unwrap();
        })
    });
    for fill in fills.collect::<Vec<_>>() {
        fill.await.unwrap();
    }
    assert_eq!(cache.get(id, Lease::random()).await.unwrap(), hit(100));
}

/// A fill, a write or a purge racing a removal on the same entry: whichever lands first,
/// no document is served after the removal.
pub async fn removals_win_races_with_fills_writes_and_purges(cache: Arc<dyn Cache>) {
    for _ in 0..2000 {
        let id = Uuid::new_v4();
        let miss = lease(cache.as_ref(), id).await;
        let racers = [0, 1, 2, 3].map(|racer| {
            let cache = cache.clone();
            tokio::spawn(async move {
                match racer {
                    0 => drop(cache.fill(id, miss, doc(1), TTL).await.unwrap()),
                    1 => drop(cache.put(id, doc(2), TTL).await.unwrap()),
                    2 => cache.purge(&[id]).await.unwrap(),
                    _ => cache.remove(id, TTL).await.unwrap(),
                }
            })
        });
        for racer in racers {
            racer.await.unwrap();
        }
        if let Lookup::Hit(body) = cache.get(id, Lease::random()).await.unwrap() {
            panic!("a removed entry came back: {body:?}");
        }
    }
}

pub async fn purges_and_clears(cache: &dyn Cache) {
    let (kept, purged) = (Uuid::new_v4(), Uuid::new_v4());
    filled(cache, kept, 1, TTL).await;
    filled(cache, purged, 1, TTL).await;
    cache.purge(&[purged]).await.unwrap();
    assert_eq!(cache.get(kept, Lease::random()).await.unwrap(), hit(1), "a purge keeps other entries");
    filled(cache, purged, 1, TTL).await;
    cache.clear().await.unwrap();
    lease(cache, kept).await;
    lease(cache, purged).await;
    cache.ping().await.unwrap();
}

macro_rules! cache_conformance {
    ($backend:ident, $open:expr) => {
        conformance!(
            $backend,
            $open,
            cases: [
                misses_then_hits,
                a_miss_keeps_the_lease_already_handed_out,
                a_write_voids_the_leases_handed_out_before,
                an_invalidation_empties_the_entry_and_voids_earlier_leases,
                an_invalidation_keeps_a_removal,
                a_purge_voids_the_leases_handed_out_before,
                a_write_replaces_only_an_older_document,
                a_write_after_an_eviction_stores_no_document,
                removal_blocks_late_fills_and_writes,
                entries_expire_after_their_ttl,
                purges_and_clears,
            ],
            shared: [racing_fills_and_writes_leave_the_newest, removals_win_races_with_fills_writes_and_purges]
        );
    };
}

async fn memory() -> Option<(Arc<dyn Cache>, ())> {
    Some((support::memory_cache(), ()))
}

/// Each test gets its own key namespace on the shared server.
async fn redis() -> Option<(Arc<dyn Cache>, ())> {
    let server = services::shared_redis()?;
    let namespace = format!("test-{}", Uuid::new_v4().simple());
    Some((Arc::new(RedisCache::connect(&server.url(), &namespace).unwrap()), ()))
}

cache_conformance!(memory_backend, super::memory());
cache_conformance!(redis_backend, super::redis());
