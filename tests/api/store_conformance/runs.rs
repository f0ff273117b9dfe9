//! Runs: their records, listings, and the room they reserve on their threads.

use chrono::{DateTime, TimeDelta, Utc};
use exai::domain::{Rejection, RunStatus, ToolRun};
use exai::store::{Abandoned, AppendTurns, Cursor, RunLease, RunQuery, Store, Sweep, WriteError};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use super::{append, new_thread, now, titled, user};
use crate::support;

/// A lease for an owner of its own, long enough for any test.
fn lease() -> RunLease {
    RunLease { owner: Uuid::new_v4().to_string(), expires_at: now() + TimeDelta::hours(1) }
}

/// A run as [`Store::reserve_run`] records it: queued, on `thread`.
fn queued_run(thread: Uuid) -> ToolRun {
    ToolRun { continuation_id: thread, ..run("echo", RunStatus::Queued, now()) }
}

pub async fn reserves_room_for_the_turns_of_runs_under_way(store: &dyn Store) {
    let thread = new_thread(store, titled("runs"), now()).await;
    let (first, second) = (queued_run(thread), queued_run(thread));
    store.reserve_run(&first, &lease(), support::policy(5), now()).await.unwrap();
    store.reserve_run(&second, &lease(), support::policy(5), now()).await.unwrap();
    assert_eq!(store.get_run(first.id).await.unwrap(), Some(first.clone()), "the run is recorded");
    let full = store.reserve_run(&queued_run(thread), &lease(), support::policy(5), now()).await;
    assert_eq!(
        full,
        Err(WriteError::Refused(Rejection::TurnLimitReached { thread_id: thread, max_turns: 5 }))
    );

    // Once a run's turns are appended they count as turns, no longer as a reservation,
    // though the run has not recorded its end yet.
    let mut turns = append(thread, vec![user("q"), user("a")], support::policy(5));
    turns.idempotency_key = Some(exai::store::run_idempotency_key(first.id));
    store.append_turns(&turns).await.unwrap();
    store.reserve_run(&queued_run(thread), &lease(), support::policy(6), now()).await.unwrap();
    let refused = store.reserve_run(&queued_run(thread), &lease(), support::policy(6), now()).await;
    assert!(matches!(refused, Err(WriteError::Refused(Rejection::TurnLimitReached { .. }))), "{refused:?}");
    // A run that ended without turns gives its room back.
    let ended = ToolRun { status: RunStatus::Failed, finished_at: Some(now()), ..second };
    store.save_run(&ended).await.unwrap();
    store.reserve_run(&queued_run(thread), &lease(), support::policy(6), now()).await.unwrap();

    let old = new_thread(store, titled("old"), now() - TimeDelta::days(2)).await;
    let expired = store.reserve_run(&queued_run(old), &lease(), support::policy(20), now()).await;
    assert_eq!(expired, Err(WriteError::Refused(Rejection::ThreadExpired(old))));
    let missing = Uuid::new_v4();
    let orphan = queued_run(missing);
    let unknown = store.reserve_run(&orphan, &lease(), support::policy(20), now()).await;
    assert_eq!(unknown, Err(WriteError::Refused(Rejection::ThreadNotFound(missing))));
    assert_eq!(store.get_run(orphan.id).await.unwrap(), None, "a refused run is not recorded");
}

pub async fn appends_leave_the_room_runs_reserved(store: &dyn Store) {
    let thread = new_thread(store, titled("reserved"), now()).await;
    let run = queued_run(thread);
    store.reserve_run(&run, &lease(), support::policy(3), now()).await.unwrap();
    let crowding = store.append_turns(&append(thread, vec![user("a"), user("b")], support::policy(3))).await;
    assert_eq!(
        crowding.unwrap_err(),
        WriteError::Refused(Rejection::TurnLimitReached { thread_id: thread, max_turns: 3 })
    );
    store.append_turns(&append(thread, vec![user("fits")], support::policy(3))).await.unwrap();
    // The run's own turns take the room it reserved.
    let mut answer = append(thread, vec![user("q"), user("a")], support::policy(3));
    answer.idempotency_key = Some(exai::store::run_idempotency_key(run.id));
    let appended = store.append_turns(&answer).await.unwrap();
    assert_eq!(appended.thread.turn_count, 3);
}

/// A run's end is final: once a run has ended (another process failed it when its lease
/// lapsed), a second end changes nothing and its late answer is refused.
pub async fn refuses_the_turns_of_a_run_that_has_ended(store: &dyn Store) {
    let thread = new_thread(store, titled("late"), now()).await;
    let run = queued_run(thread);
    store.reserve_run(&run, &lease(), support::policy(20), now()).await.unwrap();
    let failed =
        ToolRun { status: RunStatus::Failed, error: Some("gone".into()), finished_at: Some(now()), ..run };
    assert!(store.save_run(&failed).await.unwrap(), "the first end is recorded");
    let completed = ToolRun { status: RunStatus::Completed, output: Some("late".into()), ..failed.clone() };
    assert!(!store.save_run(&completed).await.unwrap(), "a second end is not");
    assert_eq!(store.get_run(failed.id).await.unwrap(), Some(failed.clone()));

    let mut answer = append(thread, vec![user("q"), user("late")], support::policy(20));
    answer.idempotency_key = Some(exai::store::run_idempotency_key(failed.id));
    assert_eq!(store.append_turns(&answer).await.unwrap_err(), WriteError::Refused(Rejection::RunEnded));
    assert_eq!(store.list_turns(thread, 0, 10).await.unwrap(), Some(Vec::new()));
}

