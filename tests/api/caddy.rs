//! The repository's `Caddyfile`, served by a real Caddy in front of a real exai: what
//! a deployment behind Caddy relies on.

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::support::caddy::{CaddyProcess, caddy_command, caddyfile};
use crate::support::process::ExaiProcess;
use crate::support::{require_program, upstream};

/// Polls until `find` returns something; logs are written a moment after the answer.
async fn eventually<T>(what: &str, mut find: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = find() {
            return found;
        }
        assert!(Instant::now() < give_up, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn exai_request_log(exai: &ExaiProcess, request_id: &str) -> Option<Value> {
    let log = exai.log.lock().unwrap();
    log.iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["message"] == "request" && entry["request_id"] == request_id)
}

fn caddy_access_entry(caddy: &CaddyProcess, uri: &str) -> Option<Value> {
    caddy.entries().into_iter().find(|entry| entry["request"]["uri"] == uri)
}

/// exai on a fresh SQLite file with Caddy in front, and a client.
struct Deployment {
    exai: ExaiProcess,
    caddy: CaddyProcess,
    client: reqwest::Client,
    _data: TempDir,
}

impl Deployment {
    async fn start(env: &[(&str, &str)]) -> Option<Self> {
        Self::start_in(TempDir::new().unwrap(), env).await
    }

    async fn start_in(data: TempDir, env: &[(&str, &str)]) -> Option<Self> {
        let exai = ExaiProcess::start(data.path(), env);
        let caddy = CaddyProcess::start(exai.addr).await?;
        Some(Self { exai, caddy, client: reqwest::Client::new(), _data: data })
    }
}

#[test]
fn caddy_validates_the_caddyfile() {
    let Some(program) = require_program("caddy") else { return };
    let home = TempDir::new().unwrap();
    let validated = caddy_command(&program, home.path())
        .args(["validate", "--adapter", "caddyfile", "--config"])
        .arg(caddyfile())
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&validated.stderr);
    assert!(validated.status.success(), "{errors}");
}

