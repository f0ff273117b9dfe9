//! The dashboard's tool pages: starting a run from a form, following it, cancelling it.

use axum::http::StatusCode;
use std::time::{Duration, Instant};

use crate::dashboard::{csrf_of, form};
use crate::support::upstream::hanging;
use crate::support::{TestApp, TestResponse};

/// Reads a run's page until it shows `status`.
async fn wait_for_status(app: &TestApp, run_page: &str, status: &str) -> String {
    let give_up = Instant::now() + Duration::from_secs(15);
    loop {
        let html = app.get(run_page).await.text();
        if html.contains(&format!("run-{status}\">{status}")) {
            return html;
        }
        assert!(Instant::now() < give_up, "{run_page} never showed {status}: {html}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends the tools page's form with these fields.
async fn submit(app: &TestApp, body: &str) -> TestResponse {
    let csrf = csrf_of(&app.get("/dashboard/tools").await.text());
    app.send(form("/dashboard/tools/run", &format!("csrf={csrf}&{body}"), &[])).await
}

async fn start(app: &TestApp, body: &str) -> String {
    let started = submit(app, body).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text());
    started.header("location").unwrap().to_owned()
}

#[tokio::test]
async fn an_echo_run_started_from_the_tools_page_completes() {
    let app = TestApp::new().await;
    let tools = app.get("/dashboard/tools").await;
    assert_eq!(tools.status, StatusCode::OK);
    assert!(tools.text().contains("<th scope=\"row\">echo</th>"));

    let forged = app.send(form("/dashboard/tools/run", "csrf=x&tool=echo&input=hi", &[])).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let run_page = start(&app, "tool=echo&input=%3Cscript%3Ehello%3C%2Fscript%3E").await;
    assert!(run_page.starts_with("/dashboard/runs/"));
    let html = wait_for_status(&app, &run_page, "completed").await;
    assert!(html.contains("&#60;script&#62;hello&#60;/script&#62;") && !html.contains("<script>hello"));
    assert!(!html.contains("Cancel run"), "a finished run cannot be cancelled");

    let id = run_page.trim_start_matches("/dashboard/runs/");
    assert!(app.get("/dashboard/runs?tool=echo&status=completed").await.text().contains(id));
    assert!(app.get("/dashboard/runs?status=failed").await.text().contains("No runs match."));
    let live = app.get(&format!("{run_page}/live")).await.text();
    assert!(live.contains("data-final") && !live.contains("<html"));
}

#[tokio::test]
async fn a_slow_run_is_cancelled_from_its_page() {
    let upstream = hanging();
    let registry = format!(
        "[[tools]]\nname = \"slow\"\nkind = \"http\"\nurl = \"{}\"\ntimeout_secs = 60\n",
        upstream.url
    );
    let app = TestApp::with_tools(&registry, &[]).await;
    let run_page = start(&app, "tool=slow&input=wait&timeout_secs=30").await;
    let html = app.get(&run_page).await.text();
    assert!(html.contains("data-refresh=") && html.contains("Cancel run"), "{html}");
    let csrf = csrf_of(&html);
    let cancel = format!("{run_page}/cancel");

    assert_eq!(app.send(form(&cancel, "csrf=x", &[])).await.status, StatusCode::FORBIDDEN);
    let cancelled = app.send(form(&cancel, &format!("csrf={csrf}"), &[])).await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    assert_eq!(cancelled.header("location"), Some(run_page.as_str()));
    wait_for_status(&app, &run_page, "cancelled").await;
    let bad_timeout = submit(&app, "tool=slow&input=x&timeout_secs=soon").await;
    bad_timeout.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn a_run_page_streams_the_runs_events() {
    let app = TestApp::new().await;
    let run_page = start(&app, "tool=echo&input=streamed").await;
    wait_for_status(&app, &run_page, "completed").await;
    let events = app.get(&format!("{run_page}/events")).await;
    assert_eq!(events.status, StatusCode::OK);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert!(events.text().contains("event: completed"), "{}", events.text());

    let keyed = crate::support::TestApp::start(crate::support::policy(20), &["k"]).await;
    let stranger = keyed.get(&format!("{run_page}/events")).await;
    assert_eq!(stranger.status, StatusCode::SEE_OTHER, "events need a session like the pages");
}
