//! Turn endpoints: appending, limits, expiry, idempotency, paging.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{TimeDelta, Utc};
use exai::domain::NewThread;
use serde_json::json;
use uuid::Uuid;

use crate::support::{TestApp, json_request, policy};

#[tokio::test]
async fn appends_turns_in_order_and_counts_down() {
    let app = TestApp::start(policy(3), &[]).await;
    let id = app.create_thread(json!({})).await;
    let body = json!({
        "role": "assistant", "content": "answer", "tool_name": "chat", "files": ["x.md"],
        "model_provider": "kimi", "model_name": "kimi-k2", "metadata": {"tokens": 12}
    });
    let first = app.post_json(&format!("/v1/threads/{id}/turns"), &body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("x-turns-remaining"), Some("2"));
    let turn = first.json();
    assert_eq!((turn["seq"].as_u64(), turn["thread_id"].as_str()), (Some(1), Some(id.as_str())));
    for field in ["role", "content", "tool_name", "files", "model_provider", "model_name", "metadata"] {
        assert_eq!(turn[field], body[field], "{field}");
    }
    assert_eq!(app.append(&id, "second").await["seq"], 2);
    assert_eq!(app.append(&id, "third").await["seq"], 3);

    let refused =
        app.post_json(&format!("/v1/threads/{id}/turns"), &json!({"role": "user", "content": "4th"})).await;
    refused.assert_problem(StatusCode::CONFLICT, "turn_limit_reached");
    assert!(refused.json()["detail"].as_str().unwrap().contains("parent_id"));
    assert_eq!(app.get(&format!("/v1/threads/{id}")).await.json()["turn_count"], 3);
}

#[tokio::test]
async fn an_expired_thread_refuses_turns_with_410() {
    let app = TestApp::new().await;
    let old = NewThread::default();
    let thread =
        app.store().create_thread(Uuid::new_v4(), &old, Utc::now() - TimeDelta::hours(25)).await.unwrap();
    let refused = app
        .post_json(&format!("/v1/threads/{}/turns", thread.id), &json!({"role": "user", "content": "hi"}))
        .await;
    refused.assert_problem(StatusCode::GONE, "thread_expired");
    let detail = refused.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains(&format!("parent_id {}", thread.id)), "{detail}");
    assert_eq!(app.get(&format!("/v1/threads/{}", thread.id)).await.json()["turn_count"], 0);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_original_turn() {
    let app = TestApp::new().await;
    let id = app.create_thread(json!({})).await;
    let keyed = |content: &str| {
        let body = json!({"role": "user", "content": content}).to_string();
        let mut request = json_request(&format!("/v1/threads/{id}/turns"), body);
        request.headers_mut().insert("idempotency-key", "retry-42".parse().unwrap());
        request
    };
    let original = app.send(keyed("first try")).await;
    assert_eq!(original.status, StatusCode::CREATED);
    let replay = app.send(keyed("second try")).await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.json(), original.json());
    assert_eq!(replay.header("x-turns-remaining"), Some("19"));
    let thread = app.get(&format!("/v1/threads/{id}")).await.json();
    assert_eq!(thread["turn_count"], 1);
    assert_eq!(thread["turns"][0]["content"], "first try");
}

#[tokio::test]
async fn pages_through_turns() {
    let app = TestApp::new().await;
    let id = app.create_thread(json!({})).await;
    for i in 1..=5 {
        app.append(&id, &format!("turn {i}")).await;
    }
    let page = app.get(&format!("/v1/threads/{id}/turns?limit=2")).await.json();
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_cursor"], 2);
    let rest = app.get(&format!("/v1/threads/{id}/turns?after_seq=2&limit=10")).await.json();
    let seqs: Vec<u64> =
        rest["data"].as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(rest["next_cursor"], serde_json::Value::Null);
    let missing = Uuid::new_v4();
    app.get(&format!("/v1/threads/{missing}/turns"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "thread_not_found");
}

#[tokio::test]
async fn a_non_ascii_idempotency_key_is_refused() {
    let app = TestApp::new().await;
    let id = app.create_thread(json!({})).await;
    let request = Request::post(format!("/v1/threads/{id}/turns"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", axum::http::HeaderValue::from_bytes(b"caf\xe9").unwrap())
        .body(Body::from(json!({"role": "user", "content": "x"}).to_string()))
        .unwrap();
    app.send(request).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(app.get(&format!("/v1/threads/{id}")).await.json()["turn_count"], 0);
}
