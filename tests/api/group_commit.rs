//! SQLite's group commit: writes queued together share one transaction, each keeping
//! its own outcome, and a crash in the middle of batches loses no acknowledged append.

use chrono::{TimeDelta, Utc};
use exai::domain::{NewThread, NewTurn, Rejection, Role, truncate_to_micros};
use exai::store::{AppendTurns, SqliteStore, Store, WriteError};
use futures_util::future::join_all;
use futures_util::poll;
use serde_json::{Value, json};
use sqlx::Connection;
use std::collections::BTreeSet;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::support::process::ExaiProcess;
use crate::support::{policy, sqlite_store};

fn append(thread_id: Uuid, content: &str, key: Option<&str>) -> AppendTurns {
    AppendTurns {
        thread_id,
        turns: vec![NewTurn::new(Role::User, content)],
        idempotency_key: key.map(str::to_owned),
        policy: policy(3),
        now: truncate_to_micros(Utc::now()),
    }
}

async fn connect(dir: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("exai.db").display())).await.unwrap()
}

/// Awaits `writes` run as one batch: while another connection holds SQLite's write
/// lock, the writer waits to begin the batch of a write of this helper's, and they are
/// queued behind it.
async fn in_one_batch<F: Future>(store: &SqliteStore, dir: &Path, writes: F) -> F::Output {
    let mut lock = connect(dir).await;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut lock).await.unwrap();
    let (commits, statements) = (store.commits(), store.round_trips());
    let new = NewThread::default();
    let mut first = pin!(store.create_thread(Uuid::new_v4(), &new, Utc::now()));
    assert!(poll!(&mut first).is_pending(), "the writer waits for the lock");
    // The writer counts its BEGIN as it sends it: from then on it is held.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.round_trips() == statements {
        assert!(Instant::now() < deadline, "the writer never took the first write");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut writes = pin!(writes);
    assert!(poll!(&mut writes).is_pending(), "not answered while the writer waits");
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    first.await.unwrap();
    let output = writes.await;
    assert_eq!(store.commits() - commits, 2, "one commit for the first write, one for the rest");
    output
}

async fn create_threads(store: &SqliteStore, count: usize) -> Vec<Uuid> {
    let mut threads = Vec::new();
    for _ in 0..count {
        let id = Uuid::new_v4();
        store.create_thread(id, &NewThread::default(), Utc::now()).await.unwrap();
        threads.push(id);
    }
    threads
}

#[tokio::test]
async fn refused_appends_leave_the_rest_of_their_batch_standing() {
    let (store, dir) = sqlite_store().await;
    let threads = create_threads(&store, 6).await;
    let (open, [full, keyed]) = threads.split_at(4) else { unreachable!() };
    let (full, keyed) = (*full, *keyed);
    for content in ["1", "2", "3"] {
        store.append_turns(&append(full, content, None)).await.unwrap();
    }
    store.append_turns(&append(keyed, "first", Some("k"))).await.unwrap();
    let expired = AppendTurns { now: Utc::now() + TimeDelta::hours(25), ..append(open[0], "late", None) };

    let mut appends = vec![
        append(full, "over the limit", None),
        expired,
        append(keyed, "again", Some("k")),
        append(Uuid::new_v4(), "nowhere", None),
    ];
    for round in 0..3 {
        appends.extend(open.iter().map(|id| append(*id, &format!("turn {round}"), None)));
    }
    let outcomes =
        in_one_batch(&store, dir.path(), join_all(appends.iter().map(|a| store.append_turns(a)))).await;

    let (refused, landed) = outcomes.split_at(4);
    assert_eq!(
        refused[0].as_ref().unwrap_err(),
        &WriteError::Refused(Rejection::TurnLimitReached { thread_id: full, max_turns: 3 })
    );
    assert_eq!(refused[1].as_ref().unwrap_err(), &WriteError::Refused(Rejection::ThreadExpired(open[0])));
    let replay = refused[2].as_ref().unwrap();
    assert!(replay.replayed && replay.turns[0].content == "first", "{replay:?}");
    assert!(matches!(refused[3], Err(WriteError::Refused(Rejection::ThreadNotFound(_)))), "{:?}", refused[3]);
    assert!(landed.iter().all(|a| a.as_ref().is_ok_and(|a| !a.replayed)), "{landed:?}");
    for id in open {
        let thread = store.get_thread(*id).await.unwrap().unwrap();
        let turns: Vec<(u32, &str)> = thread.turns.iter().map(|t| (t.seq, t.content.as_str())).collect();
        assert_eq!(turns, [(1, "turn 0"), (2, "turn 1"), (3, "turn 2")]);
        assert_eq!(thread.thread.turn_count, 3);
    }
    assert_eq!(store.get_thread(full).await.unwrap().unwrap().turns.len(), 3);
    assert_eq!(store.get_thread(keyed).await.unwrap().unwrap().turns.len(), 1);
}

