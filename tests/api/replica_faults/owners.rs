//! Owners that stop answering: paused past their lease, killed, cut off by a database
//! outage, or dying as a cancel is asked.

use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::Duration;

use super::harness::{
    Events, LEASE_SECS, Replicas, SLOW_MS, cancel, create_thread, ended, eventually, leases, turns_in_store,
};
use crate::support::runs::{get_json, start_run};
use crate::support::services::{self, PostgresServer};
use crate::support::{self, postgrest};

#[tokio::test]
async fn an_owner_paused_past_its_lease_records_nothing_for_the_run_another_replica_failed() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    let replicas = Replicas::start(&[("DATABASE_URL", &database)], LEASE_SECS).await;
    let client = reqwest::Client::new();
    let thread = create_thread(&replicas.other).await;

    // A caller waits on the owner for the answer of a slow run on the thread.
    let asked = client
        .post(replicas.owner.url("/v1/tools/slow/runs"))
        .json(&json!({"input": "late", "continuation_id": thread}));
    let waiting = tokio::spawn(asked.send());
    eventually("the slow run reached its upstream", Duration::from_secs(10), async || {
        replicas.upstream.received.count() == 1
    })
    .await;
    let listed = get_json(&replicas.other, "/v1/runs?tool=slow").await;
    let run = listed["data"][0]["id"].as_str().unwrap().to_owned();

    // The owner stops renewing; the other replica fails the run once the lease lapses.
    replicas.owner.pause();
    let failed = ended(&replicas.other, &run, leases(3)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("stopped before"), "{failed}");

    // The upstream answers while the owner sleeps; the owner reads the answer on waking.
    let patience = Duration::from_millis(SLOW_MS) + leases(3);
    eventually("the upstream answered", patience, async || replicas.upstream.received.endings() == [true])
        .await;
    replicas.owner.resume();

    // The waiting caller is told how the run ended in the store, not what the late answer said.
    let answer = waiting.await.unwrap().unwrap();
    let status = answer.status();
    let problem: Value = answer.json().await.unwrap();
    assert_eq!((status.as_u16(), &problem["code"]), (502, &json!("tool_failed")), "{problem}");
    assert_eq!(problem["detail"], failed["error"], "{problem}");
    for replica in [&replicas.owner, &replicas.other] {
        assert_eq!(get_json(replica, &format!("/v1/runs/{run}")).await, failed);
    }
    let admin = PgPool::connect(&database).await.unwrap();
    assert_eq!(turns_in_store(&admin, &thread).await, [] as [&str; 0]);

    // The owner goes on serving: its next run on the thread completes and is recorded once.
    let next = client
        .post(replicas.owner.url("/v1/tools/quick/runs"))
        .json(&json!({"input": "again", "continuation_id": thread}));
    let next: Value = next.send().await.unwrap().json().await.unwrap();
    assert_eq!(next["status"], "completed", "{next}");
    assert_eq!(turns_in_store(&admin, &thread).await, ["again", "seen: again"]);
    assert!(replicas.owner.errors().is_empty(), "{:?}", replicas.owner.errors());
}

/// Back from a pause past its lease, an owner finds that the other replica failed its
/// run: it stops the run (closing the upstream connection) rather than holding it and the
/// tool's slot until the run's timeout, and takes the recorded end for the run's. A cancel
/// asked meanwhile through the other replica is answered with that end.
async fn back_from_a_pause(cancel_meanwhile: bool) {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    let replicas = Replicas::start(&[("DATABASE_URL", &database)], LEASE_SECS).await;
    let run = replicas.stalled_run().await;

    replicas.owner.pause();
    let failed = if cancel_meanwhile {
        let (status, answered) = cancel(&replicas.other, &run, leases(3)).await;
        assert_eq!(status, 200, "{answered}");
        answered
    } else {
        ended(&replicas.other, &run, leases(3)).await
    };
    assert_eq!(failed["status"], "failed", "{failed}");
    replicas.owner.resume();
    replicas.upstream_connections(0).await;
    assert_eq!(get_json(&replicas.owner, &format!("/v1/runs/{run}")).await, failed);
    assert!(replicas.owner.errors().is_empty(), "{:?}", replicas.owner.errors());
}

#[tokio::test]
async fn an_owner_back_from_a_pause_stops_the_run_another_replica_failed() {
    back_from_a_pause(false).await;
}

#[tokio::test]
async fn a_cancel_asked_while_the_owner_is_paused_is_answered_with_the_recorded_end() {
    back_from_a_pause(true).await;
}

#[tokio::test]
async fn an_owner_killed_on_supabase_leaves_its_run_failed_for_the_other_replica() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for a PostgREST gateway");
    };
    let gateway = postgrest::start(&database, postgrest::SECRET_KEY).await;
    let store_env =
        [("SUPABASE_URL", gateway.url.as_str()), ("SUPABASE_SERVICE_ROLE_KEY", postgrest::SECRET_KEY)];
    let replicas = Replicas::start(&store_env, LEASE_SECS).await;
    let run = replicas.stalled_run().await;
    let mut watcher = Events::follow(&replicas.other, &run).await;

    replicas.owner.kill();
    // The lease lapses within one lease, a sweep comes within a quarter more, and the
    // watcher reads the store every quarter lease.
    let (event, seen) = watcher.last_within(leases(3)).await;
    assert_eq!((event.as_str(), &seen["status"]), ("failed", &json!("failed")), "{seen}");
    assert!(seen["error"].as_str().unwrap().contains("stopped before"), "{seen}");
    assert_eq!(get_json(&replicas.other, &format!("/v1/runs/{run}")).await, seen);
}

#[tokio::test]
async fn a_cancel_asked_as_the_owner_dies_ends_the_run_within_the_lease() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    let replicas = Replicas::start(&[("DATABASE_URL", &database)], LEASE_SECS).await;
    let run = replicas.stalled_run().await;

    replicas.owner.kill();
    // Nobody is left to cancel the run; it ends when its lease lapses, and the cancel
    // answers with that end.
    let (status, answered) = cancel(&replicas.other, &run, leases(3)).await;
    assert_eq!(status, 200, "{answered}");
    assert!(answered["status"] == "failed" || answered["status"] == "cancelled", "{answered}");
    assert_eq!(get_json(&replicas.other, &format!("/v1/runs/{run}")).await, answered);
    let (status, again) = cancel(&replicas.other, &run, leases(3)).await;
    assert_eq!((status, &again["code"]), (409, &json!("run_finished")), "{again}");
}

/// The database goes away for longer than a lease and comes back while a run waits for
/// its upstream: nobody could renew a lease meanwhile, and no process may take the
/// lapsed leases for abandoned runs before their owners have had a lease to renew them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_lease_fails_no_live_run() {
    let Some(mut server) = PostgresServer::start() else {
        return support::skip("no PostgreSQL server to stop and start again");
    };
    let database = server.url(&server.migrated_database());
    let replicas = Replicas::start(&[("DATABASE_URL", &database)], LEASE_SECS).await;
    let run = start_run(&replicas.owner, "slower").await;
    eventually("the run reached its upstream", Duration::from_secs(10), async || {
        replicas.upstream.received.count() == 1
    })
    .await;

    server.stop();
    tokio::time::sleep(leases(2)).await;
    server.restart();

    let patience = Duration::from_millis(2 * SLOW_MS) + leases(3);
    let finished = ended(&replicas.other, &run, patience).await;
    assert_eq!(
        (&finished["status"], &finished["output"]),
        (&json!("completed"), &json!("seen: long job")),
        "{finished}"
    );
}
