//! Relays that fail: Redis stalled, killed or restarted, Postgres dropping its listening
//! connections or restarting; and many watchers on one relay's connection.

use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

use super::harness::{
    Events, LEASE_SECS, Replicas, SLOW_MS, backends, cancel, eventually, leases, listeners,
};
use crate::support;
use crate::support::runs::{get_json, start_run};
use crate::support::services::{self, PostgresServer, RedisServer};

/// With one replica's run watched and another stalled through the other replica, Redis
/// fails: the watcher still gets the final event from the store, and a cancel still
/// reaches the owner through the store.
async fn watch_and_cancel_while_redis_fails(fail: fn(&mut RedisServer)) {
    let (Some(database), Some(mut redis)) = (services::postgres_database(), RedisServer::start()) else {
        return support::skip("no PostgreSQL or Redis for two processes to share");
    };
    let store_env = [("DATABASE_URL", database.as_str()), ("REDIS_URL", &redis.url())];
    let replicas = Replicas::start(&store_env, LEASE_SECS).await;
    let stalled = replicas.stalled_run().await;
    let slow = start_run(&replicas.owner, "slow").await;
    let mut watcher = Events::follow(&replicas.other, &slow).await;
    let (event, _) = watcher.next_within(leases(3)).await;
    assert_eq!(event, "progress", "the relay works before it fails");

    fail(&mut redis);
    let patience = Duration::from_millis(SLOW_MS) + leases(3);
    let (event, seen) = watcher.last_within(patience).await;
    assert_eq!((event.as_str(), &seen["output"]), ("completed", &json!("seen: long job")), "{seen}");

    let (status, cancelled) = cancel(&replicas.other, &stalled, leases(3)).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")), "{cancelled}");
    replicas.upstream_connections(0).await;
    assert_eq!(get_json(&replicas.owner, &format!("/v1/runs/{stalled}")).await, cancelled);
}

#[tokio::test]
async fn a_run_is_watched_and_cancelled_through_the_store_while_redis_is_stalled() {
    watch_and_cancel_while_redis_fails(|redis| redis.freeze()).await;
}

#[tokio::test]
async fn a_run_is_watched_and_cancelled_through_the_store_once_redis_is_killed() {
    watch_and_cancel_while_redis_fails(RedisServer::kill).await;
}

