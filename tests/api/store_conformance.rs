//! One behaviour for every store backend: each case runs against each of them.

use chrono::{DateTime, TimeDelta, Utc};
use exai::domain::{
    ConversationPolicy, HISTORY_MAX_BYTES, HistoryLimits, Metadata, NewThread, NewTurn, Role, RunStatus,
    ToolRun, truncate_to_micros,
};
use exai::store::{Activity, AppendTurns, Cursor, Page, RunQuery, Store, StoreError, ThreadQuery};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

use crate::support;
use crate::support::postgrest::{self, PostgrestServer};
use crate::support::services;
use exai::config::Secret;
use exai::store::{PostgresStore, SupabaseStore};

fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

fn titled(title: &str) -> NewThread {
    NewThread { title: Some(title.into()), ..NewThread::default() }
}

fn user(content: &str) -> NewTurn {
    NewTurn::new(Role::User, content)
}

fn depth(max_depth: u32) -> HistoryLimits {
    HistoryLimits { max_depth, max_bytes: HISTORY_MAX_BYTES }
}

fn append(thread_id: Uuid, turns: Vec<NewTurn>, policy: ConversationPolicy) -> AppendTurns {
    AppendTurns { thread_id, turns, idempotency_key: None, policy, now: now() }
}

async fn new_thread(store: &dyn Store, new: NewThread, at: DateTime<Utc>) -> Uuid {
    store.create_thread(Uuid::new_v4(), &new, at).await.expect("create thread").id
}

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
    assert_eq!(refused, Err(StoreError::ParentNotFound(missing)));
}

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
    assert_eq!(second.thread.thread.turn_count, 3);
    assert_eq!(second.thread.thread.version, 3);
    assert_eq!(second.thread.thread.updated_at, batch.now);
    assert_eq!(second.thread.turns.len(), 3);

    let stored = store.get_thread(id).await.unwrap().unwrap();
    assert_eq!(stored.turns, second.thread.turns);
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
    assert_eq!(replay.thread.thread.turn_count, 1);
    assert_eq!(replay.thread.thread.version, original.thread.thread.version);

    keyed.idempotency_key = Some("key-2".into());
    let next = store.append_turns(&keyed).await.unwrap();
    assert_eq!((next.replayed, next.turns[0].seq), (false, 2));
}

pub async fn refuses_appends_to_an_expired_thread(store: &dyn Store) {
    let policy = ConversationPolicy { timeout: TimeDelta::hours(1), max_turns: 20 };
    let id = new_thread(store, titled("old"), now() - TimeDelta::hours(2)).await;
    let refused = store.append_turns(&append(id, vec![user("late")], policy)).await;
    assert_eq!(refused.unwrap_err(), StoreError::ThreadExpired(id));
    let still_there = store.get_thread(id).await.unwrap().unwrap();
    assert_eq!(still_there.thread.turn_count, 0);
}

pub async fn refuses_appends_past_the_turn_limit(store: &dyn Store) {
    let policy = support::policy(2);
    let id = new_thread(store, titled("limited"), now()).await;
    store.append_turns(&append(id, vec![user("1")], policy)).await.unwrap();
    let too_many = store.append_turns(&append(id, vec![user("2"), user("3")], policy)).await;
    assert_eq!(too_many.unwrap_err(), StoreError::TurnLimitReached { thread_id: id, max_turns: 2 });
    store.append_turns(&append(id, vec![user("2")], policy)).await.unwrap();
    let full = store.append_turns(&append(id, vec![user("3")], policy)).await;
    assert!(matches!(full, Err(StoreError::TurnLimitReached { .. })));
    assert_eq!(store.get_thread(id).await.unwrap().unwrap().turns.len(), 2);
}

