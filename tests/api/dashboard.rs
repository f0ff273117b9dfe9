//! The dashboard's pages through the router: content, escaping, headers and access.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::support::{TestApp, TestResponse, policy};

const HOSTILE: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";

fn assert_locked_down(response: &TestResponse) {
    let csp = response.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("referrer-policy"), Some("same-origin"));
}

#[tokio::test]
async fn the_overview_shows_every_figure_and_escapes_titles() {
    let app = TestApp::new().await;
    let thread = app.create_thread(json!({"title": HOSTILE})).await;
    app.get(&format!("/v1/threads/{thread}")).await;

    let page = app.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_locked_down(&page);
    let html = page.text();
    for heading in ["Dependencies", "Cache hit rate", "Requests", "Tool runs", "Store latency", "Threads"] {
        assert!(html.contains(heading), "{heading} missing");
    }
    assert!(html.contains("healthy"), "the store's status as a word");
    assert!(html.contains(&thread), "the latest thread is listed");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#60;img src=x onerror=alert(2)&#62;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert") && !html.contains("<img src=x"));
    assert!(html.contains("create_thread"), "store latency by operation");
    assert!(!html.contains(" style=") && !html.contains("<style"), "no inline style");
    assert_eq!(html.matches("<script").count(), 1, "only the external script");
    assert!(html.contains("<script src=\"/dashboard/static/dashboard.js?v="));
}

#[tokio::test]
async fn the_overview_fragment_is_the_live_part_alone() {
    let app = TestApp::new().await;
    let fragment = app.get("/dashboard/overview").await;
    assert_eq!(fragment.status, StatusCode::OK);
    assert_locked_down(&fragment);
    let html = fragment.text();
    assert!(html.contains("Cache hit rate") && !html.contains("<html"), "{html}");
}

#[tokio::test]
async fn the_root_leads_to_the_dashboard() {
    let app = TestApp::new().await;
    let response = app.get("/").await;
    assert!(response.status.is_redirection());
    assert_eq!(response.header("location"), Some("/dashboard"));
}

#[tokio::test]
async fn assets_are_served_with_long_caching() {
    let app = TestApp::new().await;
    let page = app.get("/dashboard").await.text();
    let start = page.find("/dashboard/static/dashboard.css?v=").unwrap();
    let href = &page[start..start + page[start..].find('"').unwrap()];
    let css = app.get(href).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(css.header("cache-control").unwrap().contains("immutable"));
    assert!(css.header("etag").is_some());
    let script = app.get("/dashboard/static/dashboard.js").await;
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(app.get("/dashboard/static/other.txt").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn with_api_keys_the_dashboard_is_closed_to_strangers() {
    let app = TestApp::start(policy(20), &["dash-key"]).await;
    let page = app.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_locked_down(&page);
    assert_eq!(app.get("/dashboard/overview").await.status, StatusCode::UNAUTHORIZED);
    let with_key = Request::get("/dashboard")
        .header(header::AUTHORIZATION, "Bearer dash-key")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(with_key).await.status, StatusCode::OK);
}
