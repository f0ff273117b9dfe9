//! Bad input: each gets a problem+json with a stable code, and changes nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use uuid::Uuid;

use crate::support::{TestApp, json_request, policy};

async fn thread_with_one_turn(app: &TestApp) -> String {
    let id = app.create_thread(json!({"title": "keep me"})).await;
    app.append(&id, "original").await;
    id
}

async fn assert_unchanged(app: &TestApp, id: &str) {
    let thread = app.get(&format!("/v1/threads/{id}")).await.json();
    assert_eq!(thread["turn_count"], 1);
    assert_eq!(thread["turns"][0]["content"], "original");
}

#[tokio::test]
async fn malformed_turns_are_refused_and_nothing_is_written() {
    let app = TestApp::new().await;
    let id = thread_with_one_turn(&app).await;
    let uri = format!("/v1/threads/{id}/turns");
    let huge = "x".repeat(1024 * 1024 + 1);
    let cases: [(&str, String, StatusCode, &str); 8] = [
        (
            "malformed JSON",
            r#"{"role": "user", "content": "#.into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "wrong type",
            json!({"role": "user", "content": 5}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "unknown role",
            json!({"role": "robot", "content": "hi"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "empty content",
            json!({"role": "user", "content": ""}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "missing content",
            json!({"role": "user"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "unknown field",
            json!({"role": "user", "content": "hi", "contnet": "typo"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "content over 1 MiB",
            json!({"role": "user", "content": huge}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "too many files",
            json!({"role": "user", "content": "hi", "files": vec!["f"; 65]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (case, body, status, code) in cases {
        let response = app.send(json_request(&uri, body)).await;
        assert_eq!(response.status, status, "{case}: {}", response.text());
        response.assert_problem(status, code);
    }
    assert_unchanged(&app, &id).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = TestApp::new().await;
    let id = thread_with_one_turn(&app).await;
    let body = json!({"role": "user", "content": "x".repeat(3 * 1024 * 1024)}).to_string();
    let response = app.send(json_request(&format!("/v1/threads/{id}/turns"), body)).await;
    response.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_unchanged(&app, &id).await;
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415() {
    let app = TestApp::new().await;
    let id = thread_with_one_turn(&app).await;
    let request = Request::post(format!("/v1/threads/{id}/turns"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(json!({"role": "user", "content": "hi"}).to_string()))
        .unwrap();
    app.send(request).await.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_unchanged(&app, &id).await;
}

#[tokio::test]
async fn malformed_threads_are_refused() {
    let app = TestApp::new().await;
    for body in [
        json!({"title": "x".repeat(201)}),
        json!({"tool_name": "Not Valid"}),
        json!({"metadata": {"blob": "x".repeat(17 * 1024)}}),
        json!({"metadata": [1, 2]}),
        json!({"parent_id": "not-a-uuid"}),
    ] {
        app.post_json("/v1/threads", &body)
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    assert_eq!(app.get("/v1/threads").await.json()["data"], json!([]));
}

#[tokio::test]
async fn bad_ids_and_unknown_threads() {
    let app = TestApp::new().await;
    for uri in ["/v1/threads/not-a-uuid", "/v1/threads/123/history", "/v1/threads/zz/turns"] {
        app.get(uri).await.assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
    }
    let unknown = Uuid::new_v4();
    app.get(&format!("/v1/threads/{unknown}"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "thread_not_found");
    let append = app
        .post_json(&format!("/v1/threads/{unknown}/turns"), &json!({"role": "user", "content": "hi"}))
        .await;
    append.assert_problem(StatusCode::NOT_FOUND, "thread_not_found");
}

#[tokio::test]
async fn bad_query_parameters() {
    let app = TestApp::new().await;
    for uri in [
        "/v1/threads?limit=0",
        "/v1/threads?limit=101",
        "/v1/threads?limit=many",
        "/v1/threads?status=sleeping",
        "/v1/threads?cursor=garbage",
    ] {
        app.get(uri).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = TestApp::new().await;
    app.get("/v2/threads").await.assert_problem(StatusCode::NOT_FOUND, "not_found");
    app.delete("/v1/threads").await.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn api_keys_guard_v1_but_not_probes() {
    let app = TestApp::start(policy(20), &["key-one", "key-two"]).await;
    let create = |auth: Option<&str>| {
        let mut request = json_request("/v1/threads", "{}");
        if let Some(auth) = auth {
            request.headers_mut().insert(header::AUTHORIZATION, auth.parse().unwrap());
        }
        request
    };
    for auth in [None, Some("Bearer wrong"), Some("Basic a2V5LW9uZQ=="), Some("Bearer key-one-more")] {
        let response = app.send(create(auth)).await;
        response.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(app.send(create(Some("Bearer key-two"))).await.status, StatusCode::CREATED);
    assert_eq!(app.send(create(Some("bearer key-one"))).await.status, StatusCode::CREATED);
    assert_eq!(app.get("/livez").await.status, StatusCode::OK);
    let unauthenticated_list = app.get("/v1/threads").await;
    unauthenticated_list.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_callers_request_id_is_echoed() {
    let app = TestApp::new().await;
    let request =
        Request::get("/v1/threads/nope").header("x-request-id", "trace-123").body(Body::empty()).unwrap();
    let response = app.send(request).await;
    assert_eq!(response.header("x-request-id"), Some("trace-123"));
    assert_eq!(response.json()["request_id"], "trace-123");
    let weird = Request::get("/livez").header("x-request-id", "has spaces").body(Body::empty()).unwrap();
    let replaced = app.send(weird).await;
    assert!(Uuid::try_parse(replaced.header("x-request-id").unwrap()).is_ok());
}
