//! Health, readiness and metrics against real dependencies that are up, stopped or hung.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::future::join_all;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use exai::cache::{Cache, RedisCache};
use exai::config::Config;
use exai::secret::Secret;
use exai::store::{PostgresStore, Store, SupabaseStore};

use crate::support::postgrest::{self, SECRET_KEY};
use crate::support::services::{PostgresServer, RedisServer, hung_listener, postgres_database, shared_redis};
use crate::support::{TestApp, memory_cache, sqlite_store};

/// Check timeout where a dependency is meant to fail: keeps the test short.
const QUICK: Duration = Duration::from_millis(500);
/// Check timeout where every dependency is meant to answer: never what fails a test on
/// a loaded machine.
const PATIENT: Duration = Duration::from_secs(5);

fn app(store: Arc<dyn Store>, cache: Arc<dyn Cache>, check_timeout: Duration) -> TestApp {
    let mut config = Config::load(|_| None, None).unwrap();
    config.health.timeout = check_timeout;
    TestApp::with_config(store, cache, &config, tempfile::tempdir().unwrap())
}

fn redis(url: &str) -> Arc<dyn Cache> {
    Arc::new(RedisCache::connect(url, &format!("health-{}", uuid::Uuid::new_v4().simple())).unwrap())
}

fn postgres(url: &str) -> Arc<dyn Store> {
    Arc::new(PostgresStore::connect(url).unwrap())
}

fn hung_postgres() -> Arc<dyn Store> {
    postgres(&format!("postgres://postgres@127.0.0.1:{}/exai", hung_listener()))
}

/// `/healthz`, which must answer whatever hangs: a hung dependency never answers, so
/// only the check timeout can end the request. The margin is wide for a loaded machine;
/// how close to the timeout it answers is measured in `bench/health.py`.
async fn healthz(app: &TestApp, check_timeout: Duration) -> (StatusCode, Value) {
    let started = Instant::now();
    let response = app.get("/healthz").await;
    let took = started.elapsed();
    assert!(took < check_timeout + Duration::from_secs(5), "/healthz took {took:?}");
    (response.status, response.json())
}

fn assert_check(report: &Value, name: &str, status: &str, backend: &str) {
    let check = &report["checks"][name];
    assert_eq!(check["status"], status, "{report}");
    assert_eq!(check["backend"], backend, "{report}");
    assert!(check["response_time_ms"].as_f64().is_some(), "{report}");
    assert!(check["timestamp"].as_str().is_some(), "{report}");
    assert_eq!(check.get("error").is_some(), status == "unhealthy", "{report}");
}

#[tokio::test]
async fn every_backend_up_is_healthy() {
    let (sqlite, _dir) = sqlite_store().await;
    let (status, report) = healthz(&app(sqlite, memory_cache(), PATIENT), PATIENT).await;
    assert_eq!((status, report["status"].as_str()), (StatusCode::OK, Some("healthy")));
    assert_check(&report, "store", "healthy", "sqlite");
    assert_check(&report, "cache", "healthy", "memory");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert!(report["instance"].as_str().is_some_and(|id| id.len() == 32), "{report}");

    let (Some(database), Some(redis_server)) = (postgres_database(), shared_redis()) else {
        return;
    };
    let (status, report) =
        healthz(&app(postgres(&database), redis(&redis_server.url()), PATIENT), PATIENT).await;
    assert_eq!((status, report["status"].as_str()), (StatusCode::OK, Some("healthy")), "{report}");
    assert_check(&report, "store", "healthy", "postgres");
    assert_check(&report, "cache", "healthy", "redis");

    let gateway = postgrest::start(&database, SECRET_KEY).await;
    let supabase = SupabaseStore::connect(&gateway.url.parse().unwrap(), &Secret::new(SECRET_KEY)).unwrap();
    let (status, report) = healthz(&app(Arc::new(supabase), memory_cache(), PATIENT), PATIENT).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_check(&report, "store", "healthy", "supabase");
}

#[tokio::test]
async fn a_stopped_or_hung_cache_is_degraded() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (sqlite, _dir) = sqlite_store().await;
    let stopped = app(sqlite.clone(), redis(&server.url()), QUICK);
    server.kill();
    let (status, report) = healthz(&stopped, QUICK).await;
    assert_eq!((status, report["status"].as_str()), (StatusCode::OK, Some("degraded")), "{report}");
    assert_check(&report, "cache", "unhealthy", "redis");
    assert_check(&report, "store", "healthy", "sqlite");

    let hung = app(sqlite, redis(&format!("redis://127.0.0.1:{}", hung_listener())), QUICK);
    let (status, report) = healthz(&hung, QUICK).await;
    assert_eq!((status, report["status"].as_str()), (StatusCode::OK, Some("degraded")), "{report}");
    assert_check(&report, "cache", "unhealthy", "redis");
}

