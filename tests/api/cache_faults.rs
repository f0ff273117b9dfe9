//! The cache under forced faults, each interleaving made to happen for real: a proxy that
//! delays or holds Redis replies, a frozen Redis, a stopped PostgreSQL, and a store read
//! held until the test lets it go.

use axum::http::StatusCode;
use futures_util::future::join_all;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use exai::cache::{Cache, RedisCache};
use exai::store::PostgresStore;

use crate::dual_storage::redis_cache;
use crate::support::redis_proxy::DelayingProxy;
use crate::support::services::{PostgresServer, RedisServer, shared_redis};
use crate::support::slow_store::slow_store;
use crate::support::{TestApp, policy, sqlite_store};

/// The cache's bound on one call.
pub const CACHE_TIMEOUT: Duration = Duration::from_millis(250);

/// Reads the thread until the cache serves it, checking every read's turn count.
async fn read_until_hit(app: &TestApp, id: &str, turn_count: u64) {
    let stats = || app.state.conversations.cache_stats().since_start().hits;
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let hits = stats();
        let read = app.get(&format!("/v1/threads/{id}")).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text());
        assert_eq!(read.json()["turn_count"], turn_count, "a stale read");
        if stats() > hits {
            return;
        }
        assert!(Instant::now() < give_up, "the cache never served {id}");
    }
}

/// The interleaving that once left a stale entry, forced step by step: a fill that read the
/// store before a write made during a cool-down must not land after the write's purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_that_read_the_store_before_a_write_never_lands_after_it() {
    let Some(redis) = shared_redis() else { return };
    let proxy = DelayingProxy::start(redis.port).await;
    let (sqlite, _dir) = sqlite_store().await;
    let store = Arc::new(slow_store(sqlite, Duration::ZERO));
    let namespace = format!("test-{}", Uuid::new_v4().simple());
    let cache: Arc<dyn Cache> = Arc::new(RedisCache::connect(&proxy.url(), &namespace).unwrap());
    let app = Arc::new(TestApp::with_backends(store.clone(), cache, policy(100)));
    let stats = || app.state.conversations.cache_stats();
    let (thread, other) = (app.create_thread(json!({})).await, app.create_thread(json!({})).await);
    app.append(&thread, "first").await;
    read_until_hit(&app, &other, 0).await;
    // Redis evicts the thread's entry, whatever it held.
    let key = format!("{namespace}:thread:{thread}");
    let mut direct =
        redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut direct).await.unwrap();

    // Redis slows down, under the call timeout. A read misses, reads one turn from the
    // store, and is held before its fill.
    proxy.delay_replies(Duration::from_millis(100));
    let held = store.hook.gate.hold_next();
    let early_read = tokio::spawn({
        let (app, path) = (app.clone(), format!("/v1/threads/{thread}"));
        async move { app.get(&path).await }
    });
    held.reached.await.unwrap();

    // One reply is held past the timeout: the cache is left alone for a cool-down...
    proxy.hold_next_reply(Duration::from_millis(300));
    let errors = stats().errors();
    assert_eq!(app.get(&format!("/v1/threads/{other}")).await.status, StatusCode::OK);
    assert!(stats().errors() > errors, "the held reply timed out");
    // ...during which a write commits without updating the cache.
    assert_eq!(app.append(&thread, "second").await["seq"], 2);

    // The cool-down ends, the cache serves again, and the thread's entry is purged.
    read_until_hit(&app, &other, 0).await;
    let mut gone = false;
    let give_up = Instant::now() + Duration::from_secs(10);
    while !gone {
        assert!(Instant::now() < give_up, "the thread's entry was never purged");
        gone = redis::cmd("EXISTS").arg(&key).query_async::<i64>(&mut direct).await.unwrap() == 0;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Only now does the early read's fill reach Redis, promptly, so that it is refused
    // rather than timed out.
    proxy.delay_replies(Duration::ZERO);
    let rejected = stats().rejected_fills();
    held.release.send(()).unwrap();
    let early = early_read.await.unwrap();
    assert_eq!(early.json()["turn_count"], 1, "it read the store before the write");
    read_until_hit(&app, &thread, 2).await;
    assert_eq!(stats().rejected_fills(), rejected + 1, "the older fill was refused");
}

