//! The SQLite schema's migrations, run over a database written by an earlier schema.

use chrono::Utc;
use exai::domain::{NewTurn, Role, truncate_to_micros};
use exai::store::{AppendTurns, SqliteStore, Store};
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
         INSERT INTO messages (conversation_id, seq, role, content, idempotency_key, created_at) \
         VALUES (?1, 1, 'user', 'keyed', 'k', ?2), (?1, 2, 'assistant', 'plain', NULL, ?2), \
         (?1, 3, 'user', 'also plain', NULL, ?2)",
    )
    .bind(thread.to_string())
    .bind(at)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let stored = store.get_thread(thread).await.unwrap().unwrap();
    let turns: Vec<(u32, &str)> = stored.turns.iter().map(|t| (t.seq, t.content.as_str())).collect();
    assert_eq!(turns, [(1, "keyed"), (2, "plain"), (3, "also plain")]);

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
}
