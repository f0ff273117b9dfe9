//! The OpenAPI document and the code agree: every status the API gives is documented for
//! its operation, and every documented limit is the one enforced.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, TestResponse, json_request, policy};

fn document() -> Value {
    serde_json::from_str(&exai::http::openapi().to_json().unwrap()).unwrap()
}

fn operation<'a>(document: &'a Value, method: &str, template: &str) -> &'a Value {
    let operation = &document["paths"][template][method.to_lowercase()];
    assert!(operation.is_object(), "{method} {template} is not in the document");
    operation
}

/// Asserts the response's status and media type are documented for the operation, and
/// that it carries the headers documented for that status.
fn assert_documented(document: &Value, method: &str, template: &str, response: &TestResponse) {
    let status = response.status.as_u16().to_string();
    let documented = &operation(document, method, template)["responses"][&status];
    assert!(
        documented.is_object(),
        "{method} {template} answered an undocumented {status}: {}",
        response.text()
    );
    for header in documented["headers"].as_object().into_iter().flat_map(|headers| headers.keys()) {
        assert!(response.header(header).is_some(), "{method} {template} {status} lacks its {header} header");
    }
    let media_type = response.header("content-type").map(|t| t.split(';').next().unwrap().trim());
    if let Some(media_type) = media_type {
        assert!(
            documented["content"][media_type].is_object(),
            "{method} {template} {status} answered undocumented {media_type}"
        );
    }
}

fn component<'a>(document: &'a Value, schema: &str, property: &str) -> &'a Value {
    &document["components"]["schemas"][schema]["properties"][property]
}

fn parameter<'a>(document: &'a Value, method: &str, template: &str, name: &str) -> &'a Value {
    let parameters = operation(document, method, template)["parameters"].as_array().unwrap();
    &parameters.iter().find(|p| p["name"] == name).unwrap()["schema"]
}

fn number(schema: &Value, keyword: &str) -> usize {
    schema[keyword].as_u64().unwrap_or_else(|| panic!("no {keyword} in {schema}")) as usize
}

const ID_ROUTES: [(&str, &str); 8] = [
    ("GET", "/v1/threads/{id}"),
    ("DELETE", "/v1/threads/{id}"),
    ("GET", "/v1/threads/{id}/history"),
    ("GET", "/v1/threads/{id}/turns"),
    ("POST", "/v1/threads/{id}/turns"),
    ("GET", "/v1/runs/{id}"),
    ("GET", "/v1/runs/{id}/events"),
    ("POST", "/v1/runs/{id}/cancel"),
];

const BODY_ROUTES: [&str; 3] = ["/v1/threads", "/v1/threads/{id}/turns", "/v1/tools/{name}/runs"];

fn request(method: &str, uri: &str, body: &str) -> Request<Body> {
    let mut request = json_request(uri, body.to_owned());
    *request.method_mut() = method.parse().unwrap();
    request
}

#[tokio::test]
async fn ids_are_read_in_their_hyphenated_form_only() {
    let app = TestApp::new().await;
    let document = document();
    let thread: Uuid = app.create_thread(json!({})).await.parse().unwrap();
    let turn = json!({"role": "user", "content": "hi"}).to_string();
    let upper = thread.hyphenated().to_string().to_uppercase();
    assert_eq!(app.get(&format!("/v1/threads/{upper}")).await.status, StatusCode::OK);
    let other_spellings =
        [thread.simple().to_string(), thread.braced().to_string(), thread.urn().to_string(), "zz".into()];
    for spelling in other_spellings {
        for (method, template) in ID_ROUTES {
            let uri = template.replace("{id}", &urlencoding(&spelling));
            let response = app.send(request(method, &uri, &turn)).await;
            response.assert_problem(StatusCode::BAD_REQUEST, "invalid_id");
            assert_documented(&document, method, template, &response);
        }
    }
    assert_eq!(app.get(&format!("/v1/threads/{thread}")).await.json()["turn_count"], 0);
}

/// Enough escaping for the spellings above: braces and colons travel as themselves.
fn urlencoding(raw: &str) -> String {
    raw.replace('{', "%7B").replace('}', "%7D")
}

