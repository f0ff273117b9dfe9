//! Redis in front of a durable store, with the failures of the field report forced for
//! real: a Redis that is killed or frozen, a PostgreSQL that stops, slow cache fills.

use axum::http::StatusCode;
use futures_util::future::join_all;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

use exai::cache::{Cache, RedisCache};
use exai::store::{PostgresStore, Store};

use crate::cache_faults::CACHE_TIMEOUT;
use crate::support::services::{PostgresServer, RedisServer, postgres_database, shared_redis};
use crate::support::slow_store::slow_store;
use crate::support::{TestApp, TestResponse, memory_cache, policy, sqlite_store};

pub async fn eventually(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < give_up, "{what} did not happen within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn redis_cache(url: &str) -> Arc<dyn Cache> {
    Arc::new(RedisCache::connect(url, &format!("test-{}", Uuid::new_v4().simple())).unwrap())
}

/// A thread under traffic and the highest turn the service has acknowledged for it.
pub struct Watched {
    pub id: String,
    pub acknowledged: AtomicU64,
}

#[derive(Default, Debug)]
pub struct Report {
    pub requests: usize,
    pub failures: Vec<String>,
    pub stale_reads: usize,
    /// The longest any one request took.
    pub slowest: Duration,
}

impl Report {
    /// Every client's reports checked: no failure, no stale read, and no request that
    /// paid a queue of cache timeouts (one is 250 ms; the room above it is for the store
    /// and the scheduler of a busy two-core machine, where the fuzzer may run alongside).
    /// Returns the number of requests.
    pub fn check_all(reports: &[Report]) -> usize {
        let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(reports.iter().map(|r| r.stale_reads).sum::<usize>(), 0, "stale reads");
        let slowest = reports.iter().map(|r| r.slowest).max().unwrap_or_default();
        assert!(slowest < CACHE_TIMEOUT * 2 + Duration::from_millis(2500), "a request took {slowest:?}");
        reports.iter().map(|r| r.requests).sum()
    }
}

/// Sends one request, timing it into the report.
async fn timed(report: &mut Report, request: impl Future<Output = TestResponse>) -> TestResponse {
    let started = Instant::now();
    let response = request.await;
    report.requests += 1;
    report.slowest = report.slowest.max(started.elapsed());
    response
}

