//! Faults around replicas sharing one store: an owner paused past its lease, an owner
//! killed on the Supabase backend, a relay stalled, killed or cut, a cancel asked while
//! the owner dies. Whatever happens, a run ends once, its end holds, nothing is recorded
//! for it after its end, and no replica waits on it forever. Leases are 2 s, so the
//! deadlines (a few leases) are the contract, not a measure of speed.

use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::process::start_run;
use crate::support::process::ExaiProcess;
use crate::support::services::{self, PostgresServer, RedisServer};
use crate::support::upstream::{self, Hanging, Upstream};
use crate::support::{self, postgrest};

const LEASE_SECS: u64 = 2;
/// How long the `slow` tool's upstream takes to answer; `slower` takes twice as long.
const SLOW_MS: u64 = 6000;

/// Two replicas on the store (and cache) `store_env` names, with runs leased for
/// `lease_secs`, progress every second, and four tools: `slow` answers after
/// [`SLOW_MS`], `slower` after twice that, `quick` at once, `stall` never.
fn replicas(
    store_env: &[(&str, &str)],
    upstream: &Upstream,
    hanging: &Hanging,
    lease_secs: u64,
) -> (ExaiProcess, ExaiProcess, TempDir) {
    let data = tempfile::tempdir().unwrap();
    let tools = data.path().join("tools.toml");
    let (webhook, stall) = (format!("{}/webhook", upstream.url), &hanging.url);
    let registry = format!(
        "[[tools]]\nname = \"slow\"\nkind = \"http\"\nurl = \"{webhook}?ms={SLOW_MS}\"\ntimeout_secs = 60\n\
         [[tools]]\nname = \"slower\"\nkind = \"http\"\nurl = \"{webhook}?ms={}\"\ntimeout_secs = 60\n\
         [[tools]]\nname = \"quick\"\nkind = \"http\"\nurl = \"{webhook}\"\n\
         [[tools]]\nname = \"stall\"\nkind = \"http\"\nurl = \"{stall}\"\ntimeout_secs = 120\n",
        2 * SLOW_MS
    );
    std::fs::write(&tools, registry).unwrap();
    let lease = lease_secs.to_string();
    let mut env = vec![
        ("EXAI_TOOLS_FILE", tools.to_str().unwrap()),
        ("EXAI_TOOL_PROGRESS_SECS", "1"),
        ("EXAI_RUN_LEASE_SECS", lease.as_str()),
    ];
    env.extend_from_slice(store_env);
    (ExaiProcess::start(data.path(), &env), ExaiProcess::start(data.path(), &env), data)
}

fn leases(n: u64) -> Duration {
    Duration::from_secs(n * LEASE_SECS)
}

async fn get(process: &ExaiProcess, path: &str) -> Value {
    reqwest::get(process.url(path)).await.unwrap().json().await.unwrap()
}