pub async fn refuses_appends_to_an_unknown_thread(store: &dyn Store) {
    let id = Uuid::new_v4();
    let refused = store.append_turns(&append(id, vec![user("?")], support::policy(20))).await;
    assert_eq!(refused.unwrap_err(), StoreError::ThreadNotFound(id));
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

/// Builds a chain of `len` threads, each continuing the previous one, with two turns each.
async fn chain(store: &dyn Store, len: usize) -> Vec<Uuid> {
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

/// A run as [`Store::reserve_run`] records it: queued, on `thread`.
fn queued_run(thread: Uuid) -> ToolRun {
    ToolRun { continuation_id: thread, ..run("echo", RunStatus::Queued, now()) }
}

pub async fn reserves_room_for_the_turns_of_runs_under_way(store: &dyn Store) {
    let thread = new_thread(store, titled("runs"), now()).await;
    let (first, second) = (queued_run(thread), queued_run(thread));
    store.reserve_run(&first, support::policy(5), now()).await.unwrap();
    store.reserve_run(&second, support::policy(5), now()).await.unwrap();
    assert_eq!(store.get_run(first.id).await.unwrap(), Some(first.clone()), "the run is recorded");
    let full = store.reserve_run(&queued_run(thread), support::policy(5), now()).await;
    assert_eq!(full, Err(StoreError::TurnLimitReached { thread_id: thread, max_turns: 5 }));

    // Once a run's turns are appended they count as turns, no longer as a reservation,
    // though the run has not recorded its end yet.
    let mut turns = append(thread, vec![user("q"), user("a")], support::policy(5));
    turns.idempotency_key = Some(exai::store::run_idempotency_key(first.id));
    store.append_turns(&turns).await.unwrap();
    store.reserve_run(&queued_run(thread), support::policy(6), now()).await.unwrap();
    let refused = store.reserve_run(&queued_run(thread), support::policy(6), now()).await;
    assert!(matches!(refused, Err(StoreError::TurnLimitReached { .. })), "{refused:?}");
    // A run that ended without turns gives its room back.
    let ended = ToolRun { status: RunStatus::Failed, finished_at: Some(now()), ..second };
    store.save_run(&ended).await.unwrap();
    store.reserve_run(&queued_run(thread), support::policy(6), now()).await.unwrap();

    let old = new_thread(store, titled("old"), now() - TimeDelta::days(2)).await;
    let expired = store.reserve_run(&queued_run(old), support::policy(20), now()).await;
    assert_eq!(expired, Err(StoreError::ThreadExpired(old)));
    let missing = Uuid::new_v4();
    let orphan = queued_run(missing);
    let unknown = store.reserve_run(&orphan, support::policy(20), now()).await;
    assert_eq!(unknown, Err(StoreError::ThreadNotFound(missing)));
    assert_eq!(store.get_run(orphan.id).await.unwrap(), None, "a refused run is not recorded");
}

pub async fn appends_leave_the_room_runs_reserved(store: &dyn Store) {
    let thread = new_thread(store, titled("reserved"), now()).await;
    let run = queued_run(thread);
    store.reserve_run(&run, support::policy(3), now()).await.unwrap();
    let crowding = store.append_turns(&append(thread, vec![user("a"), user("b")], support::policy(3))).await;
    assert_eq!(crowding.unwrap_err(), StoreError::TurnLimitReached { thread_id: thread, max_turns: 3 });
    store.append_turns(&append(thread, vec![user("fits")], support::policy(3))).await.unwrap();
    // The run's own turns take the room it reserved.
    let mut answer = append(thread, vec![user("q"), user("a")], support::policy(3));
    answer.idempotency_key = Some(exai::store::run_idempotency_key(run.id));
    let appended = store.append_turns(&answer).await.unwrap();
    assert_eq!(appended.thread.thread.turn_count, 3);
}

/// The reservation is the promise: a run accepted while its thread was open records its
/// answer though the thread expired while it ran; a client's append is refused.
pub async fn a_reserved_run_records_its_answer_past_expiry(store: &dyn Store) {
    let policy = support::policy(20);
    let opened = now() - policy.timeout + TimeDelta::minutes(1);
    let thread = new_thread(store, titled("closing"), opened).await;
    let run = queued_run(thread);
    store.reserve_run(&run, policy, now()).await.unwrap();
    let later = now() + TimeDelta::minutes(2);
    let client = AppendTurns { now: later, ..append(thread, vec![user("late")], policy) };
    assert_eq!(store.append_turns(&client).await.unwrap_err(), StoreError::ThreadExpired(thread));
    let answer = AppendTurns {
        now: later,
        idempotency_key: Some(exai::store::run_idempotency_key(run.id)),
        ..append(thread, vec![user("q"), user("a")], policy)
    };
    assert_eq!(store.append_turns(&answer).await.unwrap().thread.thread.turn_count, 2);
}

pub async fn reserves_room_atomically(store: Arc<dyn Store>) {
    let thread = new_thread(&*store, titled("contended"), now()).await;
    let attempts = (0..15).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.reserve_run(&queued_run(thread), support::policy(20), now()).await })
    });
    let results: Vec<_> =
        futures_util::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let reserved = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| matches!(r, Err(StoreError::TurnLimitReached { .. }))).count();
    assert_eq!((reserved, refused), (10, 5), "{results:?}");
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

