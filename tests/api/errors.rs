//! Bad input: each gets a problem+json with a stable code, and changes nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::backends::{OnBackend, every_backend};
use crate::support::{TestApp, TestResponse, json_request, policy};

/// Asserts a 422 `validation_failed` whose detail names `field` first.
fn assert_refused_field(response: &TestResponse, field: &str, context: &str) {
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{context}: {}", response.text());
    response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let detail = response.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with(&format!("{field}: ")), "{context}: {detail}");
}

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

#[tokio::test]
async fn nul_is_refused_alike_on_every_backend() {
    for OnBackend { name, app, .. } in every_backend().await {
        let id = thread_with_one_turn(&app).await;
        let turns = format!("/v1/threads/{id}/turns");
        let turn = |extra: Value| {
            let mut body = json!({"role": "user", "content": "hi"});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            body
        };
        let cases = [
            ("/v1/threads", json!({"title": "a\u{0}b"}), "title"),
            ("/v1/threads", json!({"metadata": {"k": {"deep": ["ok", "a\u{0}"]}}}), "metadata.k.deep[1]"),
            ("/v1/threads", json!({"metadata": {"k": {"a\u{0}": 1}}}), "metadata.k (a key)"),
            (&turns, turn(json!({"content": "a\u{0}"})), "content"),
            (&turns, turn(json!({"files": ["ok", "a\u{0}"]})), "files[1]"),
            (&turns, turn(json!({"model_provider": "a\u{0}"})), "model_provider"),
            (&turns, turn(json!({"model_name": "a\u{0}"})), "model_name"),
            (&turns, turn(json!({"tool_name": "a\u{0}"})), "tool_name"),
            (&turns, turn(json!({"metadata": {"k": "\u{0}"}})), "metadata.k"),
            ("/v1/tools/echo/runs", json!({"input": "a\u{0}"}), "input"),
            ("/v1/tools/echo/runs", json!({"input": "a\u{0}", "continuation_id": id}), "input"),
        ];
        for (uri, body, field) in cases {
            assert_refused_field(&app.post_json(uri, &body).await, field, &format!("{name} {body}"));
        }
        assert_refused_field(&app.get("/v1/threads?q=%00").await, "q", name);
        assert_refused_field(&app.get("/v1/runs?tool=%00").await, "tool", name);
        assert_unchanged(&app, &id).await;
        assert_eq!(app.get("/v1/threads").await.json()["data"].as_array().unwrap().len(), 1, "{name}");
        assert_eq!(app.get("/v1/runs").await.json()["data"], json!([]), "{name}");
    }
}

