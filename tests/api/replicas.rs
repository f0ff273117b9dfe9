//! Several exai processes on one PostgreSQL database: each owns the runs it starts and
//! keeps them while it lives; once it is gone, the others fail them within the lease.

use serde_json::Value;
use std::time::{Duration, Instant};

use crate::process::{run_once_ended, stalling_tools, start_stalled_run};
use crate::support::process::ExaiProcess;
use crate::support::{self, services, upstream};

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
    let run_path = start_stalled_run(&owner).await;

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
