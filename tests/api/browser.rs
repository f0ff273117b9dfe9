//! The dashboard in a real headless Chromium against the real binary: the page renders,
//! its script runs and refreshes the overview and a run's page, and the CSP blocks
//! nothing of ours.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::support::process::ExaiProcess;
use crate::support::require_program;

/// Flags that keep Chromium from reaching the network or keeping state between runs.
const QUIET: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_renders_and_refreshes_in_chromium_without_csp_violations() {
    let Some(chromium) = require_program("chromium") else { return };
    let data = tempfile::tempdir().unwrap();
    let exai = ExaiProcess::start(data.path(), &[]);
    let created = reqwest::Client::new()
        .post(exai.url("/v1/threads"))
        .json(&json!({"title": "<script>alert(1)</script> hostile"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());

    let overview = dump_dom(&chromium, &exai.url("/dashboard"));
    assert!(overview.contains("Cache hit rate") && overview.contains("Store latency"), "{overview}");
    assert!(
        overview.contains("&lt;script&gt;alert(1)&lt;/script&gt; hostile"),
        "the title as text: {overview}"
    );
    assert!(
        overview.contains("id=\"pause\" aria-pressed=\"false\">"),
        "the script showed its button: {overview}"
    );
    assert!(overview.contains("Updated "), "the script refreshed the overview: {overview}");

    let thread = created.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let page = dump_dom(&chromium, &exai.url(&format!("/dashboard/threads/{thread}")));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; hostile"), "{page}");

    let run = reqwest::Client::new()
        .post(exai.url("/v1/tools/echo/runs"))
        .json(&json!({"input": "echo me", "wait": false}))
        .send()
        .await
        .unwrap();
    let run = run.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let page = dump_dom(&chromium, &exai.url(&format!("/dashboard/runs/{run}")));
    assert!(page.contains("run-completed\">completed"), "the run page followed the run to its end: {page}");
    assert!(exai.errors().is_empty(), "{:?}", exai.errors());
}

/// The page's DOM after its scripts ran for a while (in virtual time, so without waiting),
/// asserting the browser logged nothing: no CSP violation, no script error.
fn dump_dom(chromium: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium)
        .args(QUIET)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--enable-logging=stderr", "--v=0", "--window-size=390,844"])
        .args(["--virtual-time-budget=12000", "--dump-dom", url])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let console: Vec<&str> = log.lines().filter(|line| line.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages on {url} (CSP violations among them): {console:#?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
