//! The Supabase store's own concerns: its two kinds of key, and failures that must
//! never read as "not found".

use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

use exai::domain::NewThread;
use exai::secret::Secret;
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
    let thread =
        store.create_thread(Uuid::new_v4(), &NewThread::default(), chrono::Utc::now()).await.unwrap();
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
    let app = TestApp::with_backends(Arc::new(store(&dead, SECRET_KEY)), memory_cache(), policy(20));
    let response = app.get(&format!("/v1/threads/{}", Uuid::new_v4())).await;
    response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    let create = app.post_json("/v1/threads", &json!({})).await;
    create.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
}

/// Against a real project, when one is named. Opt-in: it writes a thread there (and
/// deletes it again), so it never runs by default.
#[tokio::test]
async fn a_live_project_round_trip() {
    let (Ok(url), Ok(key)) =
        (std::env::var("EXAI_TEST_SUPABASE_URL"), std::env::var("EXAI_TEST_SUPABASE_KEY"))
    else {
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
    assert_eq!(app.delete(&format!("/v1/threads/{id}")).await.status, StatusCode::NO_CONTENT);
}

/// Supabase exposes `public` to its anon key; after `exai migrate` only service_role (and
/// the tables' owner) can reach exai's rows and functions.
#[tokio::test]
async fn the_public_anon_key_cannot_reach_exai_data() {
    let Some(postgres) = crate::support::services::PostgresServer::start() else {
        return;
    };
    postgres.psql("postgres", "CREATE DATABASE supabase_like");
    // Roles and default grants as a Supabase project has them.
    postgres.psql(
        "supabase_like",
        "CREATE ROLE anon NOLOGIN; CREATE ROLE authenticated NOLOGIN; \
         CREATE ROLE service_role NOLOGIN BYPASSRLS; \
         GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;",
    );
    let url = postgres.url("supabase_like");
    let output =
        crate::support::process::exai_command().arg("migrate").env("DATABASE_URL", &url).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let id = Uuid::new_v4();
    sqlx::query("SELECT exai_create_thread($1, NULL, 'private', NULL, '{}', now())")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let mut connection = pool.acquire().await.unwrap();
    let statements = [
        "SELECT exai_get_thread($1)",
        "SELECT exai_history($1, 20, 1000)",
        "SELECT exai_reserve_run(jsonb_build_object('continuation_id', $1), 2, 20, 1000, now())",
        "SELECT count(*) FROM conversations WHERE id <> $1",
        "SELECT count(*) FROM _sqlx_migrations WHERE description <> $1::text",
        "DELETE FROM _sqlx_migrations WHERE description <> $1::text",
        "UPDATE _sqlx_migrations SET success = false WHERE description <> $1::text",
    ];
    for statement in statements {
        sqlx::query("SET ROLE anon").execute(&mut *connection).await.unwrap();
        let refused = sqlx::query(statement).bind(id).execute(&mut *connection).await.unwrap_err();
        let code = refused.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {refused}");
        sqlx::query("RESET ROLE").execute(&mut *connection).await.unwrap();
    }
    sqlx::query("SET ROLE service_role").execute(&mut *connection).await.unwrap();
    let thread: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT exai_get_thread($1)").bind(id).fetch_one(&mut *connection).await.unwrap();
    assert_eq!(thread.unwrap()["thread"]["title"], "private");
    let bookkeeping: bool = sqlx::query_scalar(
        "SELECT relrowsecurity FROM pg_class WHERE oid = 'public._sqlx_migrations'::regclass",
    )
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    assert!(bookkeeping, "_sqlx_migrations has row-level security");
}
