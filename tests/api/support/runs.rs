//! Tool runs driven over HTTP against a real exai process, or against Caddy in front of
//! several: start one, watch its events, cancel it, wait for it to end.

use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::caddy::CaddyProcess;
use super::process::ExaiProcess;
use super::upstream::Hanging;

/// Something that answers exai's API: one process, or Caddy in front of several.
pub trait Endpoint {
    fn url(&self, path: &str) -> String;
}

impl Endpoint for ExaiProcess {
    fn url(&self, path: &str) -> String {
        ExaiProcess::url(self, path)
    }
}

impl Endpoint for CaddyProcess {
    fn url(&self, path: &str) -> String {
        CaddyProcess::url(self, path)
    }
}

/// The JSON body of a GET.
pub async fn get_json(endpoint: &(impl Endpoint + ?Sized), path: &str) -> Value {
    reqwest::get(endpoint.url(path)).await.unwrap().json().await.unwrap()
}

/// A registry with one tool whose upstream never answers.
pub fn stalling_tools(dir: &Path, upstream: &str) -> String {
    let path = dir.join("tools.toml");
    let registry =
        format!("[[tools]]\nname = \"stall\"\nkind = \"http\"\nurl = \"{upstream}\"\ntimeout_secs = 120\n");
    std::fs::write(&path, registry).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A registry with a tool that answers after 2.5 s (`slow`), one that streams (`llm`,
/// its key in `TEST_LLM_KEY`), and one that never answers (`stall`).
pub fn replica_tools(dir: &Path, upstream: &str, hanging: &str) -> String {
    let path = dir.join("tools.toml");
    let registry = format!(
        "[[tools]]\nname = \"slow\"\nkind = \"http\"\nurl = \"{upstream}/webhook?ms=2500\"\n\
         [[tools]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"{upstream}/v1\"\napi_key_env = \"TEST_LLM_KEY\"\n\
         model = \"m\"\nstream = true\n\
         [[tools]]\nname = \"stall\"\nkind = \"http\"\nurl = \"{hanging}\"\ntimeout_secs = 120\n"
    );
    std::fs::write(&path, registry).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Starts a run of `tool` without waiting for it; the run's id.
pub async fn start_run(endpoint: &(impl Endpoint + ?Sized), tool: &str) -> String {
    let accepted = reqwest::Client::new()
        .post(endpoint.url(&format!("/v1/tools/{tool}/runs")))
        .json(&json!({"input": "long job", "wait": false}))
        .send()
        .await
        .unwrap();
    let accepted: Value = accepted.json().await.unwrap();
    accepted["id"].as_str().unwrap().to_owned()
}

/// The run at `run_path` once `endpoint` reports it ended, or as it is after `patience`.
pub async fn run_once_ended(
    endpoint: &(impl Endpoint + ?Sized),
    run_path: &str,
    patience: Duration,
) -> Value {
    let deadline = Instant::now() + patience;
    loop {
        let run = get_json(endpoint, run_path).await;
        if run["status"] != "queued" && run["status"] != "running" || Instant::now() > deadline {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The names of the events a run's stream sends, and the last one's data.
pub async fn event_names(endpoint: &(impl Endpoint + ?Sized), run: &str) -> (Vec<String>, Value) {
    let body =
        reqwest::get(endpoint.url(&format!("/v1/runs/{run}/events"))).await.unwrap().text().await.unwrap();
    let names = body.lines().filter_map(|line| line.strip_prefix("event: ")).map(str::to_owned).collect();
    let last = body.lines().filter_map(|line| line.strip_prefix("data: ")).next_back().unwrap_or("null");
    (names, serde_json::from_str(last).unwrap())
}

/// Runs of [`replica_tools`] started through `starter` are watched through `watcher` and
/// cancelled through `canceller`: the upstream connection of the run closes. `relayed`
/// says whether the watcher sees the progress and deltas too (the owner itself, or
/// another replica through a relay) or only the final event (another replica through the
/// store alone); `None` when it cannot be told which replica watches.
pub async fn watch_and_cancel(
    starter: &(impl Endpoint + ?Sized),
    watcher: &(impl Endpoint + ?Sized),
    canceller: &(impl Endpoint + ?Sized),
    hanging: &Hanging,
    relayed: Option<bool>,
) {
    for (tool, on_the_way, output) in
        [("slow", "progress", "seen: long job"), ("llm", "delta", "Hello world")]
    {
        let run = start_run(starter, tool).await;
        let (names, run) = event_names(watcher, &run).await;
        assert_eq!(names.last().map(String::as_str), Some("completed"), "{names:?}");
        if let Some(relayed) = relayed {
            assert_eq!(names.iter().any(|name| name == on_the_way), relayed, "{names:?}");
        }
        assert_eq!(run["output"], output, "{run}");
    }

    let already_open = hanging.open.load(Ordering::SeqCst);
    let stalled = start_run(starter, "stall").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hanging.open.load(Ordering::SeqCst) == already_open {
        assert!(Instant::now() < deadline, "the run never reached its upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel = reqwest::Client::new().post(canceller.url(&format!("/v1/runs/{stalled}/cancel")));
    let cancel = cancel.send().await.unwrap();
    assert_eq!(cancel.status(), 200);
    let run: Value = cancel.json().await.unwrap();
    assert_eq!(run["status"], "cancelled", "{run}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hanging.open.load(Ordering::SeqCst) != already_open {
        assert!(Instant::now() < deadline, "the upstream connection stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
