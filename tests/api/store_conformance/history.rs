//! A thread's history along its parents, within its bounds.

use exai::domain::{HISTORY_MAX_BYTES, HistoryLimits, NewThread};
use exai::store::{PostgresStore, Store};
use uuid::Uuid;

use super::{append, depth, new_thread, now, titled, user};
use crate::support;
use crate::support::services;

/// Builds a chain of `len` threads, each continuing the previous one, with two turns each.
pub(super) async fn chain(store: &dyn Store, len: usize) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = Vec::new();
    for i in 0..len {
        let new = NewThread { parent_id: ids.last().copied(), ..titled(&format!("link {i}")) };
        let id = new_thread(store, new, now()).await;
        let mut second = user(&format!("{i}b"));
        second.files = vec![format!("file{}", i % 3)];
        let turns = vec![user(&format!("{i}a")), second];
        store.append_turns(&append(id, turns, support::policy(20))).await.unwrap();
        ids.push(id);
    }
    ids
}

pub async fn reads_history_along_parents_in_one_round_trip(store: &dyn Store) {
    let ids = chain(store, 3).await;
    let before = store.round_trips();
    let history = store.history(ids[2], depth(20)).await.unwrap().expect("chain exists");
    assert_eq!(store.round_trips() - before, 1);
    assert_eq!(history.thread_ids, ids);
    let contents: Vec<&str> = history.turns.iter().map(|t| t.content.as_str()).collect();
    assert_eq!(contents, ["0a", "0b", "1a", "1b", "2a", "2b"]);
    assert_eq!(history.total_turns, 6);
    assert_eq!(history.turns[0].thread_id, ids[0]);
    assert_eq!(store.history(Uuid::new_v4(), depth(20)).await.unwrap(), None);
}

pub async fn bounds_history_depth(store: &dyn Store) {
    let ids = chain(store, 25).await;
    let before = store.round_trips();
    let history = store.history(ids[24], depth(20)).await.unwrap().unwrap();
    assert_eq!(store.round_trips() - before, 1, "a 20-deep chain is one round trip");
    assert_eq!(history.thread_ids, ids[4..]);
    assert_eq!((history.turns.len(), history.total_turns), (42, 42));
}

pub async fn keeps_the_newest_turns_within_the_byte_budget(store: &dyn Store) {
    // Each turn weighs 100 bytes of content, 2 of files (`[]`) and 2 of metadata (`{}`).
    let turn = |label: &str| user(&format!("{label:-<100}"));
    let older = new_thread(store, titled("older"), now()).await;
    let turns = vec![turn("1a"), turn("1b"), turn("1c")];
    store.append_turns(&append(older, turns, support::policy(20))).await.unwrap();
    let newer = new_thread(store, NewThread { parent_id: Some(older), ..titled("newer") }, now()).await;
    let turns = vec![turn("2a"), turn("2b"), turn("2c")];
    store.append_turns(&append(newer, turns, support::policy(20))).await.unwrap();

    let kept = |max_bytes| async move {
        let before = store.round_trips();
        let limits = HistoryLimits { max_depth: 20, max_bytes };
        let chain = store.history(newer, limits).await.unwrap().unwrap();
        assert_eq!(store.round_trips() - before, 1, "a budgeted history is one round trip");
        assert_eq!(chain.thread_ids, [older, newer], "every link is named, its turns kept or not");
        assert_eq!(chain.total_turns, 6);
        chain.turns.iter().map(|t| t.content[..2].to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(kept(4 * 104).await, ["1c", "2a", "2b", "2c"], "the newest turns, in order");
    assert_eq!(kept(4 * 104 - 1).await, ["2a", "2b", "2c"]);
    assert_eq!(kept(103).await, Vec::<String>::new());
    assert_eq!(kept(HISTORY_MAX_BYTES).await.len(), 6);
}

/// A cycle cannot be made through the API (a parent must exist first), but adopted or
/// hand-edited data can hold one; history must still end. `close` makes the first
/// thread of a chain of two the child of the second.
async fn history_survives_a_parent_cycle(store: &dyn Store, close: impl AsyncFnOnce(Uuid, Uuid)) {
    let ids = chain(store, 2).await;
    close(ids[0], ids[1]).await;
    let history = store.history(ids[1], depth(20)).await.unwrap().unwrap();
    assert_eq!(history.thread_ids, ids);
    assert_eq!(history.turns.len(), 4);
}

#[tokio::test]
async fn sqlite_history_survives_a_parent_cycle() {
    let (store, dir) = support::sqlite_store().await;
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("exai.db").display()))
        .await
        .unwrap();
    history_survives_a_parent_cycle(&*store, async |child, parent| {
        sqlx::query("UPDATE conversations SET parent_id = ?1 WHERE id = ?2")
            .bind(parent.to_string())
            .bind(child.to_string())
            .execute(&raw)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn postgres_history_survives_a_parent_cycle() {
    let Some(url) = services::postgres_database() else { return };
    let store = PostgresStore::connect(&url).unwrap();
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    history_survives_a_parent_cycle(&store, async |child, parent| {
        sqlx::query("UPDATE conversations SET parent_id = $1 WHERE id = $2")
            .bind(parent)
            .bind(child)
            .execute(&raw)
            .await
            .unwrap();
    })
    .await;
}
