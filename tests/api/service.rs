//! The conversations service over a real store: read-through, updates after writes, single-flight.

use exai::conversations::Conversations;
use exai::domain::{NewThread, NewTurn, Role};
use exai::store::Store;
use futures_util::future::join_all;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

use crate::support::slow_store::slow_store;
use crate::support::{memory_cache, policy, sqlite_store};

fn user(content: &str) -> NewTurn {
    NewTurn::new(Role::User, content)
}

fn turn_count(body: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(body).unwrap()["turn_count"].as_u64().unwrap()
}

#[tokio::test]
async fn an_append_empties_the_entry_and_the_next_read_fills_it() {
    let (store, _dir) = sqlite_store().await;
    let store: Arc<dyn Store> = store;
    let conversations = Conversations::new(store.clone(), memory_cache(), policy(20));
    let (id, _) = conversations.create_thread(NewThread::default()).await.unwrap();
    conversations.get_thread(id).await.unwrap().unwrap();
    conversations.append_turns(id, vec![user("hi")], None).await.unwrap();

    let before = store.round_trips();
    let body = conversations.get_thread(id).await.unwrap().unwrap();
    assert_eq!(turn_count(&body), 1, "the append emptied the cached document");
    assert_eq!(store.round_trips(), before + 1, "read from the store once");
    let body = conversations.get_thread(id).await.unwrap().unwrap();
    assert_eq!(turn_count(&body), 1);
    assert_eq!(store.round_trips(), before + 1, "then served from the cache");
    assert_eq!(conversations.cache_stats().since_start().hits, 1);
}

#[tokio::test]
async fn concurrent_misses_make_one_store_read() {
    let (store, _dir) = sqlite_store().await;
    let store: Arc<dyn Store> = store;
    let writer = Conversations::new(store.clone(), memory_cache(), policy(20));
    let (id, _) = writer.create_thread(NewThread::default()).await.unwrap();

    // A second service with an empty cache over the same store; its reads pause after
    // the store answers, so every caller finds the cache empty and the load under way.
    let slow = slow_store(store.clone(), Duration::from_millis(200));
    let cold = Conversations::new(Arc::new(slow), memory_cache(), policy(20));
    let before = store.round_trips();
    let reads = join_all((0..20).map(|_| cold.get_thread(id))).await;
    assert_eq!(store.round_trips() - before, 1);
    assert!(reads.iter().all(|read| read.as_ref().unwrap().is_some()));
    assert_eq!(cold.cache_stats().since_start().misses, 20);
}

#[tokio::test]
async fn a_deleted_thread_is_not_served_from_the_cache() {
    let (store, _dir) = sqlite_store().await;
    let conversations = Conversations::new(store, memory_cache(), policy(20));
    let (id, _) = conversations.create_thread(NewThread::default()).await.unwrap();
    assert!(conversations.get_thread(id).await.unwrap().is_some());
    assert!(conversations.delete_thread(id).await.unwrap());
    assert_eq!(conversations.get_thread(id).await.unwrap(), None);
}
