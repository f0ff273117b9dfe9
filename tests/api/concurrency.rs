//! Many clients writing to one thread at once, on every store backend: SQLite's single
//! writer serializes whatever the transaction does, so only Postgres (directly and
//! through PostgREST) proves that the row lock does.

use axum::http::StatusCode;
use exai::store::Store;
use futures_util::future::join_all;
use serde_json::json;
use std::sync::Arc;

use crate::support::upstream;
use crate::support::{TestApp, memory_cache, policy};

pub async fn eight_clients_append_fifty_turns_each(store: Arc<dyn Store>) {
    let app = Arc::new(TestApp::with_backends(store, memory_cache(), policy(400)));
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

/// A thread with room for ten runs of two turns: of fifteen parallel runs continuing it,
/// five are refused before their upstream is called, and the other ten are recorded.
pub async fn parallel_runs_never_call_the_upstream_for_an_answer_without_room(store: Arc<dyn Store>) {
    let upstream = upstream::start().await;
    let registry = format!(
        "[[tools]]\nname = \"hook\"\nkind = \"http\"\nurl = \"{}/webhook?ms=50\"\nmax_concurrency = 15\n",
        upstream.url
    );
    let app = Arc::new(TestApp::with_tools_over(store, &registry, &[], tempfile::tempdir().unwrap()));
    let thread = app.create_thread(json!({"title": "contended"})).await;
    let runs = (0..15).map(|i| {
        let (app, thread) = (app.clone(), thread.clone());
        tokio::spawn(async move {
            let body = json!({"input": format!("question {i}"), "continuation_id": thread});
            app.post_json("/v1/tools/hook/runs", &body).await
        })
    });
    let responses: Vec<_> = join_all(runs).await.into_iter().map(Result::unwrap).collect();
    let (mut completed, mut refused) = (0, 0);
    for response in &responses {
        match response.status {
            StatusCode::OK => completed += 1,
            _ => {
                response.assert_problem(StatusCode::CONFLICT, "turn_limit_reached");
                refused += 1;
            }
        }
    }
    assert_eq!((completed, refused), (10, 5));
    assert_eq!(upstream.received.count(), 10, "the upstream is called only for runs with room");
    let thread = app.get(&format!("/v1/threads/{thread}")).await.json();
    assert_eq!(thread["turn_count"], 20);
}

macro_rules! concurrency {
    ($backend:ident, $open:expr) => {
        conformance!(
            $backend,
            $open,
            cases: [],
            shared: [
                eight_clients_append_fifty_turns_each,
                parallel_runs_never_call_the_upstream_for_an_answer_without_room,
            ]
        );
    };
}

concurrency!(sqlite_backend, crate::store_conformance::sqlite());
concurrency!(postgres_backend, crate::store_conformance::postgres());
concurrency!(supabase_backend, crate::store_conformance::supabase());
