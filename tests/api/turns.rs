//! Turn endpoints: appending, limits, expiry, idempotency, paging.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{TimeDelta, Utc};
use exai::domain::NewThread;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::backends::{OnBackend, every_backend};
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

fn keyed(thread: &str, key: &str, body: &Value) -> Request<Body> {
    let mut request = json_request(&format!("/v1/threads/{thread}/turns"), body.to_string());
    request.headers_mut().insert("idempotency-key", key.parse().unwrap());
    request
}

/// A retry with the same key and body replays the original turn; the same key with any
/// field changed is refused, on every backend (the comparison sees what the store read back).
#[tokio::test]
async fn an_idempotency_key_replays_only_the_same_request() {
    for OnBackend { name, app, .. } in every_backend().await {
        let id = app.create_thread(json!({})).await;
        let body = json!({
            "role": "assistant", "content": "first try", "tool_name": "chat", "files": ["a.rs", "b.rs"],
            "model_provider": "glm", "model_name": "glm-4.6",
            "metadata": {"n": 1.7e308, "tiny": 5e-324, "big": 18446744073709551615u64, "nested": {"x": [0.1]}}
        });
        let original = app.send(keyed(&id, "retry-42", &body)).await;
        assert_eq!(original.status, StatusCode::CREATED, "{name}: {}", original.text());
        let replay = app.send(keyed(&id, "retry-42", &body)).await;
        assert_eq!(replay.status, StatusCode::OK, "{name}: {}", replay.text());
        assert_eq!(replay.json(), original.json(), "{name}");
        assert_eq!(replay.header("x-turns-remaining"), Some("19"), "{name}");

        let changes = [
            ("role", json!("user")),
            ("content", json!("second try")),
            ("tool_name", Value::Null),
            ("files", json!(["b.rs", "a.rs"])),
            ("model_provider", json!("kimi")),
            ("model_name", json!("glm-4.5")),
            ("metadata", json!({"n": 1.7e308})),
        ];
        for (field, value) in changes {
            let mut changed = body.clone();
            changed[field] = value;
            let refused = app.send(keyed(&id, "retry-42", &changed)).await;
            refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
        }
        let thread = app.get(&format!("/v1/threads/{id}")).await.json();
        assert_eq!(
            (thread["turn_count"].as_u64(), &thread["turns"][0]["content"]),
            (Some(1), &json!("first try"))
        );
    }
}

/// The server keys a tool run's turns `run:<run id>`: a client cannot use, or collide
/// with, that namespace.
#[tokio::test]
async fn clients_cannot_use_the_keys_of_tool_runs() {
    let app = TestApp::new().await;
    let run = app.post_json("/v1/tools/echo/runs", &json!({"input": "hello"})).await.json();
    let (thread, run_id) = (run["continuation_id"].as_str().unwrap(), run["id"].as_str().unwrap());
    let body = json!({"role": "user", "content": "hello"});
    for key in [format!("run:{run_id}"), "run:anything".into()] {
        let refused = app.send(keyed(thread, &key, &body)).await;
        refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(refused.json()["detail"].as_str().unwrap().contains("reserved"), "{}", refused.text());
    }
    assert_eq!(app.get(&format!("/v1/threads/{thread}")).await.json()["turn_count"], 2);
    let own = app.send(keyed(thread, &format!("client-run:{run_id}"), &body)).await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.text());
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
