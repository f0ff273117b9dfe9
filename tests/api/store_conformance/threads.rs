//! Creating, listing, paging and deleting threads.

use chrono::TimeDelta;
use exai::domain::{Metadata, NewThread, Rejection};
use exai::store::{Activity, Cursor, Page, Store, ThreadQuery, WriteError};
use serde_json::json;
use uuid::Uuid;

use super::{append, new_thread, now, titled, user};
use crate::support;

pub async fn creates_and_reads_threads(store: &dyn Store) {
    let mut metadata = Metadata::new();
    metadata.insert("origin".into(), json!({"tool": "chat", "n": 3}));
    let new = NewThread {
        title: Some("Ünïcode title".into()),
        tool_name: Some("chat".into()),
        parent_id: None,
        metadata,
    };
    let at = now();
    let created = store.create_thread(Uuid::new_v4(), &new, at).await.unwrap();
    assert_eq!((created.turn_count, created.version), (0, 1));
    assert_eq!((created.created_at, created.updated_at), (at, at));

    let read = store.get_thread(created.id).await.unwrap().expect("thread exists");
    assert_eq!(read.thread, created);
    assert!(read.turns.is_empty());
    assert_eq!(store.get_thread(Uuid::new_v4()).await.unwrap(), None);
}

pub async fn refuses_a_missing_parent(store: &dyn Store) {
    let missing = Uuid::new_v4();
    let new = NewThread { parent_id: Some(missing), ..NewThread::default() };
    let refused = store.create_thread(Uuid::new_v4(), &new, now()).await;
    assert_eq!(refused, Err(WriteError::Refused(Rejection::ParentNotFound(missing))));
}

pub async fn lists_threads_by_activity_with_keyset_paging(store: &dyn Store) {
    let base = now() - TimeDelta::hours(10);
    let mut ids = Vec::new();
    for (i, title) in ["alpha", "Beta", "gamma 100%", "delta_x", "epsilon"].iter().enumerate() {
        ids.push(new_thread(store, titled(title), base + TimeDelta::hours(i as i64)).await);
    }
    let query = |limit, after, search: Option<&str>, activity| ThreadQuery {
        limit,
        after,
        search: search.map(str::to_owned),
        activity,
        continuation_id: None,
    };

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_threads(&query(2, after, None, Activity::Any)).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|t| t.id).filter(|id| ids.contains(id)));
        let last = page.items.last().map(|last| Cursor::new(last.updated_at, last.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert_eq!(last, after, "the next page starts after the last thread");
    }
    let newest_first: Vec<Uuid> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);

    let titles = |threads: Page<exai::domain::Thread>| -> Vec<String> {
        threads.items.into_iter().filter(|t| ids.contains(&t.id)).filter_map(|t| t.title).collect()
    };
    let beta = store.list_threads(&query(10, None, Some("BETA"), Activity::Any)).await.unwrap();
    assert_eq!(titles(beta), ["Beta"]);
    let percent = store.list_threads(&query(10, None, Some("0%"), Activity::Any)).await.unwrap();
    assert_eq!(titles(percent), ["gamma 100%"]);
    let underscore = store.list_threads(&query(10, None, Some("a_"), Activity::Any)).await.unwrap();
    assert_eq!(titles(underscore), ["delta_x"]);

    let cutoff = base + TimeDelta::hours(2);
    let recent = store.list_threads(&query(100, None, None, Activity::ChangedAfter(cutoff))).await.unwrap();
    assert_eq!(titles(recent), ["epsilon", "delta_x"]);
    let old = store.list_threads(&query(100, None, None, Activity::ChangedAtOrBefore(cutoff))).await.unwrap();
    assert_eq!(titles(old), ["gamma 100%", "Beta", "alpha"]);

    let by_continuation_id =
        |id: String| ThreadQuery { continuation_id: Some(id), ..query(100, None, None, Activity::Any) };
    let found = store.list_threads(&by_continuation_id(ids[1].to_string())).await.unwrap();
    assert_eq!(found.items.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[1]]);
    let none = store.list_threads(&by_continuation_id("not-a-thread".into())).await.unwrap();
    assert!(none.items.is_empty());
}