fn run(tool: &str, status: RunStatus, created_at: DateTime<Utc>) -> ToolRun {
    ToolRun {
        id: Uuid::new_v4(),
        tool: tool.into(),
        status,
        continuation_id: Uuid::new_v4(),
        input: "question".into(),
        output: None,
        error: None,
        created_at,
        started_at: None,
        finished_at: None,
        timeout_secs: 30,
        turns_remaining: None,
    }
}

pub async fn saves_and_reads_runs(store: &dyn Store) {
    let mut saved = run("echo", RunStatus::Queued, now());
    store.save_run(&saved).await.unwrap();
    assert_eq!(store.get_run(saved.id).await.unwrap(), Some(saved.clone()));
    saved.status = RunStatus::Completed;
    saved.output = Some("answer".into());
    saved.started_at = Some(now());
    saved.finished_at = Some(now() + TimeDelta::milliseconds(1500));
    saved.turns_remaining = Some(18);
    store.save_run(&saved).await.unwrap();
    assert_eq!(store.get_run(saved.id).await.unwrap(), Some(saved.clone()));
    let overtaken = ToolRun { status: RunStatus::Running, output: None, ..saved.clone() };
    store.save_run(&overtaken).await.unwrap();
    assert_eq!(store.get_run(saved.id).await.unwrap(), Some(saved), "an end is final");
    assert_eq!(store.get_run(Uuid::new_v4()).await.unwrap(), None);
}

pub async fn lists_runs_newest_first_with_filters(store: &dyn Store) {
    let tool = format!("t{}", Uuid::new_v4().simple());
    let base = now() - TimeDelta::minutes(10);
    let statuses = [RunStatus::Completed, RunStatus::Failed, RunStatus::Completed, RunStatus::TimedOut];
    let mut ids = Vec::new();
    for (i, status) in statuses.into_iter().enumerate() {
        let saved = run(&tool, status, base + TimeDelta::seconds(i as i64));
        store.save_run(&saved).await.unwrap();
        ids.push(saved.id);
    }
    store.save_run(&run("other", RunStatus::Completed, base)).await.unwrap();
    let query = |after, status| RunQuery { limit: 3, after, tool: Some(tool.clone()), status };
    let first = store.list_runs(&query(None, None)).await.unwrap();
    assert_eq!(first.items.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[3], ids[2], ids[1]]);
    let last = first.items.last().unwrap();
    assert_eq!(first.next, Some(Cursor::new(last.created_at, last.id)));
    let rest = store.list_runs(&query(first.next, None)).await.unwrap();
    assert_eq!((rest.items.iter().map(|r| r.id).collect::<Vec<_>>(), rest.next), (vec![ids[0]], None));
    let completed = store.list_runs(&query(None, Some(RunStatus::Completed))).await.unwrap();
    assert_eq!(completed.items.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[2], ids[0]]);
}