/// Polls `ready` until it holds, failing the test after `patience`.
async fn eventually(what: &str, patience: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !ready().await {
        assert!(Instant::now() < deadline, "{what} within {patience:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the hanging upstream holds `open` connections.
async fn upstream_connections(hanging: &Hanging, open: usize) {
    let what = format!("{open} open connections to the upstream");
    eventually(&what, Duration::from_secs(10), async || hanging.open.load(Ordering::SeqCst) == open).await;
}

/// The run, once it has ended, as `process` reads it; the test fails if it has not
/// ended within `patience`. A store out of reach for a moment (503) is asked again.
async fn ended(process: &ExaiProcess, run: &str, patience: Duration) -> Value {
    let deadline = Instant::now() + patience;
    loop {
        let read = get(process, &format!("/v1/runs/{run}")).await;
        if read["status"].as_str().is_some_and(|status| status != "running" && status != "queued") {
            return read;
        }
        assert!(Instant::now() < deadline, "not ended within {patience:?}: {read}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A run's server-sent events, read one at a time as they come.
struct Events {
    answer: reqwest::Response,
    pending: String,
}

impl Events {
    async fn follow(process: &ExaiProcess, run: &str) -> Self {
        let answer = reqwest::get(process.url(&format!("/v1/runs/{run}/events"))).await.unwrap();
        assert_eq!(answer.status(), 200);
        Self { answer, pending: String::new() }
    }

    /// The next event's name and data, or `None` once the stream has ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let field =
                    |name: &str| block.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
                if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                    return Some((event.to_owned(), serde_json::from_str(data).unwrap()));
                }
                continue;
            }
            let chunk = self.answer.chunk().await.unwrap()?;
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event, which must come within `patience`.
    async fn next_within(&mut self, patience: Duration) -> (String, Value) {
        let next = tokio::time::timeout(patience, self.next()).await;
        next.unwrap_or_else(|_| panic!("no event within {patience:?}")).expect("the stream ended")
    }

    /// The last event, which must come within `patience`; the stream must end with it.
    async fn last_within(&mut self, patience: Duration) -> (String, Value) {
        let rest = async {
            let mut last = None;
            while let Some(event) = self.next().await {
                last = Some(event);
            }
            last.expect("a final event")
        };
        tokio::time::timeout(patience, rest).await.unwrap_or_else(|_| panic!("no end within {patience:?}"))
    }
}

/// Asks `process` to cancel `run`; the answer must come within `patience`.
async fn cancel(process: &ExaiProcess, run: &str, patience: Duration) -> (u16, Value) {
    let asked = reqwest::Client::new().post(process.url(&format!("/v1/runs/{run}/cancel"))).send();
    let answer = tokio::time::timeout(patience, asked).await.expect("a cancel answered").unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// The contents of a thread's turns as the database holds them: each replica without
/// Redis caches threads in its own memory, so none of them is the witness here.
async fn turns_in_store(admin: &PgPool, thread: &str) -> Vec<String> {
    let query = "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                 WHERE c.thread_id = $1::uuid ORDER BY m.seq";
    sqlx::query_scalar(query).bind(thread).fetch_all(admin).await.unwrap()
}

#[tokio::test]
async fn an_owner_paused_past_its_lease_records_nothing_for_the_run_another_replica_failed() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = replicas(&[("DATABASE_URL", &database)], &upstream, &hanging, LEASE_SECS);
    let client = reqwest::Client::new();
    let created: Value =
        client.post(other.url("/v1/threads")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let thread = created["id"].as_str().unwrap().to_owned();

    // A caller waits on the owner for the answer of a slow run on the thread.
    let asked = client
        .post(owner.url("/v1/tools/slow/runs"))
        .json(&json!({"input": "late", "continuation_id": thread}));
    let waiting = tokio::spawn(asked.send());
    eventually("the slow run reached its upstream", Duration::from_secs(10), async || {
        upstream.received.count() == 1
    })
    .await;
    let listed = get(&other, "/v1/runs?tool=slow").await;
    let run = listed["data"][0]["id"].as_str().unwrap().to_owned();

    // The owner stops renewing; the other replica fails the run once the lease lapses.
    owner.pause();
    let failed = ended(&other, &run, leases(3)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("stopped before"), "{failed}");

    // The upstream answers while the owner sleeps; the owner reads the answer on waking.
    let patience = Duration::from_millis(SLOW_MS) + leases(3);
    eventually("the upstream answered", patience, async || upstream.received.endings() == [true]).await;
    owner.resume();

    // The waiting caller is told how the run ended in the store, not what the late answer said.
    let answer = waiting.await.unwrap().unwrap();
    let status = answer.status();
    let problem: Value = answer.json().await.unwrap();
    assert_eq!((status.as_u16(), &problem["code"]), (502, &json!("tool_failed")), "{problem}");
    assert_eq!(problem["detail"], failed["error"], "{problem}");
    for replica in [&owner, &other] {
        assert_eq!(get(replica, &format!("/v1/runs/{run}")).await, failed);
    }
    let admin = PgPool::connect(&database).await.unwrap();
    assert_eq!(turns_in_store(&admin, &thread).await, [] as [&str; 0]);

    // The owner goes on serving: its next run on the thread completes and is recorded once.
    let next = client
        .post(owner.url("/v1/tools/quick/runs"))
        .json(&json!({"input": "again", "continuation_id": thread}));
    let next: Value = next.send().await.unwrap().json().await.unwrap();
    assert_eq!(next["status"], "completed", "{next}");
    assert_eq!(turns_in_store(&admin, &thread).await, ["again", "seen: again"]);
    assert!(owner.errors().is_empty(), "{:?}", owner.errors());
}

/// Back from a pause past its lease, an owner finds that the other replica failed its
/// run: it stops the run at its next renewal, closing the upstream connection, rather
/// than holding it and the tool's slot until the run's timeout.
#[tokio::test]
async fn an_owner_back_from_a_pause_stops_the_run_another_replica_failed() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = replicas(&[("DATABASE_URL", &database)], &upstream, &hanging, LEASE_SECS);
    let run = start_run(&owner, "stall").await;
    upstream_connections(&hanging, 1).await;

    owner.pause();
    let failed = ended(&other, &run, leases(3)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    owner.resume();
    upstream_connections(&hanging, 0).await;
    assert_eq!(get(&owner, &format!("/v1/runs/{run}")).await, failed);
    assert!(owner.errors().is_empty(), "{:?}", owner.errors());
}

#[tokio::test]
async fn an_owner_killed_on_supabase_leaves_its_run_failed_for_the_other_replica() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for a PostgREST gateway");
    };
    let gateway = postgrest::start(&database, postgrest::SECRET_KEY).await;
    let store_env =
        [("SUPABASE_URL", gateway.url.as_str()), ("SUPABASE_SERVICE_ROLE_KEY", postgrest::SECRET_KEY)];
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = replicas(&store_env, &upstream, &hanging, LEASE_SECS);
    let run = start_run(&owner, "stall").await;
    upstream_connections(&hanging, 1).await;
    let mut watcher = Events::follow(&other, &run).await;

    owner.kill();
    // The lease lapses within one lease, a sweep comes within a quarter more, and the
    // watcher reads the store every quarter lease.
    let (event, seen) = watcher.last_within(leases(3)).await;
    assert_eq!((event.as_str(), &seen["status"]), ("failed", &json!("failed")), "{seen}");
    assert!(seen["error"].as_str().unwrap().contains("stopped before"), "{seen}");
    assert_eq!(get(&other, &format!("/v1/runs/{run}")).await, seen);
}

/// With one replica's run watched and another stalled through the other replica, Redis
/// fails: the watcher still gets the final event from the store, and a cancel still
/// reaches the owner through the store.
async fn watch_and_cancel_while_redis_fails(fail: fn(&mut RedisServer)) {
    let (Some(database), Some(mut redis)) = (services::postgres_database(), RedisServer::start()) else {
        return support::skip("no PostgreSQL or Redis for two processes to share");
    };
    let store_env = [("DATABASE_URL", database.as_str()), ("REDIS_URL", &redis.url())];
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = replicas(&store_env, &upstream, &hanging, LEASE_SECS);
    let stalled = start_run(&owner, "stall").await;
    upstream_connections(&hanging, 1).await;
    let slow = start_run(&owner, "slow").await;
    let mut watcher = Events::follow(&other, &slow).await;
    let (event, _) = watcher.next_within(leases(3)).await;
    assert_eq!(event, "progress", "the relay works before it fails");

    fail(&mut redis);
    let patience = Duration::from_millis(SLOW_MS) + leases(3);
    let (event, seen) = watcher.last_within(patience).await;
    assert_eq!((event.as_str(), &seen["output"]), ("completed", &json!("seen: long job")), "{seen}");

    let (status, cancelled) = cancel(&other, &stalled, leases(3)).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")), "{cancelled}");
    upstream_connections(&hanging, 0).await;
    assert_eq!(get(&owner, &format!("/v1/runs/{stalled}")).await, cancelled);
}

#[tokio::test]
async fn a_run_is_watched_and_cancelled_through_the_store_while_redis_is_stalled() {
    watch_and_cancel_while_redis_fails(|redis| redis.freeze()).await;
}

#[tokio::test]
async fn a_run_is_watched_and_cancelled_through_the_store_once_redis_is_killed() {
    watch_and_cancel_while_redis_fails(RedisServer::kill).await;
}

/// The backends of this database that listen for notifications.
async fn listeners(admin: &PgPool, channel: &str) -> Vec<i32> {
    let query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE $1";
    sqlx::query_scalar(query).bind(format!("LISTEN \"{channel}\"%")).fetch_all(admin).await.unwrap()
}

#[tokio::test]
async fn events_and_cancels_come_through_again_once_postgres_drops_the_listeners() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    // A lease so long that the store, read every quarter of it, cannot stand in for the
    // relay within the deadlines below.
    let lease_secs = 120;
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = replicas(&[("DATABASE_URL", &database)], &upstream, &hanging, lease_secs);
    let admin = PgPool::connect(&database).await.unwrap();
    let relisten = Duration::from_secs(10);
    eventually("both replicas listen for cancels", relisten, async || {
        listeners(&admin, "exai_cancel").await.len() == 2
    })
    .await;
    let run = start_run(&owner, "stall").await;
    upstream_connections(&hanging, 1).await;
    let mut watcher = Events::follow(&other, &run).await;
    assert_eq!(watcher.next_within(relisten).await.0, "progress");

    let cut: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %' \
         AND pg_terminate_backend(pid)",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(cut.len(), 3, "two cancel listeners and the watcher's: {cut:?}");

    // At most one progress event was on its way when the watcher's connection went.
    for _ in 0..3 {
        assert_eq!(watcher.next_within(relisten).await.0, "progress");
    }
    eventually("both replicas listen for cancels again", relisten, async || {
        let now = listeners(&admin, "exai_cancel").await;
        now.len() == 2 && now.iter().all(|pid| !cut.contains(pid))
    })
    .await;
    let (status, cancelled) = cancel(&other, &run, relisten).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")), "{cancelled}");
    upstream_connections(&hanging, 0).await;
}

#[tokio::test]
async fn a_cancel_asked_as_the_owner_dies_ends_the_run_within_the_lease() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = replicas(&[("DATABASE_URL", &database)], &upstream, &hanging, LEASE_SECS);
    let run = start_run(&owner, "stall").await;
    upstream_connections(&hanging, 1).await;

    owner.kill();
    // Nobody is left to cancel the run; it ends when its lease lapses, and the cancel
    // answers with that end.
    let (status, answered) = cancel(&other, &run, leases(3)).await;
    assert_eq!(status, 200, "{answered}");
    assert!(answered["status"] == "failed" || answered["status"] == "cancelled", "{answered}");
    assert_eq!(get(&other, &format!("/v1/runs/{run}")).await, answered);
    let (status, again) = cancel(&other, &run, leases(3)).await;
    assert_eq!((status, &again["code"]), (409, &json!("run_finished")), "{again}");
}

/// The database goes away for longer than a lease and comes back while a run waits for
/// its upstream: nobody could renew a lease meanwhile, and no process may take the
/// lapsed leases for abandoned runs before their owners have had a lease to renew them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_lease_fails_no_live_run() {
    let Some(mut server) = PostgresServer::start() else {
        return support::skip("no PostgreSQL server to stop and start again");
    };
    let database = server.url(&server.migrated_database());
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = replicas(&[("DATABASE_URL", &database)], &upstream, &hanging, LEASE_SECS);
    let run = start_run(&owner, "slower").await;
    eventually("the run reached its upstream", Duration::from_secs(10), async || {
        upstream.received.count() == 1
    })
    .await;

    server.stop();
    tokio::time::sleep(leases(2)).await;
    server.restart();

    let patience = Duration::from_millis(2 * SLOW_MS) + leases(3);
    let finished = ended(&other, &run, patience).await;
    assert_eq!(
        (&finished["status"], &finished["output"]),
        (&json!("completed"), &json!("seen: long job")),
        "{finished}"
    );
}

