//! After appends, whatever the cache holds is what a fresh read from the store gives:
//! after one append, after concurrent appends raced by reads that fill the cache, and
//! after a replay, on the in-process cache and on Redis; and across two processes
//! sharing one Redis.

use axum::http::StatusCode;
use chrono::Utc;
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use exai::cache::{Cache, Lease, Lookup, RedisCache};
use exai::store::{PostgresStore, Store};

use crate::dual_storage::redis_cache;
use crate::support::services::{PostgresServer, postgres_database, shared_redis};
use crate::support::slow_store::slow_store;
use crate::support::{TestApp, json_request, memory_cache, policy, sqlite_store};

/// Whether the cache holds the thread's document; if it does, it must be the one a fresh
/// store read gives.
async fn cached_matches_store(app: &TestApp, id: Uuid) -> bool {
    let cache = app.state.conversations.cache();
    let Lookup::Hit(body) = cache.get(id, Lease::random()).await.unwrap() else {
        return false;
    };
    let stored = app.store().get_thread(id).await.unwrap().expect("the thread exists");
    let view = stored.thread.view(Some(&stored.turns), app.state.conversations.policy(), Utc::now());
    let cached: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(cached, serde_json::to_value(view).unwrap(), "the cache holds another document");
    true
}

/// Reads the thread through the service until the cache holds it, then checks it.
async fn filled_and_matching(app: &TestApp, id: Uuid) {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let read = app.get(&format!("/v1/threads/{id}")).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text());
        if cached_matches_store(app, id).await {
            return;
        }
        assert!(Instant::now() < give_up, "the cache never held {id}");
    }
}

async fn append_keyed(app: &TestApp, id: Uuid, content: &str, key: &str) -> (StatusCode, Value) {
    let body = json!({"role": "user", "content": content}).to_string();
    let mut request = json_request(&format!("/v1/threads/{id}/turns"), body);
    request.headers_mut().insert("idempotency-key", key.parse().unwrap());
    let response = app.send(request).await;
    (response.status, response.json())
}

async fn appends_leave_the_cache_equal_to_the_store(store: Arc<dyn Store>, cache: Arc<dyn Cache>) {
    let app = TestApp::with_backends(store, cache, policy(1000));
    let id: Uuid = app.create_thread(json!({"title": "coherent"})).await.parse().unwrap();
    filled_and_matching(&app, id).await;

    app.append(&id.to_string(), "one").await;
    cached_matches_store(&app, id).await;
    filled_and_matching(&app, id).await;

    // Appends racing each other and reads that fill the cache between them.
    let path = format!("/v1/threads/{id}");
    let thread = id.to_string();
    let appends = (0..16).map(|n| {
        let (app, thread) = (&app, &thread);
        async move { app.append(thread, &format!("racing {n}")).await }
    });
    let reads = (0..16).map(|_| async { assert_eq!(app.get(&path).await.status, StatusCode::OK) });
    tokio::join!(join_all(appends), join_all(reads));
    cached_matches_store(&app, id).await;
    filled_and_matching(&app, id).await;

    // A replay answers the first attempt's turn and leaves the cache right too.
    let (status, first) = append_keyed(&app, id, "once", "key-1").await;
    assert_eq!(status, StatusCode::CREATED);
    filled_and_matching(&app, id).await;
    let (status, replayed) = append_keyed(&app, id, "once", "key-1").await;
    assert_eq!((status, &replayed), (StatusCode::OK, &first));
    cached_matches_store(&app, id).await;
    filled_and_matching(&app, id).await;
    let read = app.get(&path).await.json();
    assert_eq!(read["turn_count"], 18);
    assert_eq!(read["turns"].as_array().unwrap().len(), 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_leave_the_in_process_cache_equal_to_the_store() {
    let (store, _dir) = sqlite_store().await;
    appends_leave_the_cache_equal_to_the_store(store, memory_cache()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_leave_redis_equal_to_the_store() {
    let Some(redis) = shared_redis() else { return };
    let (store, _dir) = sqlite_store().await;
    appends_leave_the_cache_equal_to_the_store(store, redis_cache(&redis.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_on_postgres_leave_redis_equal_to_the_store() {
    let Some(postgres) = PostgresServer::start() else { return };
    let Some(redis) = shared_redis() else { return };
    let url = postgres.url(&postgres.migrated_database());
    let store = Arc::new(PostgresStore::connect(&url).unwrap());
    appends_leave_the_cache_equal_to_the_store(store, redis_cache(&redis.url())).await;
}

/// Two processes on one store and one Redis. A read on one has missed and read the store,
/// and is held there; the other appends; a read on the first after that append must not
/// wait for the held read's answer, which is older than the append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_another_processs_write_never_waits_for_an_older_read() {
    let (Some(url), Some(redis)) = (postgres_database(), shared_redis()) else { return };
    let namespace = format!("test-{}", Uuid::new_v4().simple());
    let cache = || -> Arc<dyn Cache> { Arc::new(RedisCache::connect(&redis.url(), &namespace).unwrap()) };
    let postgres = || -> Arc<dyn Store> { Arc::new(PostgresStore::connect(&url).unwrap()) };
    let held_store = Arc::new(slow_store(postgres(), Duration::ZERO));
    let reader = Arc::new(TestApp::with_backends(held_store.clone(), cache(), policy(100)));
    let writer = TestApp::with_backends(postgres(), cache(), policy(100));
    let thread = writer.create_thread(json!({})).await;
    writer.append(&thread, "first").await;

    let path = format!("/v1/threads/{thread}");
    let held = held_store.hook.gate.hold_next();
    let early_read = tokio::spawn({
        let (reader, path) = (reader.clone(), path.clone());
        async move { reader.get(&path).await }
    });
    held.reached.await.unwrap();
    assert_eq!(writer.append(&thread, "second").await["seq"], 2);

    let late_read = tokio::spawn({
        let (reader, path) = (reader.clone(), path.clone());
        async move { reader.get(&path).await }
    });
    // A late read that joined the held one could only end once that is let go.
    let patience = Instant::now() + Duration::from_secs(10);
    while !late_read.is_finished() && Instant::now() < patience {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held.release.send(()).unwrap();
    assert_eq!(late_read.await.unwrap().json()["turn_count"], 2, "the late read answered the older read");
    assert_eq!(early_read.await.unwrap().json()["turn_count"], 1, "it read the store before the append");
}