#[tokio::test]
async fn an_append_whose_header_cannot_move_leaves_no_turn_and_the_batch_standing() {
    let (store, dir) = sqlite_store().await;
    let threads = create_threads(&store, 3).await;
    let refused = threads[1];
    // Make the header's UPDATE fail for one thread, after its turns were written.
    let mut conn = connect(dir.path()).await;
    sqlx::query(&format!(
        "CREATE TRIGGER header_refused BEFORE UPDATE OF turn_count ON conversations \
         WHEN NEW.id = '{refused}' BEGIN SELECT RAISE(ABORT, 'header refused'); END"
    ))
    .execute(&mut conn)
    .await
    .unwrap();

    let before = store.round_trips();
    store.append_turns(&append(threads[0], "alone", None)).await.unwrap();
    // Begin, its savepoint, the check, the turn, the header, the savepoint's release, commit.
    assert_eq!(store.round_trips() - before, 7);

    let appends: Vec<AppendTurns> = threads.iter().map(|id| append(*id, "batched", None)).collect();
    let outcomes =
        in_one_batch(&store, dir.path(), join_all(appends.iter().map(|a| store.append_turns(a)))).await;
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(
        matches!(&outcomes[1], Err(WriteError::Failed(e)) if e.to_string().contains("header refused")),
        "{:?}",
        outcomes[1]
    );
    let contents = |id| {
        let store = store.clone();
        async move {
            let thread = store.get_thread(id).await.unwrap().unwrap();
            assert_eq!(thread.thread.turn_count as usize, thread.turns.len());
            thread.turns.into_iter().map(|t| t.content).collect::<Vec<_>>()
        }
    };
    assert_eq!(contents(threads[0]).await, ["alone", "batched"]);
    assert!(contents(refused).await.is_empty());
    assert_eq!(contents(threads[2]).await, ["batched"]);
}

#[tokio::test]
async fn a_long_append_is_written_whole_once_or_refused_whole() {
    let (store, _dir) = sqlite_store().await;
    let [thread, small] = create_threads(&store, 2).await[..] else { unreachable!() };
    let turns: Vec<NewTurn> = (1..=250).map(|n| NewTurn::new(Role::User, format!("turn {n}"))).collect();
    let long = AppendTurns { turns, policy: policy(300), ..append(thread, "", Some("long")) };

    let written = store.append_turns(&long).await.unwrap();
    let contents: Vec<String> = (1..=250).map(|n| format!("turn {n}")).collect();
    let seqs: Vec<u32> = written.turns.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, (1..=250).collect::<Vec<_>>());
    assert_eq!(
        written.turns.iter().map(|t| &t.content).collect::<Vec<_>>(),
        contents.iter().collect::<Vec<_>>()
    );
    assert_eq!((written.thread.turn_count, written.replayed), (250, false));

    let replayed = store.append_turns(&long).await.unwrap();
    assert!(replayed.replayed && replayed.turns == written.turns, "{:?}", replayed.turns.len());
    let stored = store.get_thread(thread).await.unwrap().unwrap();
    assert_eq!((stored.thread.turn_count, stored.turns), (250, written.turns));

    let over = AppendTurns { thread_id: small, idempotency_key: None, policy: policy(200), ..long };
    assert_eq!(
        store.append_turns(&over).await.unwrap_err(),
        WriteError::Refused(Rejection::TurnLimitReached { thread_id: small, max_turns: 200 })
    );
    let small = store.get_thread(small).await.unwrap().unwrap();
    assert_eq!((small.thread.turn_count, small.turns.len()), (0, 0));
}

const CLIENTS: usize = 16;
const THREADS: usize = 64;

/// Sixteen clients append to 64 threads until the server is killed; what each got
/// a 201 for is returned as (thread, content).
async fn append_until_killed(server: ExaiProcess, threads: &[String]) -> BTreeSet<(String, String)> {
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let clients = (0..CLIENTS).map(|client| {
        let (http, acknowledged) = (reqwest::Client::new(), acknowledged.clone());
        let urls: Vec<(String, String)> =
            threads.iter().map(|id| (id.clone(), server.url(&format!("/v1/threads/{id}/turns")))).collect();
        tokio::spawn(async move {
            for i in 0.. {
                let (id, url) = &urls[(client + i * CLIENTS) % urls.len()];
                let content = format!("client {client} append {i}");
                let body = json!({"role": "user", "content": content});
                match http.post(url).json(&body).send().await {
                    Ok(response) if response.status() == 201 => {
                        acknowledged.lock().unwrap().insert((id.clone(), content));
                    }
                    Ok(response) => panic!("append answered {}", response.status()),
                    Err(_) => return,
                }
            }
        })
    });
    let clients: Vec<_> = clients.collect();
    // Kill once enough appends are acknowledged that batches are surely under way.
    while acknowledged.lock().unwrap().len() < 400 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill();
    for client in join_all(clients).await {
        client.unwrap();
    }
    Arc::try_unwrap(acknowledged).unwrap().into_inner().unwrap()
}

#[tokio::test]
async fn sigkill_during_group_commits_loses_no_acknowledged_append() {
    let data = tempfile::tempdir().unwrap();
    let settings = [("MAX_CONVERSATION_TURNS", "100000")];
    let server = ExaiProcess::start(data.path(), &settings);
    let http = reqwest::Client::new();
    let mut threads = Vec::new();
    for _ in 0..THREADS {
        let thread: Value =
            http.post(server.url("/v1/threads")).json(&json!({})).send().await.unwrap().json().await.unwrap();
        threads.push(thread["id"].as_str().unwrap().to_owned());
    }
    let acknowledged = append_until_killed(server, &threads).await;

    let restarted = ExaiProcess::start(data.path(), &settings);
    let mut stored = BTreeSet::new();
    for id in &threads {
        let thread: Value =
            http.get(restarted.url(&format!("/v1/threads/{id}"))).send().await.unwrap().json().await.unwrap();
        let turns = thread["turns"].as_array().unwrap();
        let seqs: Vec<u64> = turns.iter().map(|t| t["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=turns.len() as u64).collect::<Vec<_>>(), "contiguous seqs in {id}");
        assert_eq!(thread["turn_count"], turns.len(), "the count matches the turns of {id}");
        for turn in turns {
            let content = turn["content"].as_str().unwrap().to_owned();
            assert!(content.starts_with("client "), "{content}");
            stored.insert((id.clone(), content));
        }
    }
    let lost: Vec<_> = acknowledged.iter().filter(|a| !stored.contains(*a)).collect();
    assert!(lost.is_empty(), "{} acknowledged appends lost: {lost:?}", lost.len());
}