/// A watcher on the other replica follows a stalled run through the relay; the relay's
/// server goes away (`fail`) and comes back (`recover`): the watcher gets progress again,
/// and a cancel through the other replica still stops the run.
async fn progress_comes_through_again_once_the_relay_is_back(
    store_env: &[(&str, &str)],
    fail: impl FnOnce(),
    recover: impl FnOnce(),
) {
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (owner, other, _data) = replicas(store_env, &upstream, &hanging, LEASE_SECS);
    let run = start_run(&owner, "stall").await;
    upstream_connections(&hanging, 1).await;
    let mut watcher = Events::follow(&other, &run).await;
    assert_eq!(watcher.next_within(leases(3)).await.0, "progress", "the relay works before it fails");

    fail();
    tokio::time::sleep(leases(1)).await;
    recover();
    // Progress comes every second; at most one was on its way when the relay went.
    for _ in 0..2 {
        let (event, data) = watcher.next_within(leases(3)).await;
        assert_eq!(event, "progress", "{data}");
    }
    let (status, cancelled) = cancel(&other, &run, leases(3)).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")), "{cancelled}");
    upstream_connections(&hanging, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_comes_through_again_once_redis_is_back() {
    let (Some(database), Some(redis)) = (services::postgres_database(), RedisServer::start()) else {
        return support::skip("no PostgreSQL or Redis for two processes to share");
    };
    let store_env = [("DATABASE_URL", database.as_str()), ("REDIS_URL", &redis.url())];
    let redis = std::sync::Mutex::new(redis);
    let (fail, recover) = (|| redis.lock().unwrap().kill(), || redis.lock().unwrap().restart());
    progress_comes_through_again_once_the_relay_is_back(&store_env, fail, recover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_comes_through_again_once_postgres_is_back() {
    let Some(server) = PostgresServer::start() else {
        return support::skip("no PostgreSQL server to stop and start again");
    };
    let database = server.url(&server.migrated_database());
    let server = std::sync::Mutex::new(server);
    let (fail, recover) = (|| server.lock().unwrap().stop(), || server.lock().unwrap().restart());
    progress_comes_through_again_once_the_relay_is_back(&[("DATABASE_URL", &database)], fail, recover).await;
}

/// Without Redis each replica caches threads in its own memory: a write on one shows on
/// another once the other's copy has lived `EXAI_CACHE_MAX_TTL_MS`, the bound the README
/// gives, and no later.
#[tokio::test]
async fn without_redis_a_write_on_one_replica_shows_on_another_within_the_cache_ttl() {
    let Some(database) = services::postgres_database() else {
        return support::skip("no PostgreSQL server for two processes to share");
    };
    let ttl = Duration::from_secs(1);
    let store_env = [("DATABASE_URL", database.as_str()), ("EXAI_CACHE_MAX_TTL_MS", "1000")];
    let (upstream, hanging) = (upstream::start().await, upstream::hanging());
    let (writer, reader, _data) = replicas(&store_env, &upstream, &hanging, LEASE_SECS);
    let client = reqwest::Client::new();
    let created: Value =
        client.post(writer.url("/v1/threads")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let thread = format!("/v1/threads/{}", created["id"].as_str().unwrap());
    assert_eq!(get(&reader, &thread).await["turn_count"], 0, "the reader holds the thread");

    let turn = json!({"role": "user", "content": "hello"});
    let appended = client.post(writer.url(&format!("{thread}/turns"))).json(&turn).send().await.unwrap();
    assert_eq!(appended.status(), 201);
    eventually("the reader sees the write", 3 * ttl, async || get(&reader, &thread).await["turn_count"] == 1)
        .await;
}
