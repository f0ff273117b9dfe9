//! The SQLite schema's migrations, run over a database written by an earlier schema.

use chrono::Utc;
use exai::domain::{NewTurn, Role, truncate_to_micros};
use exai::store::{AppendTurns, SqliteStore, Store};
use serde_json::{Value, json};
use sqlx::{Connection, Row, SqliteConnection};
use uuid::Uuid;

use crate::support::policy;

/// Migrates a new database at `url` up to and including migration `last`.
async fn migrate_up_to(url: &str, last: i64) {
    let mut migrator = sqlx::migrate!("migrations/sqlite");
    let kept: Vec<_> = migrator.migrations.iter().filter(|m| m.version <= last).cloned().collect();
    migrator.migrations = kept.into();
    let mut conn = SqliteConnection::connect(&format!("{url}?mode=rwc")).await.unwrap();
    migrator.run(&mut conn).await.unwrap();
}

fn append(thread_id: Uuid, content: &str, key: Option<&str>) -> AppendTurns {
    AppendTurns {
        thread_id,
        turns: vec![NewTurn::new(Role::User, content)],
        idempotency_key: key.map(str::to_owned),
        policy: policy(20),
        now: truncate_to_micros(Utc::now()),
    }
}

#[tokio::test]
async fn turns_written_before_keys_had_their_own_index_keep_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exai.db");
    let url = format!("sqlite://{}", path.display());
    migrate_up_to(&url, 5).await;
    let thread = Uuid::new_v4();
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let at = "2026-11-30T00:00:00.000000Z";
    sqlx::query(
        "INSERT INTO conversations (id, created_at, updated_at, turn_count) VALUES (?1, ?2, ?2, 3); \
         INSERT INTO messages (conversation_id, seq, role, content, tool_name, files, model_provider, \
         model_name, metadata, idempotency_key, created_at) VALUES \
         (?1, 1, 'user', 'keyed', NULL, '[\"a.rs\"]', NULL, NULL, '{\"n\":1}', 'k', ?2), \
         (?1, 2, 'assistant', 'plain', 'chat', '[]', 'kimi', 'k2', '{}', NULL, ?2), \
         (?1, 3, 'tool', 'also plain', 'echo', '[]', NULL, NULL, '{}', NULL, ?2)",
    )
    .bind(thread.to_string())
    .bind(at)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let stored = store.get_thread(thread).await.unwrap().unwrap();
    let turns: Vec<Value> = stored.turns.iter().map(|t| serde_json::to_value(t).unwrap()).collect();
    let created_at = "2026-11-30T00:00:00Z";
    let expected =
        |seq: u32, role: &str, content: &str, tool: Value, files: Value, model: [Value; 2], metadata| {
            json!({"thread_id": thread, "seq": seq, "role": role, "content": content, "tool_name": tool,
               "files": files, "model_provider": model[0], "model_name": model[1], "metadata": metadata,
               "created_at": created_at})
        };
    assert_eq!(
        turns,
        [
            expected(
                1,
                "user",
                "keyed",
                Value::Null,
                json!(["a.rs"]),
                [Value::Null, Value::Null],
                json!({"n": 1})
            ),
            expected(
                2,
                "assistant",
                "plain",
                json!("chat"),
                json!([]),
                [json!("kimi"), json!("k2")],
                json!({})
            ),
            expected(
                3,
                "tool",
                "also plain",
                json!("echo"),
                json!([]),
                [Value::Null, Value::Null],
                json!({})
            ),
        ]
    );

    let replay = store.append_turns(&append(thread, "again", Some("k"))).await.unwrap();
    assert!(replay.replayed && replay.turns[0].content == "keyed", "{replay:?}");
    let keyed = store.append_turns(&append(thread, "new", Some("k2"))).await.unwrap();
    assert_eq!((keyed.replayed, keyed.turns[0].seq), (false, 4));
    store.append_turns(&append(thread, "unkeyed", None)).await.unwrap();

    // The index still refuses a key used twice on a thread, whatever writes it.
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let duplicate = sqlx::query(
        "INSERT INTO messages (conversation_id, seq, role, content, idempotency_key, created_at) \
         VALUES (?1, 9, 'user', 'twice', 'k2', ?2)",
    )
    .bind(thread.to_string())
    .bind(at)
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(duplicate.to_string().contains("UNIQUE"), "{duplicate}");
    // And a lookup by key, as an append's check makes it, goes through that index.
    let plan = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT seq FROM messages WHERE conversation_id = ?1 AND idempotency_key = ?2",
    )
    .bind(thread.to_string())
    .bind("k")
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let details: Vec<String> = plan.iter().map(|row| row.get("detail")).collect();
    assert!(details.iter().any(|d| d.contains("messages_by_idempotency_key")), "{details:?}");

    // Deleting the thread still deletes its turns.
    assert!(store.delete_thread(thread).await.unwrap());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&mut conn).await.unwrap();
    assert_eq!(left, 0);
}
