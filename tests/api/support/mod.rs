//! Starting the service for tests: in-process for most, as a real process where the
//! test is about the process itself.

pub mod backends;
pub mod caddy;
pub mod cdp;
pub mod ex_ai;
pub mod postgrest;
pub mod process;
pub mod redis_proxy;
pub mod runs;
pub mod services;
pub mod slow_store;
pub mod upstream;

/// Declares a conformance suite's cases as tests against one backend. `$open` yields
/// `Some((subject, guard))`, or `None` when the backend is skipped; the guard keeps the
/// backend alive for the test. Cases in `shared` take the `Arc` itself, to share it
/// between tasks.
macro_rules! conformance {
    ($backend:ident, $open:expr, cases: [$($case:ident),* $(,)?], shared: [$($shared:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((subject, _guard)) = $open.await else { return };
                    super::$case(&*subject).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $shared() {
                    let Some((subject, _guard)) = $open.await else { return };
                    super::$shared(subject).await;
                }
            )*
        }
    };
}

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use bytes::Bytes;
use chrono::TimeDelta;
use http_body_util::BodyExt;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;
use tower::ServiceExt;

use exai::app::{App, AppState};
use exai::cache::{Cache, MemoryCache};
use exai::config::Config;
use exai::domain::ConversationPolicy;
use exai::http::router;
use exai::secret::Secret;
use exai::store::{SqliteStore, Store};

/// Finds a program a test needs. Without it the test is skipped and says why, unless
/// `EXAI_TEST_REQUIRE_SERVICES=1`, which turns the skip into a failure.
pub fn require_program(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|path| path.is_file());
    if found.is_none() {
        skip(&format!("{name} is not installed"));
    }
    found
}

pub fn skip(why: &str) {
    if std::env::var("EXAI_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{why}, and EXAI_TEST_REQUIRE_SERVICES=1 forbids skipping");
    }
    say_skipped(why);
}

/// Says a test is skipped, past the test harness's output capture so every run shows it.
pub fn say_skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

pub fn policy(max_turns: u32) -> ConversationPolicy {
    ConversationPolicy { timeout: TimeDelta::hours(24), max_turns }
}

/// A SQLite store in a fresh temporary directory, removed when the guard drops.
pub async fn sqlite_store() -> (Arc<SqliteStore>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("exai.db")).await.expect("open sqlite");
    (Arc::new(store), dir)
}

pub fn memory_cache() -> Arc<dyn Cache> {
    Arc::new(MemoryCache::new(16 * 1024 * 1024))
}

/// The whole application on the embedded default, driven through its router.
pub struct TestApp {
    pub state: AppState,
    router: Router,
    _data: TempDir,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::start(policy(20), &[]).await
    }

    pub async fn start(policy: ConversationPolicy, keys: &[&str]) -> Self {
        let (store, data) = sqlite_store().await;
        Self::assemble(store, memory_cache(), policy, keys, data)
    }

    /// The application over the given backends.
    pub fn with_backends(store: Arc<dyn Store>, cache: Arc<dyn Cache>, policy: ConversationPolicy) -> Self {
        Self::assemble(store, cache, policy, &[], tempfile::tempdir().unwrap())
    }

    fn assemble(
        store: Arc<dyn Store>,
        cache: Arc<dyn Cache>,
        policy: ConversationPolicy,
        keys: &[&str],
        data: TempDir,
    ) -> Self {
        let mut config = Config::load(|_| None, None).expect("the defaults are valid");
        config.conversation = policy;
        config.api_keys = keys.iter().map(|k| Secret::new(*k)).collect();
        Self::with_config(store, cache, &config, data)
    }

    /// The application over the given backends with the given settings.
    pub fn with_config(store: Arc<dyn Store>, cache: Arc<dyn Cache>, config: &Config, data: TempDir) -> Self {
        let state = AppState::new(App::new(store, cache, config));
        Self { router: router(state.clone()), state, _data: data }
    }

    /// The application on SQLite with a `tools.toml` registry; `vars` are further
    /// environment variables the configuration sees.
    pub async fn with_tools(registry: &str, vars: &[(&str, &str)]) -> Self {
        let (store, data) = sqlite_store().await;
        Self::with_tools_over(store, registry, vars, data)
    }

    /// The application over `store` with a `tools.toml` registry written into `data`.
    pub fn with_tools_over(
        store: Arc<dyn Store>,
        registry: &str,
        vars: &[(&str, &str)],
        data: TempDir,
    ) -> Self {
        let path = data.path().join("tools.toml");
        std::fs::write(&path, registry).unwrap();
        let mut vars: std::collections::HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.insert("EXAI_TOOLS_FILE".into(), path.to_str().unwrap().into());
        let config = Config::load(|name| vars.get(name).cloned(), None).expect("a valid registry");
        Self::with_config(store, memory_cache(), &config, data)
    }

    /// Reads a server-sent event stream to its end: `(event, data, when it arrived)`.
    /// A stream that does not end within 30 s fails the test.
    pub async fn events(&self, uri: &str) -> Vec<(String, Value, std::time::Instant)> {
        let read = self.read_events(uri);
        tokio::time::timeout(std::time::Duration::from_secs(30), read).await.expect("the event stream ended")
    }

    async fn read_events(&self, uri: &str) -> Vec<(String, Value, std::time::Instant)> {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let (mut pending, mut events) = (String::new(), Vec::new());
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            pending.push_str(std::str::from_utf8(&data).unwrap());
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|line| line.strip_prefix(name)).map(|v| v.trim().to_owned())
                };
                if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                    events.push((event, serde_json::from_str(&data).unwrap(), std::time::Instant::now()));
                }
            }
        }
        events
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.state.conversations.store()
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(request).await.expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        TestResponse { status, headers, body }
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    pub async fn delete(&self, uri: &str) -> TestResponse {
        self.send(Request::delete(uri).body(Body::empty()).unwrap()).await
    }

    pub async fn post_json(&self, uri: &str, body: &Value) -> TestResponse {
        self.send(json_request(uri, body.to_string())).await
    }

    /// Creates a thread and returns its id.
    pub async fn create_thread(&self, body: Value) -> String {
        let response = self.post_json("/v1/threads", &body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
        response.json()["id"].as_str().unwrap().to_owned()
    }

    /// Appends a user turn and returns it.
    pub async fn append(&self, thread: &str, content: &str) -> Value {
        let body = serde_json::json!({"role": "user", "content": content});
        let response = self.post_json(&format!("/v1/threads/{thread}/turns"), &body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
        response.json()
    }
}

pub fn json_request(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).header(header::CONTENT_TYPE, "application/json").body(body.into()).unwrap()
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts an RFC 9457 problem with this status and code.
    pub fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let problem = self.json();
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(problem["status"], status.as_u16());
        assert_eq!(problem["type"], format!("urn:exai:problem:{code}"));
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(problem["request_id"].as_str(), self.header("x-request-id"));
    }
}