#[tokio::test]
async fn a_stopped_or_hung_store_is_unhealthy() {
    let Some(mut server) = PostgresServer::start() else {
        return;
    };
    let stopped = app(postgres(&server.url(&server.migrated_database())), memory_cache(), QUICK);
    server.stop();
    let (status, report) = healthz(&stopped, QUICK).await;
    assert_eq!((status, report["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unhealthy")));
    assert_check(&report, "store", "unhealthy", "postgres");
    assert_check(&report, "cache", "healthy", "memory");
    let ready = stopped.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["status"], "not_ready");

    let hung = app(hung_postgres(), memory_cache(), QUICK);
    let (status, report) = healthz(&hung, QUICK).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(report["checks"]["store"]["error"], "no answer within 500 ms");

    let project = format!("http://127.0.0.1:{}/", hung_listener());
    let hung_supabase = SupabaseStore::connect(&project.parse().unwrap(), &Secret::new(SECRET_KEY)).unwrap();
    let (status, report) = healthz(&app(Arc::new(hung_supabase), memory_cache(), QUICK), QUICK).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_check(&report, "store", "unhealthy", "supabase");
}

#[tokio::test]
async fn a_refused_supabase_key_is_a_configuration_error() {
    let Some(database) = postgres_database() else {
        return;
    };
    let gateway = postgrest::start(&database, SECRET_KEY).await;
    let wrong =
        SupabaseStore::connect(&gateway.url.parse().unwrap(), &Secret::new("sb_secret_wrong")).unwrap();
    let (status, report) = healthz(&app(Arc::new(wrong), memory_cache(), PATIENT), PATIENT).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let error = report["checks"]["store"]["error"].as_str().unwrap();
    assert!(error.starts_with("configuration error:") && error.contains("refused the key"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_probe_per_dependency() {
    let Some(redis_server) = RedisServer::start() else {
        return;
    };
    let Some(database) = postgres_database() else {
        return;
    };
    let app = app(postgres(&database), redis(&redis_server.url()), PATIENT);
    let pings_before = redis_pings(redis_server.port);
    let calls = join_all((0..100).map(|_| app.get("/healthz"))).await;
    assert!(calls.iter().all(|c| c.status == StatusCode::OK));
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);

    let pings = redis_pings(redis_server.port) - pings_before;
    assert_eq!(pings, 1, "PINGs Redis received");
    // Postgres publishes a session's function counts when the session ends.
    drop(app);
    let deadline = Instant::now() + Duration::from_secs(20);
    let probes = loop {
        let probes = postgres_pings(&database).await;
        if probes > 0 || Instant::now() > deadline {
            break probes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(probes, 1, "exai_ping calls Postgres counted");
}

fn redis_pings(port: u16) -> u64 {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&output.stdout);
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_ping:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

async fn postgres_pings(database: &str) -> i64 {
    let pool = sqlx::PgPool::connect(database).await.unwrap();
    let calls: Option<i64> =
        sqlx::query_scalar("SELECT calls FROM pg_stat_user_functions WHERE funcname = 'exai_ping'")
            .fetch_optional(&pool)
            .await
            .unwrap();
    pool.close().await;
    calls.unwrap_or(0)
}

#[tokio::test]
async fn health_comes_in_text_and_in_the_ietf_format() {
    let (sqlite, _dir) = sqlite_store().await;
    let app = app(sqlite, memory_cache(), PATIENT);
    let text = app.get("/healthz?format=text").await;
    assert_eq!(text.header("content-type"), Some("text/plain; charset=utf-8"));
    let lines: Vec<String> = text.text().lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("healthy in "), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("store  sqlite") && l.ends_with(" ms")), "{lines:?}");

    let request =
        Request::get("/healthz").header("accept", "application/health+json").body(Body::empty()).unwrap();
    let ietf = app.send(request).await;
    assert_eq!(ietf.header("content-type"), Some("application/health+json"));
    let body = ietf.json();
    assert_eq!(body["status"], "pass");
    let store = &body["checks"]["store:responseTime"][0];
    assert_eq!((store["observedUnit"].as_str(), store["status"].as_str()), (Some("ms"), Some("pass")));
    assert!(store["observedValue"].as_f64().is_some() && store["time"].as_str().is_some());
    assert_eq!(store["componentType"], "datastore");
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests() {
    let (sqlite, _dir) = sqlite_store().await;
    let app = app(sqlite, memory_cache(), PATIENT);
    let id = app.create_thread(serde_json::json!({})).await;
    app.get(&format!("/v1/threads/{id}")).await;
    app.get("/healthz").await;
    let before = scrape(&app).await;
    for _ in 0..3 {
        app.get(&format!("/v1/threads/{id}")).await;
    }
    app.get("/v1/threads/not-a-uuid").await;
    app.post_json("/v1/tools/echo/runs", &serde_json::json!({"input": "hi"})).await;
    let after = scrape(&app).await;

    let reads =
        r#"exai_http_request_duration_seconds_count{route="/v1/threads/{id}",method="GET",status="200"}"#;
    assert_eq!(after[reads] - before[reads], 3.0);
    let bad =
        r#"exai_http_request_duration_seconds_count{route="/v1/threads/{id}",method="GET",status="400"}"#;
    assert_eq!(after[bad], 1.0);
    let hits = r#"exai_cache_hits_total{backend="memory"}"#;
    assert_eq!(after[hits] - before[hits], 3.0);
    assert!(
        after[r#"exai_store_operation_duration_seconds_count{op="create_thread",backend="sqlite"}"#] >= 1.0
    );
    assert!(after[r#"exai_store_round_trips_total{backend="sqlite"}"#] >= 1.0);
    assert_eq!(after[r#"exai_health_check_up{check="store",backend="sqlite"}"#], 1.0);
}

/// Everything `/healthz`, `/readyz` and their formats say, with `authorization` sent.
async fn probe_texts(app: &TestApp, authorization: Option<&str>) -> Vec<String> {
    let mut texts = Vec::new();
    for (uri, accept) in [
        ("/healthz", "application/json"),
        ("/healthz?format=text", "*/*"),
        ("/healthz", "application/health+json"),
        ("/readyz", "*/*"),
    ] {
        let mut request = Request::get(uri).header("accept", accept);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = app.send(request.body(Body::empty()).unwrap()).await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {}", response.text());
        texts.push(response.text());
    }
    texts
}

#[tokio::test]
async fn with_api_keys_probes_show_details_only_to_a_key() {
    let (listener, store) = (hung_listener(), "postgres://exai_role@127.0.0.1");
    let store = postgres(&format!("{store}:{listener}/exai"));
    let mut config = Config::load(|_| None, None).unwrap();
    config.health.timeout = QUICK;
    config.api_keys = vec![Secret::new("probe-key")];
    let app = TestApp::with_config(store, memory_cache(), &config, tempfile::tempdir().unwrap());
    let version = env!("CARGO_PKG_VERSION");
    let details = ["postgres", "no answer within", version];

    for authorization in [None, Some("Bearer wrong-key"), Some("Basic probe-key")] {
        for text in probe_texts(&app, authorization).await {
            for detail in details {
                assert!(!text.contains(detail), "{detail} shown to {authorization:?}: {text}");
            }
        }
    }
    let public = app.get("/healthz").await.json();
    assert_eq!(public["status"], "unhealthy");
    assert!(public.get("instance").is_none(), "{public}");
    let store = &public["checks"]["store"];
    assert_eq!(store["status"], "unhealthy", "{public}");
    assert!(store["response_time_ms"].as_f64().is_some(), "{public}");
    let text = app.get("/healthz?format=text").await.text();
    assert!(text.starts_with("unhealthy in ") && text.contains("store  -"), "{text}");

    let shown = probe_texts(&app, Some("Bearer probe-key")).await;
    for (text, expected) in shown.iter().zip([&details[..], &details[..], &details[..], &details[1..2]]) {
        for detail in expected {
            assert!(text.contains(detail), "{detail} not shown with the key: {text}");
        }
    }
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let (sqlite, _dir) = sqlite_store().await;
    let app = app(sqlite, memory_cache(), PATIENT);
    let random = || uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    let stray = |method: String, path: String| {
        Request::builder().method(method.as_str()).uri(path).body(Body::empty()).unwrap()
    };
    // One of each kind first, so the shared `other` and `unmatched` series exist.
    app.send(stray(format!("X{}", random()), format!("/{}", random()))).await;
    app.send(stray(format!("X{}", random()), "/v1/threads".into())).await;
    app.send(stray("GET".into(), format!("/v1/{}", random()))).await;
    let http_series = |samples: &HashMap<String, f64>| {
        samples.keys().filter(|name| name.starts_with("exai_http_request_duration_seconds_count")).count()
    };
    let before = scrape(&app).await;
    for _ in 0..50 {
        app.send(stray(format!("X{}", random()), format!("/{}/{}", random(), random()))).await;
        app.send(stray(format!("X{}", random()), "/v1/threads".into())).await;
        app.send(stray("GET".into(), format!("/v1/{}", random()))).await;
    }
    let after = scrape(&app).await;
    // The scrape itself adds its own series the first time; every other one was there.
    assert_eq!(http_series(&after), http_series(&before) + 1, "{:?}", after.keys().collect::<Vec<_>>());
    let other = r#"exai_http_request_duration_seconds_count{route="unmatched",method="other",status="404"}"#;
    assert_eq!(after[other] - before[other], 50.0);
    let unmatched =
        r#"exai_http_request_duration_seconds_count{route="unmatched",method="GET",status="404"}"#;
    assert_eq!(after[unmatched] - before[unmatched], 50.0);
}

/// Scrapes `/metrics` and returns its samples by name with labels.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = app.get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    parse_exposition(&response.text())
}

/// A strict reading of the Prometheus text format: every family declares its type
/// before its samples, every sample is `name{label="value",…} number`.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let is_name = |name: &str| {
        name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let (family, kind) = declaration.split_once(' ').unwrap();
            assert!(is_name(family), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            types.insert(family.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(is_name(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap();
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (label, quoted) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(is_name(label), "{line}");
                assert!(!quoted.trim_end_matches('"').contains('\n'), "{line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix).filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE before {line}");
        samples.insert(series.to_owned(), value);
    }
    assert!(!samples.is_empty());
    samples
}
