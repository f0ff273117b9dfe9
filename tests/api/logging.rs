//! What the server logs about a request: an error's cause once, and the request id on
//! every line logged for it, also from the tasks it spawns.

use serde_json::{Value, json};
use std::time::Duration;

use crate::support::process::ExaiProcess;

const WAIT: Duration = Duration::from_secs(20);

/// The JSON log lines of the server.
fn logged(server: &ExaiProcess) -> Vec<Value> {
    let lines = server.log.lock().unwrap().clone();
    lines.iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Waits until the server has logged the end of the request with this id: by then
/// everything logged while handling it has been written.
async fn wait_for_request_line(server: &ExaiProcess, request_id: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines = logged(server);
        if lines.iter().any(|line| line["message"] == "request" && line["request_id"] == request_id) {
            return lines;
        }
        assert!(std::time::Instant::now() < deadline, "no request line for {request_id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks the server to create a thread, under the given request id.
async fn create_thread(server: &ExaiProcess, request_id: &str) -> reqwest::StatusCode {
    let response = reqwest::Client::new()
        .post(server.url("/v1/threads"))
        .header("x-request-id", request_id)
        .json(&json!({"title": request_id}))
        .send()
        .await
        .unwrap();
    response.status()
}

/// Whether the line was logged inside the span of the request with this id.
fn names_request(line: &Value, request_id: &str) -> bool {
    line["spans"].as_array().is_some_and(|spans| spans.iter().any(|span| span["request_id"] == request_id))
}

#[tokio::test]
async fn an_internal_error_is_logged_once_with_its_request_id() {
    let data = tempfile::tempdir().unwrap();
    let server = ExaiProcess::start(data.path(), &[]);
    // A store that has lost its table fails every write with an internal error.
    let url = format!("sqlite://{}", data.path().join("exai.db").display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query("DROP TABLE conversations").execute(&mut db).await.unwrap();

    assert_eq!(create_thread(&server, "lost-table").await, 500);
    let lines = wait_for_request_line(&server, "lost-table").await;

    let errors: Vec<&Value> = lines.iter().filter(|line| line["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["request_id"], "lost-table", "{errors:?}");
    assert!(errors[0]["cause"].as_str().unwrap().contains("conversations"), "{errors:?}");
}

#[tokio::test]
async fn a_slow_store_call_names_its_request() {
    let data = tempfile::tempdir().unwrap();
    // Every store call counts as slow, so each one warns.
    let server = ExaiProcess::start(data.path(), &[("EXAI_SLOW_OP_MS", "0")]);

    assert_eq!(create_thread(&server, "slow-create").await, 201);
    let lines = wait_for_request_line(&server, "slow-create").await;

    // The write runs on a task of its own, so that a caller who goes away cannot cut it short.
    let slow_create = lines
        .iter()
        .find(|line| line["message"] == "slow call" && line["op"] == "create_thread")
        .unwrap_or_else(|| panic!("no slow-call warning for the write: {lines:?}"));
    assert!(names_request(slow_create, "slow-create"), "{slow_create}");
}