/// Numbers at the edges of what JSON parsers hold. Each is refused with 422 naming the
/// field, or reads back as the exact JSON the creation answered with, wherever it is read.
#[tokio::test]
async fn numbers_read_back_exactly_or_are_refused_on_every_backend() {
    let refused = ["-0.0", "-0", "1e400", "-1e400"];
    let accepted = [
        "1.7976931348623157e308",
        "1.7e308",
        "1e300",
        "5e-324",
        "0.1",
        "18446744073709551615",
        "-9223372036854775808",
        "18446744073709551616",
        "100000000000000000000000000000",
    ];
    let deep = (0..40).fold("1".to_owned(), |inner, _| format!("{{\"k\": {inner}}}"));
    for OnBackend { name, app, .. } in every_backend().await {
        let too_deep = format!("metadata.n{}", ".k".repeat(31));
        let cases = refused.map(|text| (text, "metadata.n"));
        for (text, field) in cases.into_iter().chain([(deep.as_str(), too_deep.as_str())]) {
            let body = format!(r#"{{"title": "refused", "metadata": {{"n": {text}}}}}"#);
            let response = app.send(json_request("/v1/threads", body)).await;
            assert_refused_field(&response, field, &format!("{name} {text}"));
        }
        assert_eq!(app.get("/v1/threads").await.json()["data"], json!([]), "{name}: nothing written");

        for text in accepted {
            let context = format!("{name} {text}");
            let metadata = format!(r#"{{"n": {text}}}"#);
            let body = format!(r#"{{"title": "n {text}", "metadata": {metadata}}}"#);
            let created = app.send(json_request("/v1/threads", body)).await;
            assert_eq!(created.status, StatusCode::CREATED, "{context}: {}", created.text());
            let written = created.json()["metadata"].to_string();
            let expected: Value = serde_json::from_str(&metadata).unwrap();
            assert_eq!(written, expected.to_string(), "{context}: as parsed");
            let id = created.json()["id"].as_str().unwrap().to_owned();
            let turn = format!(r#"{{"role": "user", "content": "hi", "metadata": {metadata}}}"#);
            let appended = app.send(json_request(&format!("/v1/threads/{id}/turns"), turn)).await;
            assert_eq!(appended.status, StatusCode::CREATED, "{context}: {}", appended.text());
            assert_eq!(appended.json()["metadata"].to_string(), written, "{context}: appended turn");

            let thread = app.get(&format!("/v1/threads/{id}")).await.json();
            let listed = app.get("/v1/threads?limit=1").await.json();
            let page = app.get(&format!("/v1/threads/{id}/turns")).await.json();
            let history = app.get(&format!("/v1/threads/{id}/history")).await.json();
            for (what, read) in [
                ("thread", &thread["metadata"]),
                ("thread's turn", &thread["turns"][0]["metadata"]),
                ("list page", &listed["data"][0]["metadata"]),
                ("turn page", &page["data"][0]["metadata"]),
                ("history", &history["turns"][0]["metadata"]),
            ] {
                assert_eq!(read.to_string(), written, "{context}: {what}");
            }
        }
    }
}

/// Only a body that is not JSON is 400; JSON of the wrong shape is 422 naming the field,
/// in the API's words rather than the server's types, and writes nothing.
#[tokio::test]
async fn well_formed_json_that_breaks_the_schema_is_422() {
    let app = TestApp::new().await;
    let id = thread_with_one_turn(&app).await;
    let turns = format!("/v1/threads/{id}/turns");
    let cases = [
        ("/v1/threads", r#"["t", "chat", null, {}]"#, "body"),
        ("/v1/threads", r#""a title""#, "body"),
        ("/v1/threads", "null", "body"),
        ("/v1/threads", r#"{"title": 5}"#, "title"),
        ("/v1/threads", r#"{"parent_id": []}"#, "parent_id"),
        (&turns, r#"["user", "hi", null, [], null, null, {}]"#, "body"),
        (&turns, r#"{"role": null, "content": "hi"}"#, "role"),
        (&turns, r#"{"role": 1, "content": "hi"}"#, "role"),
        (&turns, r#"{"role": [], "content": "hi"}"#, "role"),
        (&turns, r#"{"role": {}, "content": "hi"}"#, "role"),
        (&turns, r#"{"role": "user", "content": "hi", "files": [1]}"#, "files[0]"),
        (&turns, r#"{"role": "user", "content": "hi", "files": "a.rs"}"#, "files"),
        (&turns, r#"{"role": "user", "content": "hi", "model_name": false}"#, "model_name"),
        ("/v1/tools/echo/runs", r#"["hello"]"#, "body"),
        ("/v1/tools/echo/runs", r#"{"input": "hi", "timeout_secs": "soon"}"#, "timeout_secs"),
        ("/v1/tools/echo/runs", r#"{"input": "hi", "timeout_secs": -1}"#, "timeout_secs"),
        ("/v1/tools/echo/runs", r#"{"input": "hi", "wait": "yes"}"#, "wait"),
    ];
    for (uri, body, field) in cases {
        let response = app.send(json_request(uri, body)).await;
        assert_refused_field(&response, field, body);
        let detail = response.json()["detail"].as_str().unwrap().to_owned();
        for rust in ["struct", "NewTurn", "NewThread", "NewRun", "u32", "sequence", "map", "line 1"] {
            assert!(!detail.contains(rust), "{body}: {detail}");
        }
    }
    for not_json in [r#"{"role": "user", "content": "#, "{'a': 1}", "[1,]", ""] {
        let response = app.send(json_request(&turns, not_json)).await;
        response.assert_problem(StatusCode::BAD_REQUEST, "malformed_json");
    }
    assert_unchanged(&app, &id).await;
    assert_eq!(app.get("/v1/threads").await.json()["data"].as_array().unwrap().len(), 1);
    assert_eq!(app.get("/v1/runs").await.json()["data"], json!([]));
    let spaced = app.send(json_request("/v1/threads", " \n\t{\"title\": \"spaced\"} \n")).await;
    assert_eq!(spaced.status, StatusCode::CREATED, "whitespace around an object is fine");
}