pub async fn pages_through_threads_changed_at_the_same_instant(store: &dyn Store) {
    let at = now();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(new_thread(store, NewThread::default(), at).await);
    }
    ids.sort_by_key(|id| std::cmp::Reverse(id.to_string()));
    let mut seen = Vec::new();
    let mut after = None;
    while seen.len() < 4 {
        let query =
            ThreadQuery { limit: 1, after, search: None, activity: Activity::Any, continuation_id: None };
        let Some(thread) = store.list_threads(&query).await.unwrap().items.pop() else { break };
        after = Some(Cursor::new(thread.updated_at, thread.id));
        seen.push(thread.id);
    }
    assert_eq!(seen, ids, "ties are broken by id, each thread listed once");
}

pub async fn finds_titles_by_substring_through_their_index(store: &dyn Store) {
    let marker = Uuid::new_v4().simple().to_string();
    let titles = [format!("Report {marker} ÉTÉ"), format!("draft {marker}"), "unrelated".to_owned()];
    let mut ids = Vec::new();
    for title in &titles {
        ids.push(new_thread(store, titled(title), now()).await);
    }
    let search = |term: String| ThreadQuery {
        limit: 10,
        after: None,
        search: Some(term),
        activity: Activity::Any,
        continuation_id: None,
    };
    let found = |page: Page<exai::domain::Thread>| -> Vec<Uuid> { page.items.iter().map(|t| t.id).collect() };
    let both = store.list_threads(&search(marker.to_uppercase())).await.unwrap();
    assert_eq!(found(both), [ids[1], ids[0]], "case-insensitive, newest first");
    let one = store.list_threads(&search(format!("ReporT {}", &marker[..8]))).await.unwrap();
    assert_eq!(found(one), [ids[0]]);
    let paged = store.list_threads(&ThreadQuery { limit: 1, ..search(marker.clone()) }).await.unwrap();
    let next = paged.next.expect("a second match follows");
    let rest = ThreadQuery { limit: 1, after: Some(next), ..search(marker.clone()) };
    assert_eq!(found(store.list_threads(&rest).await.unwrap()), [ids[0]]);
    assert!(store.delete_thread(ids[0]).await.unwrap());
    assert_eq!(found(store.list_threads(&search(marker)).await.unwrap()), [ids[1]]);
}

pub async fn lists_children_newest_first(store: &dyn Store) {
    let base = now() - TimeDelta::hours(1);
    let parent = new_thread(store, titled("parent"), base).await;
    let mut children = Vec::new();
    for minutes in 1..=3 {
        let new = NewThread { parent_id: Some(parent), ..titled("child") };
        children.push(new_thread(store, new, base + TimeDelta::minutes(minutes)).await);
    }
    let grandchild = NewThread { parent_id: Some(children[0]), ..titled("grandchild") };
    new_thread(store, grandchild, base + TimeDelta::minutes(4)).await;
    let ids = |page: &Page<exai::domain::Thread>| -> Vec<Uuid> { page.items.iter().map(|t| t.id).collect() };

    let all = store.list_children(parent, 10).await.unwrap();
    assert_eq!(ids(&all), [children[2], children[1], children[0]]);
    assert_eq!(all.next, None);
    let first_two = store.list_children(parent, 2).await.unwrap();
    assert_eq!(ids(&first_two), [children[2], children[1]]);
    assert!(first_two.next.is_some(), "more children follow");
    assert!(store.list_children(children[2], 10).await.unwrap().items.is_empty());
    assert!(store.list_children(Uuid::new_v4(), 10).await.unwrap().items.is_empty());
}

pub async fn deletes_threads_with_their_turns(store: &dyn Store) {
    let id = new_thread(store, titled("doomed"), now()).await;
    store.append_turns(&append(id, vec![user("bye")], support::policy(20))).await.unwrap();
    assert!(store.delete_thread(id).await.unwrap());
    assert_eq!(store.get_thread(id).await.unwrap(), None);
    assert_eq!(store.list_turns(id, 0, 10).await.unwrap(), None);
    assert!(!store.delete_thread(id).await.unwrap());
}
