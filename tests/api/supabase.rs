//! The Supabase store's own concerns: its two kinds of key, and failures that must
//! never read as "not found".

use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

use exai::config::Secret;
use exai::domain::NewThread;
use exai::store::{Store, StoreError, SupabaseStore};

use crate::support::postgrest::{self, JWT_KEY, SECRET_KEY};
use crate::support::services::{free_port, postgres_database};
use crate::support::{TestApp, memory_cache, policy, say_skipped};

fn store(url: &str, key: &str) -> SupabaseStore {
    SupabaseStore::connect(&url.parse().unwrap(), &Secret::new(key)).unwrap()
}

#[tokio::test]
async fn a_legacy_jwt_key_is_also_sent_as_a_bearer_token() {
    let Some(database) = postgres_database() else {
        return;
    };
    let gateway = postgrest::start(&database, JWT_KEY).await;
    let store = store(&gateway.url, JWT_KEY);
    let thread = store
        .create_thread(Uuid::new_v4(), &NewThread::default(), chrono::Utc::now())
        .await
        .unwrap();
    assert!(store.get_thread(thread.id).await.unwrap().is_some());
    store.ping().await.unwrap();
}

#[tokio::test]
async fn a_refused_key_is_a_failure_not_a_missing_thread() {
    let Some(database) = postgres_database() else {
        return;
    };
    let gateway = postgrest::start(&database, SECRET_KEY).await;
    let wrong = store(&gateway.url, "sb_secret_wrong");
    let refused = wrong.get_thread(Uuid::new_v4()).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Misconfigured(cause) if cause.contains("refused the key")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_unreachable_project_is_503_not_404() {
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let app = TestApp::with_backends(
        Arc::new(store(&dead, SECRET_KEY)),
        memory_cache(),
        policy(20),
    );
    let response = app.get(&format!("/v1/threads/{}", Uuid::new_v4())).await;
    response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    let create = app.post_json("/v1/threads", &json!({})).await;
    create.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
}

/// Against a real project, when one is named. Opt-in: it writes a thread there (and
/// deletes it again), so it never runs by default.
#[tokio::test]
async fn a_live_project_round_trip() {
    let (Ok(url), Ok(key)) = (
        std::env::var("EXAI_TEST_SUPABASE_URL"),
        std::env::var("EXAI_TEST_SUPABASE_KEY"),
    ) else {
        say_skipped(
            "the live Supabase test is opt-in: set EXAI_TEST_SUPABASE_URL and EXAI_TEST_SUPABASE_KEY",
        );
        return;
    };
    let store: Arc<dyn Store> = Arc::new(store(&url, &key));
    let app = TestApp::with_backends(store, memory_cache(), policy(20));
    let id = app.create_thread(json!({"title": "exai live test"})).await;
    app.append(&id, "hello from the test suite").await;
    let history = app.get(&format!("/v1/threads/{id}/history")).await.json();
    assert_eq!(history["total_turns"], 1);
    assert_eq!(
        app.delete(&format!("/v1/threads/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
}