/// How long the slowest of `count` concurrent appends took, over `threads` in turn.
async fn slowest_append(app: &TestApp, threads: &[String], count: usize) -> Duration {
    let appends = (0..count).map(|n| async move {
        let started = Instant::now();
        let body = json!({"role": "user", "content": format!("turn {n}")});
        let response =
            app.post_json(&format!("/v1/threads/{}/turns", threads[n % threads.len()]), &body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
        started.elapsed()
    });
    join_all(appends).await.into_iter().max().unwrap()
}

/// With Redis frozen, each write pays at most one cache timeout, never one per writer
/// ahead of it: 16 appends to one thread, and 100 to different threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_frozen_no_write_waits_for_another_ones_timeout() {
    let Some(redis) = RedisServer::start() else { return };
    let (store, _dir) = sqlite_store().await;
    // Two services, so that the second batch does not start in the first one's cool-down.
    let one = TestApp::with_backends(store.clone(), redis_cache(&redis.url()), policy(100_000));
    let many = TestApp::with_backends(store, redis_cache(&redis.url()), policy(100_000));
    let shared = vec![one.create_thread(json!({})).await];
    let mut threads = Vec::new();
    for _ in 0..100 {
        threads.push(many.create_thread(json!({})).await);
    }
    // The store's own time for the same loads, Redis answering.
    let store_one = slowest_append(&one, &shared, 16).await;
    let store_many = slowest_append(&many, &threads, 100).await;

    redis.freeze();
    let frozen_one = slowest_append(&one, &shared, 16).await;
    let frozen_many = slowest_append(&many, &threads, 100).await;
    redis.thaw();
    // One timeout, and room for the store being slower on a busy machine; paying a
    // timeout per writer ahead took seconds.
    let bound = |store: Duration| store * 2 + CACHE_TIMEOUT * 3;
    assert!(frozen_one < bound(store_one), "one thread: {frozen_one:?}, store alone {store_one:?}");
    assert!(frozen_many < bound(store_many), "100 threads: {frozen_many:?}, store alone {store_many:?}");
    assert!(one.state.conversations.cache_stats().errors() > 0, "Redis was not frozen");
    assert!(many.state.conversations.cache_stats().errors() > 0, "Redis was not frozen");
}

/// Writes failing on one thread while PostgreSQL is down cost that thread its entry,
/// and no other thread anything: they are still served from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_costs_only_its_own_thread_entry() {
    let Some(mut postgres) = PostgresServer::start() else { return };
    let Some(redis) = shared_redis() else { return };
    let url = postgres.url(&postgres.migrated_database());
    let store = Arc::new(PostgresStore::connect(&url).unwrap());
    let app = TestApp::with_backends(store, redis_cache(&redis.url()), policy(20));
    let written = app.create_thread(json!({})).await;
    let mut others = Vec::new();
    for _ in 0..5 {
        let id = app.create_thread(json!({})).await;
        read_until_hit(&app, &id, 0).await;
        others.push(id);
    }
    read_until_hit(&app, &written, 0).await;

    postgres.stop();
    for round in 0..3 {
        let body = json!({"role": "user", "content": format!("lost {round}")});
        let refused = app.post_json(&format!("/v1/threads/{written}/turns"), &body).await;
        refused.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
        for id in &others {
            let read = app.get(&format!("/v1/threads/{id}")).await;
            assert_eq!(read.status, StatusCode::OK, "{id} after a failed write elsewhere: {}", read.text());
        }
    }
    // The thread whose write may have committed is read from the store again.
    let distrusted = app.get(&format!("/v1/threads/{written}")).await;
    distrusted.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
}
