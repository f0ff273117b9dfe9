//! Two replicas with short leases and tools that answer slowly, at once or never, and
//! what the tests read them with.

use serde_json::Value;
use sqlx::PgPool;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::support::process::ExaiProcess;
use crate::support::runs::{get_json, start_run};
use crate::support::upstream::{self, Hanging, Upstream};

pub const LEASE_SECS: u64 = 2;
/// How long the `slow` tool's upstream takes to answer; `slower` takes twice as long.
pub const SLOW_MS: u64 = 6000;

/// Two replicas, the upstreams of their tools, and their data directory.
pub struct Replicas {
    /// The replica the tests start runs on.
    pub owner: ExaiProcess,
    pub other: ExaiProcess,
    pub upstream: Upstream,
    pub hanging: Hanging,
    _data: TempDir,
}

impl Replicas {
    /// Two replicas on the store (and cache) `store_env` names, with runs leased for
    /// `lease_secs`, progress every second, and four tools: `slow` answers after
    /// [`SLOW_MS`], `slower` after twice that, `quick` at once, `stall` never.
    pub async fn start(store_env: &[(&str, &str)], lease_secs: u64) -> Self {
        let (upstream, hanging) = (upstream::start().await, upstream::hanging());
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
        let (owner, other) = (ExaiProcess::start(data.path(), &env), ExaiProcess::start(data.path(), &env));
        Self { owner, other, upstream, hanging, _data: data }
    }

    /// A run of `stall` on the owner, once it holds its upstream connection.
    pub async fn stalled_run(&self) -> String {
        let open = self.hanging.open.load(Ordering::SeqCst);
        let run = start_run(&self.owner, "stall").await;
        self.upstream_connections(open + 1).await;
        run
    }

    /// Waits until the hanging upstream holds `open` connections.
    pub async fn upstream_connections(&self, open: usize) {
        let what = format!("{open} open connections to the upstream");
        let open_now = async || self.hanging.open.load(Ordering::SeqCst) == open;
        eventually(&what, Duration::from_secs(10), open_now).await;
    }
}

pub fn leases(n: u64) -> Duration {
    Duration::from_secs(n * LEASE_SECS)
}

/// Creates an empty thread through `process`; its id.
pub async fn create_thread(process: &ExaiProcess) -> String {
    let created = reqwest::Client::new().post(process.url("/v1/threads")).json(&serde_json::json!({}));
    let created: Value = created.send().await.unwrap().json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// Polls `ready` until it holds, failing the test after `patience`.
pub async fn eventually(what: &str, patience: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !ready().await {
        assert!(Instant::now() < deadline, "{what} within {patience:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The run, once it has ended, as `process` reads it; the test fails if it has not
/// ended within `patience`. A store out of reach for a moment (503) is asked again.
pub async fn ended(process: &ExaiProcess, run: &str, patience: Duration) -> Value {
    let deadline = Instant::now() + patience;
    loop {
        let read = get_json(process, &format!("/v1/runs/{run}")).await;
        if read["status"].as_str().is_some_and(|status| status != "running" && status != "queued") {
            return read;
        }
        assert!(Instant::now() < deadline, "not ended within {patience:?}: {read}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A run's server-sent events, read one at a time as they come.
pub struct Events {
    answer: reqwest::Response,
    pending: String,
}

impl Events {
    pub async fn follow(process: &ExaiProcess, run: &str) -> Self {
        let answer = reqwest::get(process.url(&format!("/v1/runs/{run}/events"))).await.unwrap();
        assert_eq!(answer.status(), 200);
        Self { answer, pending: String::new() }
    }

    /// The next event's name and data, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<(String, Value)> {
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
    pub async fn next_within(&mut self, patience: Duration) -> (String, Value) {
        let next = tokio::time::timeout(patience, self.next()).await;
        next.unwrap_or_else(|_| panic!("no event within {patience:?}")).expect("the stream ended")
    }

    /// The last event, which must come within `patience`; the stream must end with it.
    pub async fn last_within(&mut self, patience: Duration) -> (String, Value) {
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
pub async fn cancel(process: &ExaiProcess, run: &str, patience: Duration) -> (u16, Value) {
    let asked = reqwest::Client::new().post(process.url(&format!("/v1/runs/{run}/cancel"))).send();
    let answer = tokio::time::timeout(patience, asked).await.expect("a cancel answered").unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// The contents of a thread's turns as the database holds them, whatever any replica
/// answers.
pub async fn turns_in_store(admin: &PgPool, thread: &str) -> Vec<String> {
    let query = "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                 WHERE c.thread_id = $1::uuid ORDER BY m.seq";
    sqlx::query_scalar(query).bind(thread).fetch_all(admin).await.unwrap()
}

/// The backends of this database that listen for notifications: one per replica, named
/// for the relay.
pub async fn listeners(admin: &PgPool) -> Vec<i32> {
    let query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'exai relay'";
    sqlx::query_scalar(query).fetch_all(admin).await.unwrap()
}

/// How many backends of this database serve someone other than `admin`.
pub async fn backends(admin: &PgPool) -> i64 {
    let query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    sqlx::query_scalar(query).fetch_one(admin).await.unwrap()
}
