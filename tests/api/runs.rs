//! A run's deadline, progress, cancellation and clean-up, against upstreams that stall.

use axum::http::StatusCode;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::TestApp;
use crate::support::upstream::{self, hanging};

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < give_up, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tests that measure milliseconds take turns, so that a burst of 200 runs elsewhere in
/// this binary does not stand between a deadline and its effect.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tool(url: &str, extra: &str) -> String {
    format!("[[tools]]\nname = \"slow\"\nkind = \"http\"\nurl = \"{url}\"\n{extra}\n")
}

#[tokio::test]
async fn a_hanging_upstream_times_out_and_its_connection_is_closed() {
    let _turn = TIMING.lock().await;
    let upstream = hanging();
    let app = TestApp::with_tools(&tool(&upstream.url, "timeout_secs = 2"), &[]).await;
    let started = Instant::now();
    let response = app.post_json("/v1/tools/slow/runs", &json!({"input": "are you there?"})).await;
    // The upstream never answers: any answer is the timeout, and it must not come early.
    let took = started.elapsed();
    response.assert_problem(StatusCode::GATEWAY_TIMEOUT, "tool_timeout");
    assert!(took >= Duration::from_secs(2), "answered after {took:?}");
    eventually("the upstream seeing its connection closed", || {
        !upstream.closed_at.lock().unwrap().is_empty()
    })
    .await;
    let run = app.get(&format!("/v1/runs/{}", response.json()["run_id"].as_str().unwrap())).await.json();
    assert_eq!((run["status"].as_str(), run["timeout_secs"].as_u64()), (Some("timed_out"), Some(2)));
}

#[tokio::test]
async fn an_answer_after_the_deadline_appends_nothing() {
    let upstream = upstream::start().await;
    let app =
        TestApp::with_tools(&tool(&format!("{}/webhook?ms=1500", upstream.url), "timeout_secs = 1"), &[])
            .await;
    let thread = app.create_thread(json!({})).await;
    app.append(&thread, "before").await;
    let body = json!({"input": "too slow", "continuation_id": thread});
    app.post_json("/v1/tools/slow/runs", &body)
        .await
        .assert_problem(StatusCode::GATEWAY_TIMEOUT, "tool_timeout");
    assert_eq!(upstream.received.count(), 1);
    eventually("the upstream's call ending", || !upstream.received.endings().is_empty()).await;
    assert_eq!(upstream.received.endings(), [false], "the connection closed before any answer");
    let thread = app.get(&format!("/v1/threads/{thread}")).await.json();
    assert_eq!(thread["turn_count"], 1, "nothing appended");
}

#[tokio::test]
async fn progress_comes_every_interval_then_the_final_event() {
    let _turn = TIMING.lock().await;
    let upstream = upstream::start().await;
    let registry = tool(&format!("{}/webhook?ms=3500", upstream.url), "");
    let app = TestApp::with_tools(&registry, &[("EXAI_TOOL_PROGRESS_SECS", "1")]).await;
    let accepted =
        app.post_json("/v1/tools/slow/runs", &json!({"input": "take your time", "wait": false})).await;
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    let events = app.events(&format!("/v1/runs/{id}/events")).await;
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["progress", "progress", "progress", "completed"], "{events:?}");
    let elapsed: Vec<u64> = events[..3].iter().map(|e| e.1["elapsed_ms"].as_u64().unwrap()).collect();
    assert!(elapsed.windows(2).all(|w| w[1] > w[0]) && elapsed[0] >= 1000, "{elapsed:?}");
    assert!(events[0].1["message"].as_str().unwrap().contains("running"));
    assert_eq!(events[3].1["output"], "seen: take your time");

    // A late subscriber gets the final event alone, and its stream ends with it.
    let replay = app.events(&format!("/v1/runs/{id}/events")).await;
    assert_eq!(replay.len(), 1);
    assert_eq!(replay[0].0, "completed");
}

#[tokio::test]
async fn cancelling_closes_the_upstream() {
    let _turn = TIMING.lock().await;
    let upstream = hanging();
    let app = TestApp::with_tools(&tool(&upstream.url, "timeout_secs = 60"), &[]).await;
    let accepted = app.post_json("/v1/tools/slow/runs", &json!({"input": "never mind", "wait": false})).await;
    let run = accepted.json();
    eventually("the upstream receiving the call", || upstream.open.load(Ordering::SeqCst) == 1).await;

    let cancelled =
        app.post_json(&format!("/v1/runs/{}/cancel", run["id"].as_str().unwrap()), &json!({})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert_eq!(cancelled.json()["status"], "cancelled");
    // Long before the 60 s timeout could close it: the cancel did.
    eventually("the upstream seeing its connection closed", || upstream.open.load(Ordering::SeqCst) == 0)
        .await;

    let again = app.post_json(&format!("/v1/runs/{}/cancel", run["id"].as_str().unwrap()), &json!({})).await;
    again.assert_problem(StatusCode::CONFLICT, "run_finished");
    let missing = uuid::Uuid::new_v4();
    app.post_json(&format!("/v1/runs/{missing}/cancel"), &json!({}))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "run_not_found");
}

#[tokio::test]
async fn a_cancelled_runs_late_answer_appends_nothing() {
    let upstream = upstream::start().await;
    let app = TestApp::with_tools(&tool(&format!("{}/webhook?ms=800", upstream.url), ""), &[]).await;
    let accepted =
        app.post_json("/v1/tools/slow/runs", &json!({"input": "stop", "wait": false})).await.json();
    eventually("the upstream receiving the call", || upstream.received.count() == 1).await;
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(
        app.post_json(&format!("/v1/runs/{id}/cancel"), &json!({})).await.json()["status"],
        "cancelled"
    );
    eventually("the upstream's call ending", || !upstream.received.endings().is_empty()).await;
    assert_eq!(upstream.received.endings(), [false], "the connection closed before any answer");
    let thread =
        app.get(&format!("/v1/threads/{}", accepted["continuation_id"].as_str().unwrap())).await.json();
    assert_eq!(thread["turn_count"], 0, "nothing appended");
    assert_eq!(app.get(&format!("/v1/runs/{id}")).await.json()["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_stalled_runs_all_time_out_and_leave_nothing_behind() {
    let _turn = TIMING.lock().await;
    let upstream = hanging();
    let registry = tool(&upstream.url, "timeout_secs = 2\nmax_concurrency = 200");
    let app = std::sync::Arc::new(TestApp::with_tools(&registry, &[]).await);
    let runs = (0..200).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            app.post_json("/v1/tools/slow/runs", &json!({"input": format!("call {i}")})).await
        })
    });
    for response in futures_util::future::join_all(runs).await {
        response.unwrap().assert_problem(StatusCode::GATEWAY_TIMEOUT, "tool_timeout");
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 200, "every run reached the upstream");
    eventually("every upstream connection closed", || upstream.open.load(Ordering::SeqCst) == 0).await;
    assert_eq!(app.state.metrics.runs_in_flight.load(Ordering::SeqCst), 0);
    let listed = app.get("/v1/runs?tool=slow&status=timed_out&limit=100").await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 100);
    let cursor = listed["next_cursor"].as_str().unwrap();
    let rest =
        app.get(&format!("/v1/runs?tool=slow&status=timed_out&limit=100&cursor={cursor}")).await.json();
    assert_eq!(rest["data"].as_array().unwrap().len(), 100, "all 200 timed out");
}
