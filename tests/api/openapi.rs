//! The committed OpenAPI document is the one the code generates and serves.

use axum::http::StatusCode;
use serde_json::Value;

use crate::support::TestApp;

const COMMITTED: &str = include_str!("../../openapi/openapi.json");

#[test]
fn committed_document_matches_the_code() {
    let generated = exai::http::openapi().to_pretty_json().unwrap();
    assert!(
        generated.trim() == COMMITTED.trim(),
        "openapi/openapi.json is out of date: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn the_document_and_swagger_ui_are_served() {
    let app = TestApp::new().await;
    let served = app.get("/openapi.json").await;
    assert_eq!(served.status, StatusCode::OK);
    let committed: Value = serde_json::from_str(COMMITTED).unwrap();
    assert_eq!(served.json(), committed);

    let ui = app.get("/docs/").await;
    assert_eq!(ui.status, StatusCode::OK);
    assert!(ui.text().contains("swagger-ui"));
}
