//! The dashboard's pages through the router: content, escaping, headers and access.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use chrono::{TimeDelta, Utc};
use exai::access::Sessions;
use exai::config::Config;
use exai::http::Peer;
use exai::secret::Secret;

use crate::support::{TestApp, TestResponse, memory_cache, policy, sqlite_store};

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

/// A form post as a browser on the same origin would send it, plus `extra` headers.
pub fn form(uri: &str, body: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::post(uri)
        .header(header::HOST, "exai.test")
        .header(header::ORIGIN, "http://exai.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

fn with_cookie(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri).header(header::COOKIE, cookie).body(Body::empty()).unwrap()
}

/// The value of the hidden `csrf` field of a page's form.
pub fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

async fn keyed_app() -> TestApp {
    TestApp::start(policy(20), &["dash-key"]).await
}

#[tokio::test]
async fn with_api_keys_strangers_are_sent_to_sign_in() {
    let app = keyed_app().await;
    let page = app.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/dashboard/login"));
    assert_locked_down(&page);
    assert_eq!(app.send(form("/dashboard/logout", "csrf=x", &[])).await.status, StatusCode::UNAUTHORIZED);
    let login = app.get("/dashboard/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.text().contains("<label for=\"key\">API key</label>"));
    let with_key = Request::get("/dashboard")
        .header(header::AUTHORIZATION, "Bearer dash-key")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(with_key).await.status, StatusCode::OK);
}

/// Behind Caddy on TLS the cookie is Secure: Caddy says so in `X-Forwarded-Proto`, which
/// only a trusted proxy (loopback by default) is believed about.
#[tokio::test]
async fn behind_a_trusted_proxy_on_tls_the_session_cookie_is_secure() {
    let app = keyed_app().await;
    let csrf = csrf_of(&app.get("/dashboard/login").await.text());
    let body = format!("key=dash-key&csrf={csrf}");
    for (peer, secure) in [("127.0.0.1:40000", true), ("203.0.113.9:40000", false)] {
        let mut request = form("/dashboard/login", &body, &[("x-forwarded-proto", "https")]);
        request.extensions_mut().insert(Peer(peer.parse().unwrap()));
        let signed_in = app.send(request).await;
        let cookie = signed_in.header("set-cookie").unwrap();
        assert_eq!(cookie.contains("; Secure"), secure, "from {peer}: {cookie}");
    }
}

#[tokio::test]
async fn a_key_opens_a_session_until_sign_out() {
    let app = keyed_app().await;
    let csrf = csrf_of(&app.get("/dashboard/login").await.text());
    let signed_in = app.send(form("/dashboard/login", &format!("key=dash-key&csrf={csrf}"), &[])).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.text());
    assert_eq!(signed_in.header("location"), Some("/dashboard"));
    let set_cookie = signed_in.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let page = app.send(with_cookie("/dashboard", &cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("Sign out"));
    let session_csrf = csrf_of(&html);
    assert_ne!(session_csrf, csrf, "forms in a session carry the session's token");

    let forged = app.send(form("/dashboard/logout", &format!("csrf={csrf}"), &[("cookie", &cookie)])).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let foreign = form("/dashboard/logout", &format!("csrf={session_csrf}"), &[("cookie", &cookie)]);
    let mut foreign = foreign;
    foreign.headers_mut().insert(header::ORIGIN, "https://evil.test".parse().unwrap());
    assert_eq!(app.send(foreign).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.send(with_cookie("/dashboard", &cookie)).await.status, StatusCode::OK, "still signed in");

    let out =
        app.send(form("/dashboard/logout", &format!("csrf={session_csrf}"), &[("cookie", &cookie)])).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(app.send(with_cookie("/dashboard", &cookie)).await.status, StatusCode::SEE_OTHER, "ended");
}