#[tokio::test]
async fn events_and_cancels_come_through_again_once_postgres_drops_the_listeners() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    // A lease so long that the store, read every quarter of it, cannot stand in for the
    // relay within the deadlines below.
    let lease_secs = 120;
    let replicas = Replicas::start(&[("DATABASE_URL", &database)], lease_secs).await;
    let admin = PgPool::connect(&database).await.unwrap();
    let relisten = Duration::from_secs(10);
    eventually("both replicas listen for cancels", relisten, async || listeners(&admin).await.len() == 2)
        .await;
    let run = replicas.stalled_run().await;
    let mut watcher = Events::follow(&replicas.other, &run).await;
    assert_eq!(watcher.next_within(relisten).await.0, "progress");

    let cut = listeners(&admin).await;
    let terminated: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
            .bind(&cut)
            .fetch_all(&admin)
            .await
            .unwrap();
    assert_eq!(terminated, [true, true], "one listening connection per replica: {cut:?}");

    // At most one progress event was on its way when the watcher's connection went.
    for _ in 0..3 {
        assert_eq!(watcher.next_within(relisten).await.0, "progress");
    }
    eventually("both replicas listen for cancels again", relisten, async || {
        let now = listeners(&admin).await;
        now.len() == 2 && now.iter().all(|pid| !cut.contains(pid))
    })
    .await;
    let (status, cancelled) = cancel(&replicas.other, &run, relisten).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")), "{cancelled}");
    replicas.upstream_connections(0).await;
}
/// A watcher on the other replica follows a stalled run through the relay; the relay's
/// server goes away (`fail`) and comes back (`recover`): the watcher gets progress again,
/// and a cancel through the other replica still stops the run.
async fn progress_comes_through_again_once_the_relay_is_back(
    store_env: &[(&str, &str)],
    fail: impl FnOnce(),
    recover: impl FnOnce(),
) {
    let replicas = Replicas::start(store_env, LEASE_SECS).await;
    let run = replicas.stalled_run().await;
    let mut watcher = Events::follow(&replicas.other, &run).await;
    assert_eq!(watcher.next_within(leases(3)).await.0, "progress", "the relay works before it fails");

    fail();
    tokio::time::sleep(leases(1)).await;
    recover();
    // Progress comes every second; at most one was on its way when the relay went.
    for _ in 0..2 {
        let (event, data) = watcher.next_within(leases(3)).await;
        assert_eq!(event, "progress", "{data}");
    }
    let (status, cancelled) = cancel(&replicas.other, &run, leases(3)).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")), "{cancelled}");
    replicas.upstream_connections(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_comes_through_again_once_redis_is_back() {
    let (Some(database), Some(redis)) = (services::postgres_database(), RedisServer::start()) else {
        return support::skip("no PostgreSQL or Redis for two processes to share");
    };
    let store_env = [("DATABASE_URL", database.as_str()), ("REDIS_URL", &redis.url())];
    let redis = std::sync::Mutex::new(redis);
    let (fail, recover) = (|| redis.lock().unwrap().kill(), || redis.lock().unwrap().restart());
    progress_comes_through_again_once_the_relay_is_back(&store_env, fail, recover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_comes_through_again_once_postgres_is_back() {
    let Some(server) = PostgresServer::start() else {
        return support::skip("no PostgreSQL server to stop and start again");
    };
    let database = server.url(&server.migrated_database());
    let server = std::sync::Mutex::new(server);
    let (fail, recover) = (|| server.lock().unwrap().stop(), || server.lock().unwrap().restart());
    progress_comes_through_again_once_the_relay_is_back(&[("DATABASE_URL", &database)], fail, recover).await;
}

/// Many watchers of a run, on the replica that does not own it, share its one listening
/// connection: the relay's server's connections, as `connections` counts them, do not
/// grow by more than `allowance` with them, and each watcher gets the run's progress and end.
async fn watchers_on_another_replica_share_one_connection(
    store_env: &[(&str, &str)],
    connections: impl AsyncFn() -> i64,
    allowance: i64,
) {
    const WATCHERS: usize = 40;
    let replicas = Replicas::start(store_env, LEASE_SECS).await;
    let run = start_run(&replicas.owner, "slower").await;
    let mut first = Events::follow(&replicas.other, &run).await;
    assert_eq!(first.next_within(leases(3)).await.0, "progress");
    let before = connections().await;

    let following = (0..WATCHERS).map(|_| Events::follow(&replicas.other, &run));
    let mut watchers = futures_util::future::join_all(following).await;
    for watcher in &mut watchers {
        assert_eq!(watcher.next_within(leases(3)).await.0, "progress");
    }
    let during = connections().await;
    println!("relay connections: {before} with one watcher, {during} with {} watchers", WATCHERS + 1);
    assert!(during <= before + allowance, "{before} connections before the watchers, {during} with them");

    let patience = Duration::from_millis(2 * SLOW_MS) + leases(3);
    for watcher in watchers.iter_mut().chain([&mut first]) {
        let (event, run) = watcher.last_within(patience).await;
        assert_eq!(event, "completed", "{run}");
    }
}

#[tokio::test]
async fn watchers_on_another_replica_share_one_listening_connection() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    // The replica's store pool may open more backends for the watchers' reads, up to its
    // cap of 16; a connection per watcher would be 40 more.
    let admin = PgPool::connect(&database).await.unwrap();
    let connections = async || backends(&admin).await;
    watchers_on_another_replica_share_one_connection(&[("DATABASE_URL", &database)], connections, 16).await;
}

#[tokio::test]
async fn watchers_on_another_replica_share_one_pubsub_connection() {
    let (Some(database), Some(redis)) = (services::postgres_database(), RedisServer::start()) else {
        return support::skip("no PostgreSQL or Redis for two processes to share");
    };
    let store_env = [("DATABASE_URL", database.as_str()), ("REDIS_URL", &redis.url())];
    let client = redis::Client::open(redis.url()).unwrap();
    let admin = client.get_multiplexed_async_connection().await.unwrap();
    // Redis's clients subscribed to some channel: each replica's one, whatever it watches.
    let connections = async || {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut admin.clone()).await.unwrap();
        clients.lines().filter(|client| !client.contains(" sub=0 ")).count() as i64
    };
    watchers_on_another_replica_share_one_connection(&store_env, connections, 0).await;
}
