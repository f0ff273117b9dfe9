//! `exai healthcheck`, the Docker HEALTHCHECK command: its exit codes and formats.

use serde_json::Value;
use std::process::Output;

use crate::support::process::{ExaiProcess, exai_command};
use crate::support::services::{free_port, hung_listener};

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> Output {
    exai_command().arg("healthcheck").args(args).envs(env.iter().copied()).output().unwrap()
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

#[test]
fn exit_codes_follow_the_servers_health() {
    let data = tempfile::tempdir().unwrap();
    let healthy = ExaiProcess::start(data.path(), &[]);
    let url = healthy.url("/healthz");
    let output = healthcheck(&["--url", &url], &[]);
    assert_eq!(code(&output), Some(0), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("healthy in ") && text.contains("store  sqlite"), "{text}");

    let output = healthcheck(&["--url", &url, "--format", "json"], &[]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["checks"]["store"]["status"], "healthy");

    // The default URL comes from EXAI_BIND.
    let bind = healthy.addr.to_string();
    assert_eq!(code(&healthcheck(&[], &[("EXAI_BIND", &bind)])), Some(0));

    let store_down = format!("postgres://postgres@127.0.0.1:{}/exai", free_port());
    let unhealthy =
        ExaiProcess::start(data.path(), &[("DATABASE_URL", &store_down), ("EXAI_HEALTH_TIMEOUT_MS", "500")]);
    let output = healthcheck(&["--url", &unhealthy.url("/healthz")], &[]);
    assert_eq!(code(&output), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("unhealthy"));

    let not_health = healthcheck(&["--url", &healthy.url("/livez")], &[]);
    assert_eq!(code(&not_health), Some(2), "an endpoint that is not exai's health is a setup error");
}

#[test]
fn misconfiguration_is_2_and_silence_is_3() {
    assert_eq!(code(&healthcheck(&["--url", "not a url"], &[])), Some(2));
    assert_eq!(code(&healthcheck(&[], &[("EXAI_BIND", "nonsense")])), Some(2));

    let nobody = format!("http://127.0.0.1:{}/healthz", free_port());
    let output = healthcheck(&["--url", &nobody], &[]);
    assert_eq!(code(&output), Some(3), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("unreachable"));

    let hung = format!("http://127.0.0.1:{}/healthz", hung_listener());
    assert_eq!(code(&healthcheck(&["--url", &hung, "--timeout-ms", "300"], &[])), Some(3));
}

#[test]
fn direct_runs_the_checks_without_a_server() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let missing = healthcheck(&["--direct"], &[("EXAI_DATA_DIR", dir)]);
    assert_eq!(code(&missing), Some(2), "a check creates no database");
    assert!(!data.path().join("exai.db").exists());
    let migrate = exai_command().arg("migrate").env("EXAI_DATA_DIR", dir).output().unwrap();
    assert!(migrate.status.success());
    let output = healthcheck(&["--direct", "--format", "json"], &[("EXAI_DATA_DIR", dir)]);
    assert_eq!(code(&output), Some(0), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["status"], "healthy");

    let store_down = format!("postgres://postgres@127.0.0.1:{}/exai", free_port());
    let env = [("DATABASE_URL", store_down.as_str()), ("EXAI_HEALTH_TIMEOUT_MS", "500")];
    assert_eq!(code(&healthcheck(&["--direct"], &env)), Some(1));
    assert_eq!(code(&healthcheck(&["--direct"], &[("EXAI_STORE", "nope")])), Some(2));
}

#[test]
fn with_api_keys_the_check_sends_the_first_key_for_the_details() {
    let data = tempfile::tempdir().unwrap();
    let keys = [("EXAI_API_KEYS", "first-key,second-key")];
    let server = ExaiProcess::start(data.path(), &keys);
    let url = server.url("/healthz");
    let with_key = healthcheck(&["--url", &url], &keys);
    assert_eq!(code(&with_key), Some(0), "{with_key:?}");
    let text = String::from_utf8_lossy(&with_key.stdout);
    assert!(text.contains("store  sqlite") && text.contains("(exai "), "{text}");

    let without_key = healthcheck(&["--url", &url], &[]);
    assert_eq!(code(&without_key), Some(0), "the status alone decides the exit code: {without_key:?}");
    let text = String::from_utf8_lossy(&without_key.stdout);
    assert!(text.starts_with("healthy in ") && !text.contains("sqlite"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_follows_a_redirect() {
    let (redirecting, elsewhere) =
        (crate::support::upstream::start().await, crate::support::upstream::start().await);
    let port = elsewhere.url.rsplit(':').next().unwrap().to_owned();
    let url = format!("{}/away/307/{port}/healthz", redirecting.url);
    let output =
        tokio::task::spawn_blocking(move || healthcheck(&["--url", &url], &[("EXAI_API_KEYS", "the-key")]))
            .await
            .unwrap();
    assert_eq!(code(&output), Some(2), "a redirect is no health report: {output:?}");
    let seen = redirecting.received.all_headers.lock().unwrap();
    assert_eq!(seen[0].get("authorization").unwrap(), "Bearer the-key");
    let leaked = elsewhere.received.all_headers.lock().unwrap();
    assert!(leaked.is_empty(), "the redirect was followed: {leaked:?}");
}