/// The `reverse_proxy` handlers in Caddy's JSON config, wherever they are nested.
fn reverse_proxies(config: &Value) -> Vec<&Value> {
    match config {
        Value::Object(map) if map.get("handler").is_some_and(|h| h == "reverse_proxy") => vec![config],
        Value::Object(map) => map.values().flat_map(reverse_proxies).collect(),
        Value::Array(items) => items.iter().flat_map(reverse_proxies).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn each_address_in_exai_upstream_is_an_upstream_of_its_own() {
    let Some(program) = require_program("caddy") else { return };
    let home = TempDir::new().unwrap();
    let adapted = caddy_command(&program, home.path())
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(caddyfile())
        .env("EXAI_UPSTREAM", "10.0.0.1:8080 10.0.0.2:8080 10.0.0.3:8080")
        .output()
        .unwrap();
    assert!(adapted.status.success(), "{}", String::from_utf8_lossy(&adapted.stderr));
    let config: Value = serde_json::from_slice(&adapted.stdout).unwrap();
    let proxies = reverse_proxies(&config);
    assert_eq!(proxies.len(), 1, "{config}");
    let dials: Vec<&Value> = proxies[0]["upstreams"].as_array().unwrap().iter().map(|u| &u["dial"]).collect();
    assert_eq!(dials, [&json!("10.0.0.1:8080"), &json!("10.0.0.2:8080"), &json!("10.0.0.3:8080")]);
    assert_eq!(proxies[0]["health_checks"]["active"]["uri"], "/readyz");
}

#[tokio::test]
async fn the_api_and_health_pass_through_caddy_with_security_headers() {
    let Some(Deployment { exai, caddy, client, _data }) = Deployment::start(&[]).await else { return };

    let created = client.post(caddy.url("/v1/threads")).json(&json!({"title": "behind caddy"})).send().await;
    let created = created.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-content-type-options"], "nosniff");
    assert_eq!(created.headers()["referrer-policy"], "no-referrer");
    assert!(created.headers().get("server").is_none(), "Caddy names itself");
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let through_caddy = client.get(caddy.url(&format!("/v1/threads/{id}"))).send().await.unwrap();
    let direct = client.get(exai.url(&format!("/v1/threads/{id}"))).send().await.unwrap();
    assert_eq!(through_caddy.text().await.unwrap(), direct.text().await.unwrap());

    let health = client.get(caddy.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "healthy");
}

#[tokio::test]
async fn one_request_id_follows_a_request_through_both_logs() {
    let Some(Deployment { exai, caddy, client, _data }) = Deployment::start(&[]).await else { return };

    // Caddy gives a request without an id its own one; a caller's plain id is kept.
    let answer = client.get(caddy.url("/v1/threads?limit=1")).send().await.unwrap();
    let given = answer.headers()["x-request-id"].to_str().unwrap().to_owned();
    let logged =
        eventually("Caddy logging the request", || caddy_access_entry(&caddy, "/v1/threads?limit=1")).await;
    assert_eq!(logged["resp_headers"]["X-Request-Id"], json!([given]));
    let exai_logged = eventually("exai logging the same id", || exai_request_log(&exai, &given)).await;
    assert_eq!(exai_logged["route"], "/v1/threads");

    let answer = client.get(caddy.url("/v1/threads?limit=2")).header("x-request-id", "trace-42").send().await;
    assert_eq!(answer.unwrap().headers()["x-request-id"], "trace-42");
    let logged =
        eventually("Caddy logging the request", || caddy_access_entry(&caddy, "/v1/threads?limit=2")).await;
    assert_eq!(logged["resp_headers"]["X-Request-Id"], json!(["trace-42"]));
    // A forged X-Forwarded-For stops at Caddy, which tells exai the real peer.
    let forged = client.get(caddy.url("/livez")).header("x-request-id", "forged-1");
    forged.header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    let exai_logged = eventually("exai logging the request", || exai_request_log(&exai, "forged-1")).await;
    assert_eq!(exai_logged["client"], "127.0.0.1");
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let data = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    for (trusted, expected) in [("127.0.0.1", "203.0.113.9"), ("10.0.0.0/8", "127.0.0.1")] {
        let exai = ExaiProcess::start(data.path(), &[("EXAI_TRUSTED_PROXIES", trusted)]);
        let request = client.get(exai.url("/livez")).header("x-request-id", "from-a-proxy");
        request.header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
        let logged = eventually("exai logging the request", || exai_request_log(&exai, "from-a-proxy")).await;
        assert_eq!(logged["client"], expected, "trusting {trusted}");
    }
}

fn gunzip(compressed: &[u8]) -> Vec<u8> {
    let mut gzip =
        Command::new("gzip").arg("-dc").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    gzip.stdin.take().unwrap().write_all(compressed).unwrap();
    let output = gzip.wait_with_output().unwrap();
    assert!(output.status.success());
    output.stdout
}

#[tokio::test]
async fn json_is_compressed_when_asked() {
    let Some(Deployment { exai, caddy, client, _data }) = Deployment::start(&[]).await else { return };

    let plain = client.get(exai.url("/openapi.json")).send().await.unwrap().bytes().await.unwrap();
    let answer = client.get(caddy.url("/openapi.json")).header(ACCEPT_ENCODING, "gzip").send().await.unwrap();
    assert_eq!(answer.headers()[CONTENT_ENCODING], "gzip");
    let compressed = answer.bytes().await.unwrap();
    assert!(compressed.len() < plain.len() / 2, "{} of {} bytes", compressed.len(), plain.len());
    assert_eq!(gunzip(&compressed), plain);

    let unasked = client.get(caddy.url("/openapi.json")).send().await.unwrap();
    assert!(unasked.headers().get(CONTENT_ENCODING).is_none());
}

/// Reads a server-sent event stream one event name at a time.
struct EventReader {
    answer: reqwest::Response,
    pending: String,
}

impl EventReader {
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                match block.lines().find_map(|line| line.strip_prefix("event:")) {
                    Some(name) => return Some(name.trim().to_owned()),
                    None => continue,
                }
            }
            let chunk = self.answer.chunk().await.unwrap()?;
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn run_events_arrive_through_caddy_as_sent_and_uncompressed() {
    let upstream = upstream::start().await;
    let data = TempDir::new().unwrap();
    let tools = data.path().join("tools.toml");
    let url = format!("{}/webhook?ms=4000", upstream.url);
    std::fs::write(&tools, format!("[[tools]]\nname = \"slow\"\nkind = \"http\"\nurl = \"{url}\"\n"))
        .unwrap();
    let env = [("EXAI_TOOLS_FILE", tools.to_str().unwrap()), ("EXAI_TOOL_PROGRESS_SECS", "1")];
    let Some(Deployment { exai, caddy, client, _data }) = Deployment::start_in(data, &env).await else {
        return;
    };

    let accepted = client.post(caddy.url("/v1/tools/slow/runs")).json(&json!({"input": "hi", "wait": false}));
    let run = accepted.send().await.unwrap().json::<Value>().await.unwrap();
    let id = run["id"].as_str().unwrap();
    let stream =
        client.get(caddy.url(&format!("/v1/runs/{id}/events"))).header(ACCEPT_ENCODING, "zstd, gzip");
    let answer = stream.send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(answer.headers().get(CONTENT_ENCODING).is_none(), "an event stream was compressed");

    // The first event must reach the client while the run still runs: Caddy did not
    // hold the stream back until it ended.
    let mut reader = EventReader { answer, pending: String::new() };
    let first = reader.next().await.unwrap();
    let mut arrivals = vec![Instant::now()];
    let run = client.get(exai.url(&format!("/v1/runs/{id}"))).send().await.unwrap();
    assert_eq!(run.json::<Value>().await.unwrap()["status"], "running", "the stream was held back");
    let mut names = vec![first];
    while let Some(name) = reader.next().await {
        names.push(name);
        arrivals.push(Instant::now());
    }
    assert!(names.len() >= 3 && names[..names.len() - 1].iter().all(|name| name == "progress"), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("completed"));
    for pair in arrivals.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap < Duration::from_secs(5), "{gap:?} between events sent a second apart");
    }
}

#[tokio::test]
async fn caddy_refuses_a_body_over_exais_limit() {
    let Some(Deployment { caddy, client, exai: _exai, _data }) = Deployment::start(&[]).await else { return };
    // exai itself answers this one (422: metadata is capped well below the body limit).
    let fits = json!({"title": "fits", "metadata": {"padding": "x".repeat(1024 * 1024)}});
    let passed = client.post(caddy.url("/v1/threads")).json(&fits).send().await.unwrap();
    assert_eq!(passed.status(), 422);
    let content = "x".repeat(2 * 1024 * 1024);
    let body = json!({"title": "too big", "metadata": {"padding": content}});
    let refused = client.post(caddy.url("/v1/threads")).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 413);
}
