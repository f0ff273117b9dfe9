//! `GET /v1/stats`: the ring of samples behind the dashboard, from the live counters.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use exai::stats::read_counters;
use serde_json::json;

use crate::support::{TestApp, policy};

#[tokio::test]
async fn stats_sample_requests_cache_reads_and_store_latency() {
    let app = TestApp::new().await;
    app.state.stats.record(read_counters(&app.state.stats_sources()));
    let thread = app.create_thread(json!({"title": "sampled"})).await;
    app.get(&format!("/v1/threads/{thread}")).await;
    app.get(&format!("/v1/threads/{thread}")).await;
    app.get("/v1/no-such-route").await;
    app.state.stats.record(read_counters(&app.state.stats_sources()));

    let stats = app.get("/v1/stats").await;
    assert_eq!(stats.status, StatusCode::OK);
    let body = stats.json();
    assert_eq!(body["interval_seconds"], 10);
    assert_eq!(body["capacity"], 360);
    let samples = body["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1, "{body}");
    assert!(samples[0]["requests_per_second"].as_f64().unwrap() > 0.0, "{body}");
    assert!(samples[0]["cache_lookups"].as_u64().unwrap() >= 2, "{body}");
    assert!(body["cache_since_start"]["hits"].as_u64().unwrap() >= 1, "{body}");
    let operations = body["store_latency"].as_array().unwrap();
    let create = operations.iter().find(|op| op["op"] == "create_thread").expect("create_thread timed");
    assert_eq!(create["backend"], "sqlite");
    assert!(create["calls"].as_u64().unwrap() >= 1);
    assert!(create["p99_ms"].as_f64().unwrap() >= create["p50_ms"].as_f64().unwrap());
}

#[tokio::test]
async fn stats_need_a_key_when_keys_are_configured() {
    let app = TestApp::start(policy(20), &["stats-key"]).await;
    app.get("/v1/stats").await.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let request = Request::get("/v1/stats")
        .header(header::AUTHORIZATION, "Bearer stats-key")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::OK);
}