/// One client: appends (if a writer) and reads, checking each read holds every turn
/// acknowledged before it was sent.
pub async fn client(
    app: Arc<TestApp>,
    threads: Arc<Vec<Watched>>,
    stop: Arc<AtomicBool>,
    writer: bool,
    offset: usize,
) -> Report {
    let mut report = Report::default();
    let mut i = offset;
    while !stop.load(Ordering::Relaxed) {
        let thread = &threads[i % threads.len()];
        i += 1;
        if writer {
            let body = json!({"role": "user", "content": format!("turn {i}")});
            let response =
                timed(&mut report, app.post_json(&format!("/v1/threads/{}/turns", thread.id), &body)).await;
            if response.status == StatusCode::CREATED {
                thread.acknowledged.fetch_max(response.json()["seq"].as_u64().unwrap(), Ordering::SeqCst);
            } else {
                report.failures.push(format!("append: {} {}", response.status, response.text()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let acknowledged = thread.acknowledged.load(Ordering::SeqCst);
        let response = timed(&mut report, app.get(&format!("/v1/threads/{}", thread.id))).await;
        if response.status != StatusCode::OK {
            report.failures.push(format!("read: {} {}", response.status, response.text()));
        } else if response.json()["turn_count"].as_u64().unwrap() < acknowledged {
            report.stale_reads += 1;
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_fails_no_request_and_serves_nothing_stale() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (store, _dir) = sqlite_store().await;
    let app = Arc::new(TestApp::with_backends(store, redis_cache(&redis.url()), policy(100_000)));
    let mut threads = Vec::new();
    for _ in 0..4 {
        threads.push(Watched { id: app.create_thread(json!({})).await, acknowledged: AtomicU64::new(0) });
    }
    let threads = Arc::new(threads);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> =
        (0..6).map(|n| tokio::spawn(client(app.clone(), threads.clone(), stop.clone(), n < 2, n))).collect();
    let stats = || app.state.conversations.cache_stats();
    let hits_grow = |from: u64| move || stats().since_start().hits > from + 50;

    eventually("cache hits", Duration::from_secs(10), hits_grow(0)).await;

    // Frozen: every call times out, and writes made meanwhile leave old entries behind.
    redis.freeze();
    let errors = stats().errors();
    eventually("cache errors while frozen", Duration::from_secs(10), || stats().errors() > errors).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.thaw();
    let hits = stats().since_start().hits;
    eventually("hits after thawing", Duration::from_secs(15), hits_grow(hits)).await;

    // Killed and replaced by an empty server on the same port.
    redis.kill();
    let errors = stats().errors();
    eventually("cache errors while down", Duration::from_secs(10), || stats().errors() > errors).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    let hits = stats().since_start().hits;
    eventually("hits after the restart", Duration::from_secs(15), hits_grow(hits)).await;

    stop.store(true, Ordering::Relaxed);
    let reports: Vec<Report> = join_all(clients).await.into_iter().map(Result::unwrap).collect();
    let requests = Report::check_all(&reports);
    assert!(requests > 200, "too little traffic to tell: {requests}");
}

/// Writers append to `thread_count` threads while readers read them through a Redis
/// that keeps evicting, and every store read pauses before its cache fill.
async fn race_fills_and_writes(thread_count: usize, writers: usize) {
    let Some(url) = postgres_database() else {
        return;
    };
    let Some(redis) = shared_redis() else { return };
    let postgres: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).unwrap());
    let slow = Arc::new(slow_store(postgres, Duration::from_millis(30)));
    let cache = redis_cache(&redis.url());
    let app = Arc::new(TestApp::with_backends(slow, cache.clone(), policy(100_000)));
    let mut threads = Vec::new();
    for _ in 0..thread_count {
        threads.push(Watched { id: app.create_thread(json!({})).await, acknowledged: AtomicU64::new(0) });
    }
    let threads = Arc::new(threads);
    let stop = Arc::new(AtomicBool::new(false));
    // Evicts entries all the time, as a full Redis would, so reads keep missing and
    // their slow fills keep racing the writers' updates.
    let evictor = {
        let (threads, stop, cache) = (threads.clone(), stop.clone(), cache.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = Uuid::parse_str(&threads[i % threads.len()].id).unwrap();
                // On a busy machine a call can time out: one eviction fewer, nothing else.
                let _ = cache.purge(&[id]).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(7)).await;
            }
        })
    };
    let clients: Vec<_> = (0..writers + 5)
        .map(|n| tokio::spawn(client(app.clone(), threads.clone(), stop.clone(), n < writers, n)))
        .collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    evictor.await.unwrap();
    let reports: Vec<Report> = join_all(clients).await.into_iter().map(Result::unwrap).collect();
    assert!(Report::check_all(&reports) > 200);
    // Only fills count here, never a write-through finding a newer document: so some
    // slow fill did race a write or an eviction.
    let stats = app.state.conversations.cache_stats();
    assert!(stats.rejected_fills() > 0, "no slow fill ever raced a write: the test proved nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_fills_never_hide_an_acknowledged_turn() {
    race_fills_and_writes(3, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_racing_on_one_thread_never_hide_an_acknowledged_turn() {
    race_fills_and_writes(1, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgres_fails_fast_with_503_and_recovery_needs_no_restart() {
    let Some(mut postgres) = PostgresServer::start() else {
        return;
    };
    let url = postgres.url(&postgres.migrated_database());
    let app =
        TestApp::with_backends(Arc::new(PostgresStore::connect(&url).unwrap()), memory_cache(), policy(20));
    let id = app.create_thread(json!({"title": "before the outage"})).await;
    app.append(&id, "kept").await;
    assert_eq!(app.get(&format!("/v1/threads/{id}")).await.status, StatusCode::OK, "fills the cache");

    postgres.stop();
    let cached = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(cached.status, StatusCode::OK, "a cached thread stays readable");
    for attempt in 0..3 {
        let started = Instant::now();
        let body = json!({"role": "user", "content": format!("lost {attempt}")});
        let refused = app.post_json(&format!("/v1/threads/{id}/turns"), &body).await;
        refused.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
        assert_eq!(refused.header("retry-after"), Some("2"));
        assert!(started.elapsed() < Duration::from_secs(10), "hung for {:?}", started.elapsed());
    }
    app.get("/v1/threads").await.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    // A write that failed without a clear answer may have committed: the cached copy of
    // that thread is no longer trusted, and reading it needs the store.
    let distrusted = app.get(&format!("/v1/threads/{id}")).await;
    distrusted.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");

    postgres.restart();
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let body = json!({"role": "user", "content": "after"});
        let response = app.post_json(&format!("/v1/threads/{id}/turns"), &body).await;
        if response.status == StatusCode::CREATED {
            assert_eq!(response.json()["seq"], 2, "nothing refused during the outage was written");
            break;
        }
        assert!(Instant::now() < give_up, "no recovery: {}", response.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