/// The reservation is the promise: a run accepted while its thread was open records its
/// answer though the thread expired while it ran; a client's append is refused.
pub async fn a_reserved_run_records_its_answer_past_expiry(store: &dyn Store) {
    let policy = support::policy(20);
    let opened = now() - policy.timeout + TimeDelta::minutes(1);
    let thread = new_thread(store, titled("closing"), opened).await;
    let run = queued_run(thread);
    store.reserve_run(&run, &lease(), policy, now()).await.unwrap();
    let later = now() + TimeDelta::minutes(2);
    let client = AppendTurns { now: later, ..append(thread, vec![user("late")], policy) };
    assert_eq!(
        store.append_turns(&client).await.unwrap_err(),
        WriteError::Refused(Rejection::ThreadExpired(thread))
    );
    let answer = AppendTurns {
        now: later,
        idempotency_key: Some(exai::store::run_idempotency_key(run.id)),
        ..append(thread, vec![user("q"), user("a")], policy)
    };
    assert_eq!(store.append_turns(&answer).await.unwrap().thread.turn_count, 2);
}

pub async fn reserves_room_atomically(store: Arc<dyn Store>) {
    let thread = new_thread(&*store, titled("contended"), now()).await;
    let attempts = (0..15).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store.reserve_run(&queued_run(thread), &lease(), support::policy(20), now()).await
        })
    });
    let results: Vec<_> =
        futures_util::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let reserved = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(WriteError::Refused(Rejection::TurnLimitReached { .. }))))
        .count();
    assert_eq!((reserved, refused), (10, 5), "{results:?}");
}

pub(super) fn run(tool: &str, status: RunStatus, created_at: DateTime<Utc>) -> ToolRun {
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

async fn status(store: &dyn Store, run: &ToolRun) -> (RunStatus, Option<String>) {
    let read = store.get_run(run.id).await.unwrap().expect("the run is recorded");
    (read.status, read.error)
}

/// A sweep fails other instances' runs whose lease ended, and runs recorded without a
/// lease once their timeout and a grace have passed; never the sweeping instance's own,
/// nor a run whose owner renewed its lease. A renewal returns the runs whose cancel was
/// asked, and those that have ended.
pub async fn fails_runs_whose_lease_ended(store: &dyn Store) {
    let thread = new_thread(store, titled("leases"), now()).await;
    let (me, gone, alive) = (lease(), lease(), lease());
    let ended = |lease: &RunLease| RunLease { expires_at: now() - TimeDelta::seconds(1), ..lease.clone() };
    let (mine, abandoned, renewed, live) =
        (queued_run(thread), queued_run(thread), queued_run(thread), queued_run(thread));
    let policy = support::policy(20);
    store.reserve_run(&mine, &ended(&me), policy, now()).await.unwrap();
    store.reserve_run(&abandoned, &ended(&gone), policy, now()).await.unwrap();
    store.reserve_run(&renewed, &ended(&alive), policy, now()).await.unwrap();
    store.reserve_run(&live, &alive, policy, now()).await.unwrap();
    let renewing = [renewed.id, abandoned.id, Uuid::new_v4()];
    assert_eq!(
        store.renew_run_leases(&alive, &renewing).await.unwrap(),
        Vec::<Uuid>::new(),
        "no cancel asked"
    );
    let legacy_grace = Duration::from_secs(20);
    let old = run("echo", RunStatus::Running, now() - TimeDelta::seconds(51));
    let recent = run("echo", RunStatus::Running, now() - TimeDelta::seconds(49));
    store.save_run(&old).await.unwrap();
    store.save_run(&recent).await.unwrap();

    let sweep = |abandoned| Sweep { owner: &me.owner, abandoned, error: "gone", now: now() };
    let failed = store.fail_abandoned_runs(&sweep(Abandoned::LeaseEnded { legacy_grace })).await.unwrap();
    assert_eq!(failed, 2);
    for run in [&abandoned, &old] {
        assert_eq!(status(store, run).await, (RunStatus::Failed, Some("gone".into())));
    }
    for run in [&mine, &renewed, &live, &recent] {
        assert_ne!(status(store, run).await.0, RunStatus::Failed);
    }
    assert!(!store.request_run_cancel(abandoned.id).await.unwrap(), "an ended run is not cancelled");
    assert!(store.request_run_cancel(live.id).await.unwrap());
    let asked = store.renew_run_leases(&alive, &[renewed.id, live.id]).await.unwrap();
    assert_eq!(asked, [live.id], "the owner finds the cancel when it renews");
    let stopping = store.renew_run_leases(&gone, &[abandoned.id]).await.unwrap();
    assert_eq!(stopping, [abandoned.id], "the owner finds that its run was failed");

    // With the store to itself, an instance fails every other instance's unfinished run.
    assert_eq!(store.fail_abandoned_runs(&sweep(Abandoned::All)).await.unwrap(), 3);
    assert_ne!(status(store, &mine).await.0, RunStatus::Failed);
    assert_eq!(status(store, &live).await.0, RunStatus::Failed);
}
