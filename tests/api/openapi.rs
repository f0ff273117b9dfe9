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

/// Every `$ref` in `value`, with where it was found.
fn references(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push((at.to_owned(), target.clone())),
                    _ => references(inner, &format!("{at}/{key}"), found),
                }
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                references(inner, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_reference_in_the_document_resolves() {
    let document: Value = serde_json::from_str(COMMITTED).unwrap();
    let mut found = Vec::new();
    references(&document, "", &mut found);
    assert!(found.len() > 20, "the walk finds the document's references: {found:?}");
    let broken: Vec<_> = found
        .iter()
        .filter(|(_, target)| {
            target.strip_prefix('#').and_then(|pointer| document.pointer(pointer)).is_none()
        })
        .collect();
    assert!(broken.is_empty(), "references to nothing: {broken:?}");
}

#[test]
fn every_link_names_an_operation_and_its_parameters() {
    let document: Value = serde_json::from_str(COMMITTED).unwrap();
    let operations: Vec<&Value> = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .collect();
    let mut links = 0;
    for operation in &operations {
        for response in operation["responses"].as_object().unwrap().values() {
            for link in response["links"].as_object().into_iter().flat_map(|links| links.values()) {
                let target = operations.iter().find(|o| o["operationId"] == link["operationId"]);
                let target = target.unwrap_or_else(|| panic!("a link to no operation: {link}"));
                for name in link["parameters"].as_object().unwrap().keys() {
                    let parameters = target["parameters"].as_array().unwrap();
                    assert!(
                        parameters.iter().any(|p| p["name"] == *name),
                        "{link} names no parameter {name}"
                    );
                }
                links += 1;
            }
        }
    }
    assert!(links >= 4, "the runs a tool starts link to what can be done with them");
}
