//! The binary itself: configuration errors, durability across a crash, clean shutdown.

use serde_json::{Value, json};
use std::time::Duration;

use crate::support::process::{ExaiProcess, exai_command};
use crate::support::runs::{run_once_ended, stalling_tools, start_run};

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
        let output = exai_command().env("EXAI_DATA_DIR", data.path()).env(variable, value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(variable), "{stderr}");
    }
}

#[test]
fn a_public_address_without_keys_is_refused() {
    let output = exai_command().args(["serve", "--bind", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("EXAI_API_KEYS"));
}

#[test]
fn a_second_process_on_one_sqlite_database_is_refused_while_the_first_serves() {
    let data = tempfile::tempdir().unwrap();
    let first = ExaiProcess::start(data.path(), &[]);
    let second = exai_command()
        .env("EXAI_DATA_DIR", data.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another exai process is serving"), "{stderr}");
    first.kill();
    ExaiProcess::start(data.path(), &[]).terminate();
}

#[test]
fn start_up_logs_no_credentials_of_any_url() {
    let data = tempfile::tempdir().unwrap();
    let server = ExaiProcess::start(
        data.path(),
        &[
            ("SUPABASE_URL", "http://admin:SUPAPW@127.0.0.1:9/?k=QTOKEN"),
            ("SUPABASE_SERVICE_ROLE_KEY", "sb_secret_KEYTOKEN"),
            ("REDIS_URL", "redis://cacheuser:REDISPW@127.0.0.1:9/0?token=RTOKEN"),
        ],
    );
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("exai starting") && log.contains("127.0.0.1:9"), "{log}");
    for secret in ["admin", "SUPAPW", "QTOKEN", "KEYTOKEN", "REDISPW", "RTOKEN"] {
        assert!(!log.contains(secret), "{secret} in the start-up log: {log}");
    }
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
    let thread: Value =
        http.get(restarted.url(&format!("/v1/threads/{id}"))).send().await.unwrap().json().await.unwrap();
    let contents: Vec<&str> =
        thread["turns"].as_array().unwrap().iter().map(|t| t["content"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("turn {i}")).collect();
    assert_eq!(contents, expected);
}

#[test]
fn the_openapi_command_prints_the_document() {
    let output = exai_command().arg("openapi").output().unwrap();
    assert!(output.status.success());
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}

#[tokio::test]
async fn a_run_cut_by_a_crash_reads_failed_after_the_restart() {
    let upstream = crate::support::upstream::hanging();
    let data = tempfile::tempdir().unwrap();
    let tools = stalling_tools(data.path(), &upstream.url);
    let server = ExaiProcess::start(data.path(), &[("EXAI_TOOLS_FILE", &tools)]);
    let run_path = format!("/v1/runs/{}", start_run(&server, "stall").await);
    server.kill();

    let restarted = ExaiProcess::start(data.path(), &[("EXAI_TOOLS_FILE", &tools)]);
    let run = run_once_ended(&restarted, &run_path, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("restarted"), "{run}");
}

#[tokio::test]
async fn sigterm_lets_a_waiting_request_finish() {
    let upstream = crate::support::upstream::hanging();
    let data = tempfile::tempdir().unwrap();
    let tools = stalling_tools(data.path(), &upstream.url);
    let server = ExaiProcess::start(data.path(), &[("EXAI_TOOLS_FILE", &tools)]);
    let waiting = tokio::spawn(
        client().post(server.url("/v1/tools/stall/runs")).json(&json!({"input": "wait for me"})).send(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while upstream.accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the run never reached its upstream");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let exit = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    let response = waiting.await.unwrap().expect("the in-flight request got its answer");
    assert_eq!(response.status(), 502);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "tool_failed");
    assert!(problem["detail"].as_str().unwrap().contains("shut down"), "{problem}");
    assert!(exit.success());
}
