//! The dashboard in a real headless Chromium against the real binary, driven as an
//! operator would use it: sign in, watch the overview, search and open a thread, start
//! a run and see it complete, start a slow one and cancel it; and the page never logs a
//! console error, an uncaught exception or a CSP violation.

use serde_json::{Value, json};

use crate::support::cdp::Browser;
use crate::support::process::ExaiProcess;
use crate::support::require_program;
use crate::support::upstream::hanging;

const KEY: &str = "browser-test-key";

/// Creates a thread through the API and returns its id.
fn create_thread(exai: &ExaiProcess, body: Value) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let created = reqwest::Client::new()
            .post(exai.url("/v1/threads"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
        created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    })
}

/// A script literal of `text`.
fn js(text: &str) -> String {
    json!(text).to_string()
}

/// Starts a run from the tools page's form and waits for the run's own page.
fn start_run(browser: &mut Browser, exai: &ExaiProcess, tool: &str, input: &str, timeout: &str) {
    browser.navigate(&exai.url("/dashboard/tools"));
    browser.act(&format!(
        "document.getElementById('tool').value = {}; document.getElementById('input').value = {}; \
         document.getElementById('timeout_secs').value = {}; \
         document.querySelector('form[action=\"/dashboard/tools/run\"] button').click()",
        js(tool),
        js(input),
        js(timeout)
    ));
    browser.wait_for(&format!(
        "location.pathname.startsWith('/dashboard/runs/') && document.readyState === 'complete' \
         && document.querySelector('#run-h').textContent.startsWith({})",
        js(tool)
    ));
}

#[test]
fn an_operator_signs_in_browses_threads_and_starts_and_cancels_runs() {
    let Some(chromium) = require_program("chromium") else { return };
    let upstream = hanging();
    let data = tempfile::tempdir().unwrap();
    let registry = data.path().join("tools.toml");
    let slow = format!(
        "[[tools]]\nname = \"slow\"\nkind = \"http\"\nurl = \"{}\"\ntimeout_secs = 60\n",
        upstream.url
    );
    std::fs::write(&registry, slow).unwrap();
    let exai = ExaiProcess::start(
        data.path(),
        &[("EXAI_API_KEYS", KEY), ("EXAI_TOOLS_FILE", registry.to_str().unwrap())],
    );
    let parent = create_thread(&exai, json!({"title": "<script>alert(1)</script> hostile"}));
    let needle = create_thread(&exai, json!({"title": "needle in the haystack", "parent_id": parent}));
    let mut browser = Browser::start(&chromium, 390, 844);

    browser.navigate(&exai.url("/dashboard"));
    browser.wait_for("location.pathname === '/dashboard/login'");
    browser.act(&format!(
        "document.getElementById('key').value = {}; document.querySelector('form.login button').click()",
        js(KEY)
    ));
    browser.wait_for("location.pathname === '/dashboard' && document.readyState === 'complete'");
    browser.wait_for("document.body.innerText.includes('Cache hit rate')");
    browser.wait_for("document.body.innerText.includes('<script>alert(1)</script> hostile')");
    browser.wait_for("document.body.innerText.includes('Updated ')");
    browser.act("document.getElementById('pause').click()");
    browser.wait_for("document.getElementById('pause').getAttribute('aria-pressed') === 'true'");

    browser.navigate(&exai.url("/dashboard/threads"));
    browser.act("document.getElementById('q').value = 'HAYSTACK'; document.querySelector('form.filters button').click()");
    browser.wait_for("location.search.includes('q=HAYSTACK') && document.readyState === 'complete'");
    let listed =
        browser.eval("[...document.querySelectorAll('td.title a')].map(a => a.textContent)").unwrap();
    assert_eq!(listed, json!(["needle in the haystack"]));
    browser.act("document.querySelector('td.title a').click()");
    browser.wait_for(&format!("location.pathname === '/dashboard/threads/{needle}'"));
    browser.wait_for("document.getElementById('about-h').textContent === 'needle in the haystack'");
    browser.act(&format!("document.querySelector('a[href=\"/dashboard/threads/{parent}\"]').click()"));
    browser.wait_for(&format!("location.pathname === '/dashboard/threads/{parent}'"));
    browser.wait_for(&format!("document.querySelector('a[href=\"/dashboard/threads/{needle}\"]') !== null"));

    start_run(&mut browser, &exai, "echo", "hello from chromium", "");
    browser.wait_for("document.querySelector('.run-completed') !== null");
    browser.wait_for("document.body.innerText.includes('hello from chromium')");

    start_run(&mut browser, &exai, "slow", "wait for me", "30");
    browser.wait_for("document.querySelector('.run-running') !== null");
    browser.act("document.querySelector('form[action$=\"/cancel\"] button').click()");
    browser.wait_for("document.querySelector('.run-cancelled') !== null");

    assert_eq!(browser.problems(), Vec::<Value>::new(), "console errors, exceptions or CSP violations");
    assert!(exai.errors().is_empty(), "{:?}", exai.errors());
}
