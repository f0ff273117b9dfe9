//! Many clients appending to one thread at once.

use axum::http::StatusCode;
use futures_util::future::join_all;
use serde_json::json;

use crate::support::{TestApp, policy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_append_fifty_turns_each() {
    let app = std::sync::Arc::new(TestApp::start(policy(400), &[]).await);
    let id = app.create_thread(json!({"title": "busy"})).await;
    let clients = (0..8).map(|client| {
        let (app, id) = (app.clone(), id.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..50 {
                let body = json!({"role": "user", "content": format!("client {client} turn {i}")});
                statuses.push(app.post_json(&format!("/v1/threads/{id}/turns"), &body).await.status);
            }
            statuses
        })
    });
    let statuses: Vec<StatusCode> = join_all(clients).await.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(statuses.len(), 400);
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED), "{statuses:?}");

    let thread = app.get(&format!("/v1/threads/{id}")).await.json();
    assert_eq!(thread["turn_count"], 400);
    let seqs: Vec<u64> =
        thread["turns"].as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    let refused =
        app.post_json(&format!("/v1/threads/{id}/turns"), &json!({"role": "user", "content": "401"})).await;
    refused.assert_problem(StatusCode::CONFLICT, "turn_limit_reached");
}