#[tokio::test]
async fn bodies_that_cannot_be_read_get_documented_statuses() {
    let app = TestApp::new().await;
    let document = document();
    let thread = app.create_thread(json!({})).await;
    let too_large = format!("{{\"title\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    for template in BODY_ROUTES {
        let uri = template.replace("{id}", &thread).replace("{name}", "echo");
        let cases = [
            (request("POST", &uri, "{"), StatusCode::BAD_REQUEST, "malformed_json"),
            (request("POST", &uri, "\u{0}"), StatusCode::BAD_REQUEST, "malformed_json"),
            (request("POST", &uri, &too_large), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            (
                Request::post(&uri).body(Body::from("{}")).unwrap(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                request("POST", &uri, r#"{"unknown": 1}"#),
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            ),
        ];
        for (sent, status, code) in cases {
            let response = app.send(sent).await;
            response.assert_problem(status, code);
            assert_documented(&document, "POST", template, &response);
        }
    }
}

#[tokio::test]
async fn health_answers_are_documented() {
    let app = TestApp::new().await;
    let document = document();
    let bogus = app.get("/healthz?format=bogus").await;
    bogus.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_documented(&document, "GET", "/healthz", &bogus);
    let ietf = Request::get("/healthz").header(header::ACCEPT, "application/health+json");
    let ietf = app.send(ietf.body(Body::empty()).unwrap()).await;
    assert_eq!(ietf.header("content-type"), Some("application/health+json"));
    assert_documented(&document, "GET", "/healthz", &ietf);
    for format in ["json", "text"] {
        assert_documented(&document, "GET", "/healthz", &app.get(&format!("/healthz?format={format}")).await);
    }
}

#[tokio::test]
async fn appends_and_their_replays_are_documented() {
    let app = TestApp::new().await;
    let document = document();
    let thread = app.create_thread(json!({})).await;
    let append = || {
        let mut append =
            request("POST", &format!("/v1/threads/{thread}/turns"), r#"{"role": "user", "content": "hi"}"#);
        append.headers_mut().insert("idempotency-key", "retry-1".parse().unwrap());
        append
    };
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let response = app.send(append()).await;
        assert_eq!(response.status, expected);
        assert_documented(&document, "POST", "/v1/threads/{id}/turns", &response);
    }
}

#[tokio::test]
async fn an_unknown_parent_is_a_documented_422() {
    let app = TestApp::new().await;
    let response = app.post_json("/v1/threads", &json!({"parent_id": Uuid::new_v4()})).await;
    response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_documented(&document(), "POST", "/v1/threads", &response);
}

#[tokio::test]
async fn every_operation_behind_the_keys_documents_401() {
    let app = TestApp::start(policy(20), &["the-key"]).await;
    let document = document();
    let mut guarded = 0;
    for (template, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let uri = template.replace("{id}", &Uuid::new_v4().to_string()).replace("{name}", "echo");
            let response = app.send(request(&method.to_uppercase(), &uri, "{}")).await;
            let open = operation(&document, method, template)["security"] == json!([{}]);
            if open {
                assert_ne!(response.status, StatusCode::UNAUTHORIZED, "{method} {template}");
                continue;
            }
            response.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_documented(&document, method, template, &response);
            guarded += 1;
        }
    }
    assert_eq!(guarded, 15, "every /v1 operation and /metrics");
}

async fn status_of(app: &TestApp, method: &str, uri: &str, body: Value) -> StatusCode {
    app.send(request(method, uri, &body.to_string())).await.status
}

#[tokio::test]
async fn documented_body_limits_are_the_enforced_ones() {
    let app = TestApp::new().await;
    let document = document();
    let thread = app.create_thread(json!({})).await;
    let turns = format!("/v1/threads/{thread}/turns");
    let turn = |field: &str, value: Value| {
        let mut turn = json!({"role": "user", "content": "hi"});
        turn[field] = value;
        turn
    };
    let created = StatusCode::CREATED;
    let refused = StatusCode::UNPROCESSABLE_ENTITY;

    let title = number(component(&document, "NewThread", "title"), "maxLength");
    assert_eq!(status_of(&app, "POST", "/v1/threads", json!({"title": "é".repeat(title)})).await, created);
    assert_eq!(
        status_of(&app, "POST", "/v1/threads", json!({"title": "x".repeat(title + 1)})).await,
        refused
    );

    for schema in ["NewThread", "NewTurn"] {
        assert_eq!(component(&document, schema, "tool_name")["pattern"], "^[a-z0-9_-]{1,64}$");
    }
    for (name, expected) in [("a".repeat(64), created), ("a".repeat(65), refused), ("Chat".into(), refused)] {
        assert_eq!(status_of(&app, "POST", "/v1/threads", json!({"tool_name": name})).await, expected);
    }

    let content = component(&document, "NewTurn", "content");
    assert_eq!(number(content, "minLength"), 1);
    assert_eq!(status_of(&app, "POST", &turns, turn("content", json!(""))).await, refused);
    assert_eq!(number(content, "maxLength"), 1024 * 1024, "the limit in bytes bounds the characters too");

    for field in ["model_name", "model_provider"] {
        let max = number(component(&document, "NewTurn", field), "maxLength");
        assert_eq!(status_of(&app, "POST", &turns, turn(field, json!("m".repeat(max)))).await, created);
        assert_eq!(status_of(&app, "POST", &turns, turn(field, json!("m".repeat(max + 1)))).await, refused);
    }

    let files = component(&document, "NewTurn", "files");
    let (most, longest) = (number(files, "maxItems"), number(&files["items"], "maxLength"));
    assert_eq!(number(&files["items"], "minLength"), 1);
    let many = vec!["f".repeat(longest); most];
    assert_eq!(status_of(&app, "POST", &turns, turn("files", json!(many))).await, created);
    let too_many = vec!["f"; most + 1];
    assert_eq!(status_of(&app, "POST", &turns, turn("files", json!(too_many))).await, refused);
    for bad in ["f".repeat(longest + 1), String::new()] {
        assert_eq!(status_of(&app, "POST", &turns, turn("files", json!([bad]))).await, refused);
    }

    let input = component(&document, "NewRun", "input");
    assert_eq!(number(input, "minLength"), 1);
    assert_eq!(status_of(&app, "POST", "/v1/tools/echo/runs", json!({"input": ""})).await, refused);
    let timeout = component(&document, "NewRun", "timeout_secs");
    assert_eq!(number(timeout, "minimum"), 1);
    for (secs, expected) in [(json!(0), refused), (json!(1), StatusCode::OK), (json!(2.0), StatusCode::OK)] {
        let run = json!({"input": "hi", "timeout_secs": secs});
        assert_eq!(status_of(&app, "POST", "/v1/tools/echo/runs", run).await, expected, "{secs}");
    }
    let too_long = json!({"input": "hi", "timeout_secs": number(timeout, "maximum") as u64 + 1});
    assert_eq!(status_of(&app, "POST", "/v1/tools/echo/runs", too_long).await, refused);
}

#[tokio::test]
async fn documented_query_and_header_limits_are_the_enforced_ones() {
    let app = TestApp::new().await;
    let document = document();
    let thread = app.create_thread(json!({"title": "t"})).await;
    let lists = [
        ("/v1/threads", "/v1/threads".to_owned()),
        ("/v1/runs", "/v1/runs".to_owned()),
        ("/v1/threads/{id}/turns", format!("/v1/threads/{thread}/turns")),
    ];
    for (template, uri) in &lists {
        let limit = parameter(&document, "GET", template, "limit");
        let (min, max) = (number(limit, "minimum"), number(limit, "maximum"));
        for (value, expected) in [
            (min, StatusCode::OK),
            (max, StatusCode::OK),
            (min - 1, StatusCode::UNPROCESSABLE_ENTITY),
            (max + 1, StatusCode::UNPROCESSABLE_ENTITY),
        ] {
            assert_eq!(
                app.get(&format!("{uri}?limit={value}")).await.status,
                expected,
                "{uri} limit={value}"
            );
        }
    }
    let q = number(parameter(&document, "GET", "/v1/threads", "q"), "maxLength");
    assert_eq!(app.get(&format!("/v1/threads?q={}", "%C3%A9".repeat(q))).await.status, StatusCode::OK);
    assert_eq!(
        app.get(&format!("/v1/threads?q={}", "x".repeat(q + 1))).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let seq = parameter(&document, "GET", "/v1/threads/{id}/turns", "after_seq");
    let last = number(seq, "maximum");
    let turns = &lists[2].1;
    assert_eq!(app.get(&format!("{turns}?after_seq={last}")).await.status, StatusCode::OK);
    assert_eq!(
        app.get(&format!("{turns}?after_seq={}", last + 1)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    for template in ["/v1/threads", "/v1/runs"] {
        assert_eq!(parameter(&document, "GET", template, "cursor")["pattern"], "^[0-9]{1,16}_[0-9a-f]{32}$");
    }
    let id = Uuid::new_v4();
    for (cursor, expected) in [
        (format!("1234567890123456_{}", id.simple()), StatusCode::OK),
        (format!("1_{}", id.hyphenated()), StatusCode::UNPROCESSABLE_ENTITY),
        (format!("-1_{}", id.simple()), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        assert_eq!(app.get(&format!("/v1/threads?cursor={cursor}")).await.status, expected, "{cursor}");
    }

    let key = parameter(&document, "POST", "/v1/threads/{id}/turns", "Idempotency-Key");
    let longest = number(key, "maxLength");
    let uri = format!("/v1/threads/{thread}/turns");
    for (key, expected) in [
        ("k".repeat(longest), StatusCode::CREATED),
        ("k".repeat(longest + 1), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let mut append = request("POST", &uri, r#"{"role": "user", "content": "hi"}"#);
        append.headers_mut().insert("idempotency-key", key.parse().unwrap());
        assert_eq!(app.send(append).await.status, expected);
    }
}
