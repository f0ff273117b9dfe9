//! Appending turns: their order, idempotency, the refusals, concurrency, paging.

use chrono::TimeDelta;
use exai::domain::{ConversationPolicy, Rejection, Role};
use exai::store::{Store, WriteError};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

use super::{append, new_thread, now, titled, user};
use crate::support;

pub async fn appends_with_contiguous_seqs(store: &dyn Store) {
    let id = new_thread(store, titled("seqs"), now()).await;
    let first = store.append_turns(&append(id, vec![user("one")], support::policy(20))).await.unwrap();
    assert_eq!(first.turns.len(), 1);
    assert_eq!(first.turns[0].seq, 1);
    assert!(!first.replayed);

    let mut rich = user("three");
    rich.role = Role::Assistant;
    rich.tool_name = Some("chat".into());
    rich.files = vec!["src/main.rs".into(), "https://example.org/a".into()];
    rich.model_provider = Some("glm".into());
    rich.model_name = Some("glm-4.6".into());
    rich.metadata.insert("tokens".into(), json!(42));
    let batch = append(id, vec![user("two"), rich.clone()], support::policy(20));
    let second = store.append_turns(&batch).await.unwrap();
    assert_eq!(second.turns.iter().map(|t| t.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(second.thread.turn_count, 3);
    assert_eq!(second.thread.version, 3);
    assert_eq!(second.thread.updated_at, batch.now);

    let stored = store.get_thread(id).await.unwrap().unwrap();
    assert_eq!(stored.thread, second.thread, "the header the append answered is the one stored");
    assert_eq!(stored.turns[1..], second.turns, "the append answered the turns it wrote");
    let last = &stored.turns[2];
    assert_eq!((last.role, last.content.as_str(), last.thread_id), (Role::Assistant, "three", id));
    assert_eq!(last.files, rich.files);
    assert_eq!(last.tool_name, rich.tool_name);
    assert_eq!((last.model_provider.as_deref(), last.model_name.as_deref()), (Some("glm"), Some("glm-4.6")));
    assert_eq!(last.metadata, rich.metadata);
    assert_eq!(last.created_at, batch.now);
}

pub async fn replays_an_idempotent_append(store: &dyn Store) {
    let id = new_thread(store, titled("idempotent"), now()).await;
    let mut keyed = append(id, vec![user("once")], support::policy(20));
    keyed.idempotency_key = Some("key-1".into());
    let original = store.append_turns(&keyed).await.unwrap();

    keyed.turns = vec![user("a different body")];
    let replay = store.append_turns(&keyed).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.turns, original.turns);
    assert_eq!(replay.thread, original.thread);

    keyed.idempotency_key = Some("key-2".into());
    let next = store.append_turns(&keyed).await.unwrap();
    assert_eq!((next.replayed, next.turns[0].seq), (false, 2));
    // A replay of an earlier append answers its turns, not the newest ones.
    keyed.idempotency_key = Some("key-1".into());
    let late = store.append_turns(&keyed).await.unwrap();
    assert_eq!(late.turns, original.turns);
    assert_eq!(late.thread, store.get_thread(id).await.unwrap().unwrap().thread);
}

pub async fn refuses_appends_to_an_expired_thread(store: &dyn Store) {
    let policy = ConversationPolicy { timeout: TimeDelta::hours(1), max_turns: 20 };
    let id = new_thread(store, titled("old"), now() - TimeDelta::hours(2)).await;
    let refused = store.append_turns(&append(id, vec![user("late")], policy)).await;
    assert_eq!(refused.unwrap_err(), WriteError::Refused(Rejection::ThreadExpired(id)));
    let still_there = store.get_thread(id).await.unwrap().unwrap();
    assert_eq!(still_there.thread.turn_count, 0);
}

pub async fn refuses_appends_past_the_turn_limit(store: &dyn Store) {
    let policy = support::policy(2);
    let id = new_thread(store, titled("limited"), now()).await;
    store.append_turns(&append(id, vec![user("1")], policy)).await.unwrap();
    let too_many = store.append_turns(&append(id, vec![user("2"), user("3")], policy)).await;
    assert_eq!(
        too_many.unwrap_err(),
        WriteError::Refused(Rejection::TurnLimitReached { thread_id: id, max_turns: 2 })
    );
    store.append_turns(&append(id, vec![user("2")], policy)).await.unwrap();
    let full = store.append_turns(&append(id, vec![user("3")], policy)).await;
    assert!(matches!(full, Err(WriteError::Refused(Rejection::TurnLimitReached { .. }))));
    assert_eq!(store.get_thread(id).await.unwrap().unwrap().turns.len(), 2);
}

pub async fn refuses_appends_to_an_unknown_thread(store: &dyn Store) {
    let id = Uuid::new_v4();
    let refused = store.append_turns(&append(id, vec![user("?")], support::policy(20))).await;
    assert_eq!(refused.unwrap_err(), WriteError::Refused(Rejection::ThreadNotFound(id)));
}

pub async fn pages_through_turns(store: &dyn Store) {
    let id = new_thread(store, titled("turns"), now()).await;
    assert_eq!(store.list_turns(id, 0, 10).await.unwrap(), Some(vec![]));
    let turns = (1..=5).map(|i| user(&i.to_string())).collect();
    store.append_turns(&append(id, turns, support::policy(20))).await.unwrap();
    let page = store.list_turns(id, 1, 2).await.unwrap().unwrap();
    assert_eq!(page.iter().map(|t| t.seq).collect::<Vec<_>>(), [2, 3]);
    let rest = store.list_turns(id, 3, 10).await.unwrap().unwrap();
    assert_eq!(rest.iter().map(|t| t.content.as_str()).collect::<Vec<_>>(), ["4", "5"]);
    assert_eq!(store.list_turns(Uuid::new_v4(), 0, 10).await.unwrap(), None);
}

pub async fn serializes_concurrent_appends(store: Arc<dyn Store>) {
    let id = new_thread(&*store, titled("busy"), now()).await;
    let writers = (0..8).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..25 {
                let turn = user(&format!("{w}-{i}"));
                store.append_turns(&append(id, vec![turn], support::policy(1000))).await.unwrap();
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    let thread = store.get_thread(id).await.unwrap().unwrap();
    assert_eq!(thread.thread.turn_count, 200);
    assert_eq!(thread.turns.iter().map(|t| t.seq).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
}