pub async fn fails_runs_a_previous_process_left_unfinished(store: &dyn Store) {
    let cutoff = now();
    let old_running = run("echo", RunStatus::Running, cutoff - TimeDelta::seconds(5));
    let old_queued = run("echo", RunStatus::Queued, cutoff - TimeDelta::seconds(4));
    let old_done = run("echo", RunStatus::Completed, cutoff - TimeDelta::seconds(3));
    let new_running = run("echo", RunStatus::Running, cutoff + TimeDelta::seconds(1));
    for saved in [&old_running, &old_queued, &old_done, &new_running] {
        store.save_run(saved).await.unwrap();
    }
    let failed = store.fail_unfinished_runs(cutoff, "restarted", cutoff).await.unwrap();
    assert!(failed >= 2, "{failed}");
    for id in [old_running.id, old_queued.id] {
        let read = store.get_run(id).await.unwrap().unwrap();
        assert_eq!(
            (read.status, read.error.as_deref(), read.finished_at),
            (RunStatus::Failed, Some("restarted"), Some(cutoff))
        );
    }
    assert_eq!(store.get_run(old_done.id).await.unwrap().unwrap().status, RunStatus::Completed);
    assert_eq!(store.get_run(new_running.id).await.unwrap().unwrap().status, RunStatus::Running);
}

/// Numbers as clients send them: the extremes of every JSON number serde_json holds.
const NUMBERS: [&str; 16] = [
    "1.7976931348623157e308",
    "1.7e308",
    "1e300",
    "5e-324",
    "2.2250738585072014e-308",
    "-0.0",
    "-0",
    "0.1",
    "123.456",
    "1e-7",
    "18446744073709551615",
    "-9223372036854775808",
    "18446744073709551616",
    "-9223372036854775809",
    "100000000000000000000000000000",
    "1.0",
];

/// Every number the domain accepts reads back as the exact JSON it was written as:
/// in the thread, its turns, a turn page, the history and a list page.
pub async fn reads_accepted_numbers_back_exactly(store: &dyn Store) {
    let mut refused = Vec::new();
    for text in NUMBERS {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let metadata: Metadata = [("n".to_owned(), value)].into_iter().collect();
        let new = NewThread { metadata: metadata.clone(), ..titled(text) };
        if new.validate().is_err() {
            refused.push(text);
            continue;
        }
        let written = serde_json::to_string(&metadata).unwrap();
        let at = now() + TimeDelta::days(1);
        let id = new_thread(store, new, at).await;
        let turn = NewTurn { metadata: metadata.clone(), ..user("numbers") };
        let mut append = append(id, vec![turn], support::policy(20));
        append.now = at;
        store.append_turns(&append).await.unwrap_or_else(|e| panic!("{text}: {e}"));
        let read = |what: &str, metadata: &Metadata| {
            assert_eq!(serde_json::to_string(metadata).unwrap(), written, "{text} in {what}");
        };
        let thread = store.get_thread(id).await.unwrap_or_else(|e| panic!("{text}: {e}")).unwrap();
        read("thread", &thread.thread.metadata);
        read("turn", &thread.turns[0].metadata);
        let page = store.list_turns(id, 0, 10).await.unwrap_or_else(|e| panic!("{text}: {e}")).unwrap();
        read("turn page", &page[0].metadata);
        let history = store.history(id, depth(20)).await.unwrap_or_else(|e| panic!("{text}: {e}")).unwrap();
        read("history", &history.turns[0].metadata);
        let query = ThreadQuery {
            limit: 1,
            after: None,
            search: Some(text.into()),
            activity: Activity::Any,
            continuation_id: None,
        };
        let listed = store.list_threads(&query).await.unwrap_or_else(|e| panic!("{text}: {e}"));
        read("list page", &listed.items[0].metadata);
        assert!(store.delete_thread(id).await.unwrap());
    }
    assert_eq!(refused, ["-0.0", "-0"], "only negative zero cannot be stored everywhere");
}

