//! Several exai processes on one PostgreSQL database: each owns the runs it starts and
//! keeps them while it lives; once it is gone, the others fail them within the lease.

use std::time::{Duration, Instant};

use crate::support::process::ExaiProcess;
use crate::support::runs::{
    get_json, replica_tools, run_once_ended, stalling_tools, start_run, watch_and_cancel,
};
use crate::support::services::RedisServer;
use crate::support::{self, postgrest, services, upstream};

#[tokio::test]
async fn a_run_is_failed_by_another_replica_only_once_its_owner_is_gone() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    let upstream = upstream::hanging();
    let data = tempfile::tempdir().unwrap();
    let tools = stalling_tools(data.path(), &upstream.url);
    let lease_secs = 2;
    let env = [
        ("DATABASE_URL", database.as_str()),
        ("EXAI_TOOLS_FILE", tools.as_str()),
        ("EXAI_RUN_LEASE_SECS", &lease_secs.to_string()),
    ];
    let owner = ExaiProcess::start(data.path(), &env);
    let run_path = format!("/v1/runs/{}", start_run(&owner, "stall").await);

    // A second process starts and sweeps at once, then every quarter lease; for three
    // leases the run stays its owner's.
    let other = ExaiProcess::start(data.path(), &env);
    let (first, second) = (get_json(&owner, "/healthz").await, get_json(&other, "/healthz").await);
    assert!(first["instance"].is_string() && first["instance"] != second["instance"], "{first} {second}");
    let watched_until = Instant::now() + Duration::from_secs(3 * lease_secs);
    while Instant::now() < watched_until {
        let run = get_json(&other, &run_path).await;
        assert!(run["status"] == "running" || run["status"] == "queued", "{run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    owner.kill();
    let run = run_once_ended(&other, &run_path, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("stopped before the run finished"), "{run}");
}

/// A run started on one process is watched and cancelled through another, on the store
/// (and cache) `store_env` names.
async fn watch_and_cancel_through_another_replica(store_env: &[(&str, &str)], relayed: bool) {
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let data = tempfile::tempdir().unwrap();
    let tools = replica_tools(data.path(), &upstream.url, &hanging.url);
    let mut env = vec![
        ("EXAI_TOOLS_FILE", tools.as_str()),
        ("EXAI_TOOL_PROGRESS_SECS", "1"),
        ("EXAI_RUN_LEASE_SECS", "2"),
        ("TEST_LLM_KEY", "sk-test"),
    ];
    env.extend_from_slice(store_env);
    let (owner, other) = (ExaiProcess::start(data.path(), &env), ExaiProcess::start(data.path(), &env));
    watch_and_cancel(&owner, &other, &other, &hanging, Some(relayed)).await;
}

#[tokio::test]
async fn a_run_is_watched_and_cancelled_through_another_replica_over_redis() {
    let (Some(database), Some(redis)) = (services::postgres_database(), RedisServer::start()) else {
        return support::skip("no PostgreSQL or Redis for two processes to share");
    };
    let store_env = [("DATABASE_URL", database.as_str()), ("REDIS_URL", &redis.url())];
    watch_and_cancel_through_another_replica(&store_env, true).await;
}

#[tokio::test]
async fn a_run_is_watched_and_cancelled_through_another_replica_over_postgres() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    watch_and_cancel_through_another_replica(&[("DATABASE_URL", &database)], true).await;
}

#[tokio::test]
async fn a_run_is_watched_and_cancelled_through_another_replica_over_the_store_alone() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for a PostgREST gateway");
    };
    let gateway = postgrest::start(&database, postgrest::SECRET_KEY).await;
    let store_env =
        [("SUPABASE_URL", gateway.url.as_str()), ("SUPABASE_SERVICE_ROLE_KEY", postgrest::SECRET_KEY)];
    watch_and_cancel_through_another_replica(&store_env, false).await;
}
