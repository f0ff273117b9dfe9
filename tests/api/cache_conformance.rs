//! One behaviour for every cache backend.

use bytes::Bytes;
use exai::cache::{Cache, CachedThread, Fill, RedisCache};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::support;
use crate::support::services;

const TTL: Duration = Duration::from_secs(60);

fn doc(version: i64) -> CachedThread {
    CachedThread { version, body: Bytes::from(format!("{{\"version\":{version}}}")) }
}

pub async fn misses_then_hits(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    assert_eq!(cache.get(id).await.unwrap(), None);
    assert_eq!(cache.put(id, doc(1), TTL).await.unwrap(), Fill::Stored);
    assert_eq!(cache.get(id).await.unwrap(), Some(doc(1).body));
}

pub async fn never_replaces_a_newer_version(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    cache.put(id, doc(5), TTL).await.unwrap();
    assert_eq!(cache.put(id, doc(4), TTL).await.unwrap(), Fill::Stale);
    assert_eq!(cache.put(id, doc(5), TTL).await.unwrap(), Fill::Stale);
    assert_eq!(cache.get(id).await.unwrap(), Some(doc(5).body));
    assert_eq!(cache.put(id, doc(6), TTL).await.unwrap(), Fill::Stored);
    assert_eq!(cache.get(id).await.unwrap(), Some(doc(6).body));
}

pub async fn removal_blocks_late_fills(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    cache.put(id, doc(1), TTL).await.unwrap();
    cache.remove(id, TTL).await.unwrap();
    assert_eq!(cache.get(id).await.unwrap(), None);
    assert_eq!(cache.put(id, doc(2), TTL).await.unwrap(), Fill::Stale);
    assert_eq!(cache.get(id).await.unwrap(), None);
}

pub async fn entries_expire_after_their_ttl(cache: &dyn Cache) {
    let id = Uuid::new_v4();
    cache.put(id, doc(1), Duration::from_millis(200)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.get(id).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "entry outlived its TTL by far");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn racing_fills_leave_the_newest(cache: Arc<dyn Cache>) {
    let id = Uuid::new_v4();
    let fills = (1..=50).rev().chain(1..=50).map(|version| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.put(id, doc(version), TTL).await.unwrap() })
    });
    for fill in fills.collect::<Vec<_>>() {
        fill.await.unwrap();
    }
    assert_eq!(cache.get(id).await.unwrap(), Some(doc(50).body));
}

pub async fn purges_and_clears(cache: &dyn Cache) {
    let (kept, purged) = (Uuid::new_v4(), Uuid::new_v4());
    cache.put(kept, doc(1), TTL).await.unwrap();
    cache.put(purged, doc(1), TTL).await.unwrap();
    cache.purge(&[purged]).await.unwrap();
    assert_eq!(cache.get(purged).await.unwrap(), None);
    assert_eq!(cache.put(purged, doc(1), TTL).await.unwrap(), Fill::Stored, "a purge leaves no marker");
    cache.clear().await.unwrap();
    assert_eq!(cache.get(kept).await.unwrap(), None);
    assert_eq!(cache.get(purged).await.unwrap(), None);
    cache.ping().await.unwrap();
}

macro_rules! cache_conformance {
    ($backend:ident, $open:expr) => {
        conformance!(
            $backend,
            $open,
            cases: [
                misses_then_hits,
                never_replaces_a_newer_version,
                removal_blocks_late_fills,
                entries_expire_after_their_ttl,
                purges_and_clears,
            ],
            shared: [racing_fills_leave_the_newest]
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