#[tokio::test]
async fn sign_in_refuses_wrong_keys_foreign_origins_and_missing_tokens() {
    let app = keyed_app().await;
    let csrf = csrf_of(&app.get("/dashboard/login").await.text());
    let wrong = app.send(form("/dashboard/login", &format!("key=nope&csrf={csrf}"), &[])).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text().contains("That key is not valid."));
    assert!(wrong.header("set-cookie").is_none());
    let no_token = app.send(form("/dashboard/login", "key=dash-key&csrf=0000", &[])).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let mut foreign = form("/dashboard/login", &format!("key=dash-key&csrf={csrf}"), &[]);
    foreign.headers_mut().insert(header::ORIGIN, "http://evil.test".parse().unwrap());
    assert_eq!(app.send(foreign).await.status, StatusCode::FORBIDDEN);
    let cross_site =
        form("/dashboard/login", &format!("key=dash-key&csrf={csrf}"), &[("sec-fetch-site", "cross-site")]);
    let mut cross_site = cross_site;
    cross_site.headers_mut().remove(header::ORIGIN);
    assert_eq!(app.send(cross_site).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_throttled() {
    let app = keyed_app().await;
    let csrf = csrf_of(&app.get("/dashboard/login").await.text());
    for _ in 0..5 {
        let wrong = app.send(form("/dashboard/login", &format!("key=nope&csrf={csrf}"), &[])).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    let held = app.send(form("/dashboard/login", &format!("key=dash-key&csrf={csrf}"), &[])).await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS, "even the right key waits");
    assert!(held.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);
    assert!(held.header("set-cookie").is_none());
}

#[tokio::test]
async fn expired_or_foreign_sessions_are_refused() {
    let (store, data) = sqlite_store().await;
    let mut config = Config::load(|_| None, None).unwrap();
    config.api_keys = vec![Secret::new("dash-key")];
    config.session_secret = Some(Secret::new("kept-across-restarts"));
    let app = TestApp::with_config(store, memory_cache(), &config, data);
    let sessions = Sessions::new(config.session_secret.as_ref());
    let fresh = sessions.issue(Utc::now());
    let expired = sessions.issue(Utc::now() - TimeDelta::hours(13));
    let foreign = Sessions::new(None).issue(Utc::now());
    let status = |token: String| {
        let request = with_cookie("/dashboard", &format!("exai_session={token}"));
        async { app.send(request).await.status }
    };
    assert_eq!(status(fresh).await, StatusCode::OK, "signed with the configured secret");
    assert_eq!(status(expired).await, StatusCode::SEE_OTHER);
    assert_eq!(status(foreign).await, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn threads_are_searched_filtered_and_paged() {
    let app = TestApp::new().await;
    for n in 0..51 {
        app.create_thread(json!({"title": format!("bulk {n}")})).await;
    }
    let needle = app.create_thread(json!({"title": "needle in the haystack"})).await;

    let first = app.get("/dashboard/threads").await;
    assert_eq!(first.status, StatusCode::OK);
    let html = first.text();
    assert!(html.contains(&needle), "newest first");
    let start = html.find("/dashboard/threads?q=&#38;status=all&#38;cursor=").expect("a next page");
    let next = html[start..start + html[start..].find('"').unwrap()].replace("&#38;", "&");
    let second = app.get(&next).await.text();
    assert!(second.contains("bulk 0") && !second.contains(&needle), "the next page continues");
    assert!(!second.contains("rel=\"next\""), "and is the last");

    let found = app.get("/dashboard/threads?q=needle").await.text();
    assert!(found.contains(&needle) && !found.contains("bulk 1"));
    assert!(found.contains("value=\"needle\""), "the search stays in its box");
    let expired = app.get("/dashboard/threads?status=expired").await.text();
    assert!(expired.contains("No threads match."));
    assert!(expired.contains("<option value=\"expired\" selected>"));
}

#[tokio::test]
async fn a_thread_page_shows_turns_metadata_parent_and_children_as_text() {
    let app = TestApp::new().await;
    let parent = app.create_thread(json!({"title": "parent"})).await;
    let child = app
        .create_thread(
            json!({"title": HOSTILE, "parent_id": parent, "metadata": {"note": "<b>bold</b>", "n": 1}}),
        )
        .await;
    app.append(&child, "<script>alert('turn')</script>").await;

    let page = app.get(&format!("/dashboard/threads/{child}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_locked_down(&page);
    let html = page.text();
    assert!(html.contains("&#60;script&#62;alert(&#39;turn&#39;)&#60;/script&#62;"), "{html}");
    assert!(!html.contains("<script>alert") && !html.contains("<b>bold"));
    assert!(
        html.contains("{\n  &#34;n&#34;: 1,\n  &#34;note&#34;: &#34;&#60;b&#62;bold&#60;/b&#62;&#34;\n}"),
        "pretty: {html}"
    );
    assert!(html.contains(&format!("href=\"/dashboard/threads/{parent}\"")), "parent link");
    assert!(html.contains("1 of 20"));

    let parent_page = app.get(&format!("/dashboard/threads/{parent}")).await.text();
    assert!(parent_page.contains("Continued by"), "{parent_page}");
    assert!(parent_page.contains(&format!("href=\"/dashboard/threads/{child}\"")), "child link");
    assert!(parent_page.contains("&#60;script&#62;") && !parent_page.contains("<script>alert"));
    let child_page = app.get(&format!("/dashboard/threads/{child}")).await.text();
    assert!(!child_page.contains("Continued by"), "a thread without children lists none");

    let missing = app.get(&format!("/dashboard/threads/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_a_thread_asks_first_and_needs_the_form_token() {
    let app = TestApp::new().await;
    let thread = app.create_thread(json!({"title": "to delete"})).await;
    let confirm = app.get(&format!("/dashboard/threads/{thread}/delete")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let csrf = csrf_of(&confirm.text());
    let uri = format!("/dashboard/threads/{thread}/delete");

    assert_eq!(app.send(form(&uri, "csrf=forged", &[])).await.status, StatusCode::FORBIDDEN);
    let mut foreign = form(&uri, &format!("csrf={csrf}"), &[]);
    foreign.headers_mut().insert(header::ORIGIN, "http://evil.test".parse().unwrap());
    assert_eq!(app.send(foreign).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get(&format!("/v1/threads/{thread}")).await.status, StatusCode::OK, "still there");

    let deleted = app.send(form(&uri, &format!("csrf={csrf}"), &[])).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(deleted.header("location"), Some("/dashboard/threads"));
    assert_eq!(app.get(&format!("/v1/threads/{thread}")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_settings_page_redacts_every_secret() {
    let app = keyed_app().await;
    let request = Request::get("/dashboard/settings")
        .header(header::AUTHORIZATION, "Bearer dash-key")
        .body(Body::empty())
        .unwrap();
    let page = app.send(request).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_locked_down(&page);
    let html = page.text();
    assert!(html.contains("1 key(s), hidden") && html.contains("random per start"), "{html}");
    assert!(html.contains("MAX_CONVERSATION_TURNS"));
    assert!(!html.contains("dash-key"), "{html}");
    let health = Request::get("/healthz").header(header::AUTHORIZATION, "Bearer dash-key");
    let instance = app.send(health.body(Body::empty()).unwrap()).await.json()["instance"].clone();
    assert!(html.contains(instance.as_str().unwrap()), "the instance id is shown: {html}");
}

#[tokio::test]
async fn a_first_load_of_the_overview_stays_under_100_kb() {
    let app = TestApp::new().await;
    for n in 0..20 {
        app.create_thread(json!({"title": format!("a thread with a fairly long title, number {n}")})).await;
    }
    let html = app.get("/dashboard").await.text();
    let assets = ["/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js"];
    let mut total = html.len();
    for asset in assets {
        total += app.get(asset).await.body.len();
    }
    assert!(total < 100 * 1024, "{total} bytes");
}
