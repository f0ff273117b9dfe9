//! The dashboard in a real headless Chromium against the real binary: the page renders,
//! its script runs and refreshes the overview, and the CSP blocks nothing of ours.

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

    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium)
        .args(QUIET)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--enable-logging=stderr", "--v=0", "--window-size=390,844"])
        // Virtual time runs the page's timers without waiting for them in real time.
        .args(["--virtual-time-budget=12000", "--dump-dom", &exai.url("/dashboard")])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");

    assert!(dom.contains("Cache hit rate") && dom.contains("Store latency"), "{dom}");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt; hostile"), "the title as text: {dom}");
    assert!(dom.contains("id=\"pause\" aria-pressed=\"false\">"), "the script showed its button: {dom}");
    assert!(dom.contains("Updated "), "the script refreshed the overview: {dom}");
    let console: Vec<&str> = log.lines().filter(|line| line.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages (CSP violations among them): {console:#?}");
    assert!(exai.errors().is_empty(), "{:?}", exai.errors());
}
