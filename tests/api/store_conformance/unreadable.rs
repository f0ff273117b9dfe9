//! Rows written behind the store's back that cannot be read.

use chrono::TimeDelta;
use exai::domain::{NewThread, RunStatus};
use exai::secret::Secret;
use exai::store::{Activity, Cursor, PostgresStore, RunQuery, Store, SupabaseStore, ThreadQuery};
use uuid::Uuid;

use super::runs::run;
use super::{append, depth, new_thread, now, titled, user};
use crate::support;
use crate::support::postgrest;
use crate::support::services;

/// Four threads and four runs, the second of each, and the first turn of a chain's
/// parent made unreadable behind the store's back by `corrupt`: pages of two still
/// answer, leave that row out and page on past it; the chain's history answers without
/// the turn.
async fn lists_past_unreadable_rows(store: &dyn Store, corrupt: impl AsyncFnOnce(Uuid, Uuid, Uuid)) {
    let base = now() + TimeDelta::days(30);
    let mut threads = Vec::new();
    let mut runs = Vec::new();
    let tool = format!("t{}", Uuid::new_v4().simple());
    for i in 0..4 {
        threads.push(new_thread(store, titled(&format!("row {i}")), base - TimeDelta::minutes(i)).await);
        let saved = run(&tool, RunStatus::Completed, base - TimeDelta::minutes(i));
        store.save_run(&saved).await.unwrap();
        runs.push(saved);
    }
    let parent = new_thread(store, titled("parent"), now()).await;
    store.append_turns(&append(parent, vec![user("bad"), user("good")], support::policy(20))).await.unwrap();
    let child = new_thread(store, NewThread { parent_id: Some(parent), ..titled("child") }, now()).await;
    store.append_turns(&append(child, vec![user("mine")], support::policy(20))).await.unwrap();
    corrupt(threads[1], runs[1].id, parent).await;

    let chain = store.history(child, depth(20)).await.expect("one bad turn does not fail the chain").unwrap();
    let contents: Vec<&str> = chain.turns.iter().map(|t| t.content.as_str()).collect();
    assert_eq!((chain.thread_ids, contents), (vec![parent, child], vec!["good", "mine"]));

    let query = |after| ThreadQuery {
        limit: 2,
        after,
        search: Some("row ".into()),
        activity: Activity::Any,
        continuation_id: None,
    };
    let first = store.list_threads(&query(None)).await.expect("one bad row does not fail the page");
    assert_eq!(first.items.iter().map(|t| t.id).collect::<Vec<_>>(), [threads[0]]);
    assert_eq!(first.next, Some(Cursor::new(base - TimeDelta::minutes(1), threads[1])));
    let second = store.list_threads(&query(first.next)).await.unwrap();
    assert_eq!(second.items.iter().map(|t| t.id).collect::<Vec<_>>(), [threads[2], threads[3]]);
    assert_eq!(second.next, None);

    let query = |after| RunQuery { limit: 2, after, tool: Some(tool.clone()), status: None };
    let first = store.list_runs(&query(None)).await.expect("one bad row does not fail the page");
    assert_eq!(first.items, [runs[0].clone()]);
    let second = store.list_runs(&query(first.next)).await.unwrap();
    assert_eq!(second.items, [runs[2].clone(), runs[3].clone()]);
    assert_eq!(second.next, None);
}

#[tokio::test]
async fn sqlite_lists_past_unreadable_rows() {
    let (store, dir) = support::sqlite_store().await;
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("exai.db").display()))
        .await
        .unwrap();
    lists_past_unreadable_rows(&*store, async |thread, run, parent| {
        sqlx::query("UPDATE messages SET metadata = 'not json' WHERE conversation_id = ?1 AND seq = 1")
            .bind(parent.to_string())
            .execute(&raw)
            .await
            .unwrap();
        sqlx::query("UPDATE conversations SET metadata = 'not json' WHERE id = ?1")
            .bind(thread.to_string())
            .execute(&raw)
            .await
            .unwrap();
        sqlx::query("UPDATE tool_runs SET status = 'lost' WHERE id = ?1")
            .bind(run.to_string())
            .execute(&raw)
            .await
            .unwrap();
    })
    .await;
}

/// A number PostgreSQL holds and no JSON reader can: what an older version, or another
/// writer of the adopted tables, may have left behind.
async fn corrupt_postgres_rows(url: &str, thread: Uuid, run: Uuid, parent: Uuid) {
    let raw = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query("UPDATE messages SET metadata = '{\"n\": 1e400}' WHERE conversation_id = $1 AND seq = 1")
        .bind(parent)
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("UPDATE conversations SET metadata = '{\"n\": 1e400}' WHERE id = $1")
        .bind(thread)
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("UPDATE tool_runs SET status = 'lost' WHERE id = $1").bind(run).execute(&raw).await.unwrap();
}

#[tokio::test]
async fn postgres_lists_past_unreadable_rows() {
    let Some(url) = services::postgres_database() else { return };
    let store = PostgresStore::connect(&url).unwrap();
    lists_past_unreadable_rows(&store, async |thread, run, parent| {
        corrupt_postgres_rows(&url, thread, run, parent).await
    })
    .await;
}

#[tokio::test]
async fn supabase_lists_past_unreadable_rows() {
    let Some(url) = services::postgres_database() else { return };
    let gateway = postgrest::start(&url, postgrest::SECRET_KEY).await;
    let store = SupabaseStore::connect(&gateway.url.parse().unwrap(), &Secret::new(postgrest::SECRET_KEY));
    lists_past_unreadable_rows(&store.unwrap(), async |thread, run, parent| {
        corrupt_postgres_rows(&url, thread, run, parent).await
    })
    .await;
}
