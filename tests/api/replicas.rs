//! Several exai processes on one PostgreSQL database: each owns the runs it starts and
//! keeps them while it lives; once it is gone, the others fail them within the lease.

use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::process::{run_once_ended, stalling_tools, start_run};
use crate::support::process::ExaiProcess;
use crate::support::services::RedisServer;
use crate::support::{self, postgrest, services, upstream};

async fn get(process: &ExaiProcess, path: &str) -> Value {
    reqwest::get(process.url(path)).await.unwrap().json().await.unwrap()
}

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
    let (first, second) = (get(&owner, "/healthz").await, get(&other, "/healthz").await);
    assert!(first["instance"].is_string() && first["instance"] != second["instance"], "{first} {second}");
    let watched_until = Instant::now() + Duration::from_secs(3 * lease_secs);
    while Instant::now() < watched_until {
        let run = get(&other, &run_path).await;
        assert!(run["status"] == "running" || run["status"] == "queued", "{run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    owner.kill();
    let run = run_once_ended(&other, &run_path, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("stopped before the run finished"), "{run}");
}

/// Two processes on the store (and cache) `store_env` names, with a tool that answers
/// after 2.5 s, one that streams, and one that never answers.
fn pair(store_env: &[(&str, &str)], upstream: &str, hanging: &str) -> (ExaiProcess, ExaiProcess, TempDir) {
    let data = tempfile::tempdir().unwrap();
    let tools = data.path().join("tools.toml");
    let registry = format!(
        "[[tools]]\nname = \"slow\"\nkind = \"http\"\nurl = \"{upstream}/webhook?ms=2500\"\n\
         [[tools]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"{upstream}/v1\"\napi_key_env = \"TEST_LLM_KEY\"\n\
         model = \"m\"\nstream = true\n\
         [[tools]]\nname = \"stall\"\nkind = \"http\"\nurl = \"{hanging}\"\ntimeout_secs = 120\n"
    );
    std::fs::write(&tools, registry).unwrap();
    let mut env = vec![
        ("EXAI_TOOLS_FILE", tools.to_str().unwrap()),
        ("EXAI_TOOL_PROGRESS_SECS", "1"),
        ("EXAI_RUN_LEASE_SECS", "2"),
        ("TEST_LLM_KEY", "sk-test"),
    ];
    env.extend_from_slice(store_env);
    (ExaiProcess::start(data.path(), &env), ExaiProcess::start(data.path(), &env), data)
}

/// The names of the events a run's stream sends, and the last one's data.
async fn event_names(process: &ExaiProcess, run: &str) -> (Vec<String>, Value) {
    let body =
        reqwest::get(process.url(&format!("/v1/runs/{run}/events"))).await.unwrap().text().await.unwrap();
    let names = body.lines().filter_map(|line| line.strip_prefix("event: ")).map(str::to_owned).collect();
    let last = body.lines().filter_map(|line| line.strip_prefix("data: ")).next_back().unwrap_or("null");
    (names, serde_json::from_str(last).unwrap())
}

/// A run started on one process is watched through the other (through a relay, its
/// progress and deltas too; through the store alone, its final event) and cancelled
/// through it (the owner's upstream connection closes).
async fn watch_and_cancel_through_another_replica(store_env: &[(&str, &str)], relayed: bool) {
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = pair(store_env, &upstream.url, &hanging.url);
    for (tool, on_the_way, output) in
        [("slow", "progress", "seen: long job"), ("llm", "delta", "Hello world")]
    {
        let run = start_run(&owner, tool).await;
        let (names, run) = event_names(&other, &run).await;
        assert_eq!(names.last().map(String::as_str), Some("completed"), "{names:?}");
        assert_eq!(names.iter().any(|name| name == on_the_way), relayed, "{names:?}");
        assert_eq!(run["output"], output, "{run}");
    }

    let stalled = start_run(&owner, "stall").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hanging.open.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the run never reached its upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel =
        reqwest::Client::new().post(other.url(&format!("/v1/runs/{stalled}/cancel"))).send().await.unwrap();
    assert_eq!(cancel.status(), 200);
    let run: Value = cancel.json().await.unwrap();
    assert_eq!(run["status"], "cancelled", "{run}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hanging.open.load(Ordering::SeqCst) != 0 {
        assert!(Instant::now() < deadline, "the upstream connection stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
