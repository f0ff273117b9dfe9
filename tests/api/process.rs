//! The binary itself: configuration errors, durability across a crash, clean shutdown.

use serde_json::{Value, json};

use crate::support::process::{ExaiProcess, exai_command};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[test]
fn a_bad_setting_stops_start_up_with_exit_code_2() {
    let data = tempfile::tempdir().unwrap();
    for (variable, value) in [
        ("EXAI_BIND", "not-an-address"),
        ("CONVERSATION_TIMEOUT_HOURS", "forever"),
        ("EXAI_STORE", "mongodb"),
    ] {
        let output = exai_command()
            .env("EXAI_DATA_DIR", data.path())
            .env(variable, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(variable), "{stderr}");
    }
}

#[test]
fn a_public_address_without_keys_is_refused() {
    let output = exai_command()
        .args(["serve", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("EXAI_API_KEYS"));
}

#[tokio::test]
async fn acknowledged_turns_survive_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let server = ExaiProcess::start(data.path(), &[]);
    let http = client();
    let thread: Value = http
        .post(server.url("/v1/threads"))
        .json(&json!({"title": "crash test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = thread["id"].as_str().unwrap().to_owned();
    for i in 1..=10 {
        let response = http
            .post(server.url(&format!("/v1/threads/{id}/turns")))
            .json(&json!({"role": "user", "content": format!("turn {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    server.kill();

    let restarted = ExaiProcess::start(data.path(), &[]);
    let thread: Value = http
        .get(restarted.url(&format!("/v1/threads/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contents: Vec<&str> = thread["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["content"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("turn {i}")).collect();
    assert_eq!(contents, expected);
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let server = ExaiProcess::start(data.path(), &[]);
    let live = client().get(server.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert!(server.terminate().success());
}

#[test]
fn the_openapi_command_prints_the_document() {
    let output = exai_command().arg("openapi").output().unwrap();
    assert!(output.status.success());
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}