/// Declares every case above as a test against one backend.
macro_rules! store_conformance {
    ($backend:ident, $open:expr) => {
        conformance!(
            $backend,
            $open,
            cases: [
                creates_and_reads_threads,
                refuses_a_missing_parent,
                appends_with_contiguous_seqs,
                replays_an_idempotent_append,
                refuses_appends_to_an_expired_thread,
                refuses_appends_past_the_turn_limit,
                refuses_appends_to_an_unknown_thread,
                lists_threads_by_activity_with_keyset_paging,
                pages_through_threads_changed_at_the_same_instant,
                finds_titles_by_substring_through_their_index,
                lists_children_newest_first,
                deletes_threads_with_their_turns,
                pages_through_turns,
                reads_history_along_parents_in_one_round_trip,
                bounds_history_depth,
                keeps_the_newest_turns_within_the_byte_budget,
                reserves_room_for_the_turns_of_runs_under_way,
                appends_leave_the_room_runs_reserved,
                a_reserved_run_records_its_answer_past_expiry,
                saves_and_reads_runs,
                lists_runs_newest_first_with_filters,
                fails_runs_a_previous_process_left_unfinished,
                reads_accepted_numbers_back_exactly,
            ],
            shared: [serializes_concurrent_appends, reserves_room_atomically]
        );
    };
}

pub async fn sqlite() -> Option<(Arc<dyn Store>, tempfile::TempDir)> {
    let (store, dir) = support::sqlite_store().await;
    Some((store, dir))
}

pub async fn postgres() -> Option<(Arc<dyn Store>, ())> {
    let url = services::postgres_database()?;
    Some((Arc::new(PostgresStore::connect(&url).unwrap()), ()))
}

pub async fn supabase() -> Option<(Arc<dyn Store>, PostgrestServer)> {
    let url = services::postgres_database()?;
    let gateway = postgrest::start(&url, postgrest::SECRET_KEY).await;
    let project = gateway.url.parse().unwrap();
    let store = SupabaseStore::connect(&project, &Secret::new(postgrest::SECRET_KEY)).unwrap();
    Some((Arc::new(store), gateway))
}

store_conformance!(sqlite_backend, super::sqlite());
store_conformance!(postgres_backend, super::postgres());
store_conformance!(supabase_backend, super::supabase());

/// A cycle cannot be made through the API (a parent must exist first), but adopted or
/// hand-edited data can hold one; history must still end.
#[tokio::test]
async fn sqlite_history_survives_a_parent_cycle() {
    let (store, dir) = support::sqlite_store().await;
    let ids = chain(&*store, 2).await;
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("exai.db").display()))
        .await
        .unwrap();
    sqlx::query("UPDATE conversations SET parent_id = ?1 WHERE id = ?2")
        .bind(ids[1].to_string())
        .bind(ids[0].to_string())
        .execute(&raw)
        .await
        .unwrap();
    let history = store.history(ids[1], depth(20)).await.unwrap().unwrap();
    assert_eq!(history.thread_ids, ids);
    assert_eq!(history.turns.len(), 4);
}

#[tokio::test]
async fn postgres_history_survives_a_parent_cycle() {
    let Some(url) = services::postgres_database() else { return };
    let store = PostgresStore::connect(&url).unwrap();
    let ids = chain(&store, 2).await;
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE conversations SET parent_id = $1 WHERE id = $2")
        .bind(ids[1])
        .bind(ids[0])
        .execute(&raw)
        .await
        .unwrap();
    let history = store.history(ids[1], depth(20)).await.unwrap().unwrap();
    assert_eq!(history.thread_ids, ids);
    assert_eq!(history.turns.len(), 4);
}

/// Four threads and four runs, the second of each made unreadable behind the store's
/// back by `corrupt`: pages of two still answer, leave that row out, and page on past it.
/// A thread, a run and the first turn of a chain's parent made unreadable behind the
/// store's back: pages and the chain's history still answer, without them.
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
