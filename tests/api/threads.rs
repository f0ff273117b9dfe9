//! Thread endpoints, end to end through the router.

use axum::http::StatusCode;
use chrono::{TimeDelta, Utc};
use exai::domain::NewThread;
use serde_json::json;
use uuid::Uuid;

use crate::support::{TestApp, policy};

#[tokio::test]
async fn creates_reads_and_deletes_a_thread() {
    let app = TestApp::new().await;
    let body = json!({"title": "Refactor", "tool_name": "chat", "metadata": {"k": [1, 2]}});
    let created = app.post_json("/v1/threads", &body).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let thread = created.json();
    let id = thread["id"].as_str().unwrap();
    assert_eq!(created.header("location"), Some(format!("/v1/threads/{id}").as_str()));
    assert!(created.header("x-request-id").is_some());
    assert_eq!(thread["title"], "Refactor");
    assert_eq!(thread["metadata"], json!({"k": [1, 2]}));
    assert_eq!((thread["turn_count"].as_u64(), thread["max_turns"].as_u64()), (Some(0), Some(20)));
    assert_eq!((thread["turns_remaining"].as_u64(), thread["expired"].as_bool()), (Some(20), Some(false)));
    assert_eq!(thread["turns"], json!([]));

    let read = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.header("content-type"), Some("application/json"));
    assert_eq!(read.json(), thread);

    assert_eq!(app.delete(&format!("/v1/threads/{id}")).await.status, StatusCode::NO_CONTENT);
    app.get(&format!("/v1/threads/{id}")).await.assert_problem(StatusCode::NOT_FOUND, "thread_not_found");
    app.delete(&format!("/v1/threads/{id}")).await.assert_problem(StatusCode::NOT_FOUND, "thread_not_found");
}

#[tokio::test]
async fn expiry_is_derived_from_the_last_turn() {
    let app = TestApp::new().await;
    let id = app.create_thread(json!({})).await;
    let before = app.get(&format!("/v1/threads/{id}")).await.json();
    app.append(&id, "hello").await;
    let after = app.get(&format!("/v1/threads/{id}")).await.json();
    assert!(after["expires_at"].as_str() > before["expires_at"].as_str());
    let updated: chrono::DateTime<Utc> = after["updated_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<Utc> = after["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires - updated, TimeDelta::hours(24));
    assert_eq!(after["turns"][0]["content"], "hello");
    assert_eq!(after["turns_remaining"], 19);
}

#[tokio::test]
async fn an_expired_thread_stays_readable_and_is_listed_as_expired() {
    let app = TestApp::new().await;
    let old = NewThread { title: Some("last week".into()), ..NewThread::default() };
    let stale =
        app.store().create_thread(Uuid::new_v4(), &old, Utc::now() - TimeDelta::days(7)).await.unwrap();
    let live = app.create_thread(json!({"title": "today"})).await;

    let read = app.get(&format!("/v1/threads/{}", stale.id)).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json()["expired"], true);

    let expired = app.get("/v1/threads?status=expired").await.json();
    assert_eq!(expired["data"].as_array().unwrap().len(), 1);
    assert_eq!(expired["data"][0]["id"], stale.id.to_string());
    let active = app.get("/v1/threads?status=active").await.json();
    assert_eq!(active["data"][0]["id"], live);
    assert_eq!(app.get("/v1/threads?status=all").await.json()["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn lists_threads_newest_activity_first_with_a_cursor() {
    let app = TestApp::new().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_thread(json!({"title": format!("thread {i}")})).await);
    }
    app.append(&ids[1], "bump").await;

    let mut listed = Vec::new();
    let mut uri = "/v1/threads?limit=2".to_owned();
    loop {
        let page = app.get(&uri).await.json();
        assert!(page["data"].as_array().unwrap().len() <= 2);
        for thread in page["data"].as_array().unwrap() {
            assert!(thread.get("turns").is_none(), "listings carry no turns");
            listed.push(thread["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/threads?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let expected = [&ids[1], &ids[4], &ids[3], &ids[2], &ids[0]];
    assert_eq!(listed.iter().collect::<Vec<_>>(), expected);

    let found = app.get("/v1/threads?q=THREAD%203").await.json();
    assert_eq!(found["data"][0]["id"].as_str(), Some(ids[3].as_str()));
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn history_follows_parents_and_collects_files() {
    let app = TestApp::new().await;
    let root = app.create_thread(json!({"title": "root"})).await;
    let turn = json!({"role": "user", "content": "look", "files": ["a.rs", "b.rs"]});
    app.post_json(&format!("/v1/threads/{root}/turns"), &turn).await;
    let child = app.create_thread(json!({"parent_id": root})).await;
    let turn = json!({"role": "assistant", "content": "seen", "files": ["c.rs", "a.rs"]});
    app.post_json(&format!("/v1/threads/{child}/turns"), &turn).await;

    let history = app.get(&format!("/v1/threads/{child}/history")).await;
    assert_eq!(history.status, StatusCode::OK);
    let history = history.json();
    assert_eq!(history["thread_ids"], json!([root, child]));
    assert_eq!(history["turns"][0]["content"], "look");
    assert_eq!(history["turns"][1]["content"], "seen");
    assert_eq!(history["files"], json!(["c.rs", "a.rs", "b.rs"]));
    assert_eq!(history["total_turns"], 2);

    let missing = Uuid::new_v4();
    app.get(&format!("/v1/threads/{missing}/history"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "thread_not_found");
}

#[tokio::test]
async fn a_missing_parent_is_a_validation_error() {
    let app = TestApp::start(policy(20), &[]).await;
    let body = json!({"parent_id": Uuid::new_v4()});
    let refused = app.post_json("/v1/threads", &body).await;
    refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(refused.json()["detail"].as_str().unwrap().starts_with("parent_id"));
}

/// A thread PostgreSQL holds and no JSON reader can read (written behind exai's back)
/// does not take the list down: the page answers without it and pages on past it.
#[tokio::test]
async fn a_list_page_answers_past_an_unreadable_thread() {
    let Some(url) = crate::support::services::postgres_database() else { return };
    let store = std::sync::Arc::new(exai::store::PostgresStore::connect(&url).unwrap());
    let app = TestApp::with_backends(store, crate::support::memory_cache(), policy(20));
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.create_thread(json!({"title": format!("t{i}")})).await);
    }
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE conversations SET metadata = '{\"n\": -1e400}' WHERE id = $1::uuid")
        .bind(&ids[1])
        .execute(&raw)
        .await
        .unwrap();
    let first = app.get("/v1/threads?limit=2").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let first = first.json();
    assert_eq!(first["data"].as_array().unwrap().len(), 1);
    assert_eq!(first["data"][0]["id"], ids[2].as_str());
    let cursor = first["next_cursor"].as_str().expect("more follow");
    let rest = app.get(&format!("/v1/threads?limit=2&cursor={cursor}")).await.json();
    assert_eq!(rest["data"][0]["id"], ids[0].as_str());
    assert_eq!(rest["next_cursor"], json!(null));
}
