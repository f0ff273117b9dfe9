//! Three exai processes on one PostgreSQL database, with the repository's `Caddyfile`
//! balancing between them: a run crosses replicas, a crashed replica's run fails and
//! Caddy routes around it, appends from every replica keep the thread's rules, and a
//! read anywhere sees a write made anywhere. Each case runs with Redis shared (cache and
//! relay), without it (Postgres `LISTEN`/`NOTIFY` relays; no cache), and on the Supabase
//! backend over a PostgREST gateway without Redis (the store alone relays; no cache).

use futures_util::future::join_all;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::support::caddy::CaddyProcess;
use crate::support::postgrest::{self, PostgrestServer};
use crate::support::process::ExaiProcess;
use crate::support::runs::{Endpoint, get_json, replica_tools, run_once_ended, start_run, watch_and_cancel};
use crate::support::services::{self, RedisServer};
use crate::support::upstream::{self, Hanging, Upstream};

/// How the replicas reach the database, and what they share besides it.
#[derive(Clone, Copy, PartialEq)]
enum Shared {
    Redis,
    DatabaseOnly,
    SupabaseOnly,
}

struct Cluster {
    replicas: Vec<ExaiProcess>,
    caddy: CaddyProcess,
    hanging: Hanging,
    client: reqwest::Client,
    _upstream: Upstream,
    _redis: Option<RedisServer>,
    _gateway: Option<PostgrestServer>,
    _data: TempDir,
}

impl Cluster {
    /// Three replicas with run leases of 2 s and Caddy in front; `None` (the test skipped)
    /// when PostgreSQL, Redis (if shared) or Caddy is missing.
    async fn start(shared: Shared) -> Option<Self> {
        let database = services::postgres_database()?;
        let redis = match shared {
            Shared::Redis => Some(RedisServer::start()?),
            Shared::DatabaseOnly | Shared::SupabaseOnly => None,
        };
        let gateway = match shared {
            Shared::SupabaseOnly => Some(postgrest::start(&database, postgrest::SECRET_KEY).await),
            Shared::Redis | Shared::DatabaseOnly => None,
        };
        let (upstream, hanging) = (upstream::start().await, upstream::hanging());
        let data = TempDir::new().unwrap();
        let tools = replica_tools(data.path(), &upstream.url, &hanging.url);
        let redis_url = redis.as_ref().map(RedisServer::url);
        let mut env = vec![
            ("EXAI_TOOLS_FILE", tools.as_str()),
            ("EXAI_TOOL_PROGRESS_SECS", "1"),
            ("EXAI_RUN_LEASE_SECS", "2"),
            ("TEST_LLM_KEY", "sk-test"),
        ];
        env.extend(redis_url.as_deref().map(|url| ("REDIS_URL", url)));
        match &gateway {
            Some(gateway) => env.extend([
                ("SUPABASE_URL", gateway.url.as_str()),
                ("SUPABASE_SERVICE_ROLE_KEY", postgrest::SECRET_KEY),
            ]),
            None => env.push(("DATABASE_URL", database.as_str())),
        }
        let replicas: Vec<ExaiProcess> = (0..3).map(|_| ExaiProcess::start(data.path(), &env)).collect();
        let addrs: Vec<_> = replicas.iter().map(|replica| replica.addr).collect();
        let caddy = CaddyProcess::start_balancing(&addrs).await?;
        let client = reqwest::Client::new();
        let (_upstream, _redis, _gateway, _data) = (upstream, redis, gateway, data);
        Some(Self { replicas, caddy, hanging, client, _upstream, _redis, _gateway, _data })
    }

    /// The three replicas, then Caddy.
    fn endpoints(&self) -> Vec<&dyn Endpoint> {
        let replicas = self.replicas.iter().map(|replica| replica as &dyn Endpoint);
        replicas.chain([&self.caddy as &dyn Endpoint]).collect()
    }

    async fn create_thread(&self, through: &dyn Endpoint) -> String {
        let created = self.client.post(through.url("/v1/threads")).json(&json!({"title": "shared"}));
        let created = created.send().await.unwrap();
        assert_eq!(created.status(), 201);
        created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    /// Appends one turn through `through`: the status and the body.
    async fn append(&self, through: &dyn Endpoint, thread: &str, content: &str) -> (u16, Value) {
        let turn = json!({"role": "user", "content": content});
        let path = format!("/v1/threads/{thread}/turns");
        let answer = self.client.post(through.url(&path)).json(&turn).send().await.unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }
}

async fn a_run_started_on_one_replica_is_watched_on_a_second_and_cancelled_on_a_third(shared: Shared) {
    let Some(cluster) = Cluster::start(shared).await else { return };
    let [first, second, third] = [&cluster.replicas[0], &cluster.replicas[1], &cluster.replicas[2]];
    // Through the store alone, a watcher on another replica gets only the final event.
    let relayed = shared != Shared::SupabaseOnly;
    watch_and_cancel(first, second, third, &cluster.hanging, Some(relayed)).await;
    // Through Caddy, each request lands on whichever replica it picks: maybe the owner.
    let caddy = &cluster.caddy;
    watch_and_cancel(caddy, caddy, caddy, &cluster.hanging, relayed.then_some(true)).await;
}

async fn a_killed_replicas_run_fails_and_caddy_serves_on(shared: Shared) {
    let Some(mut cluster) = Cluster::start(shared).await else { return };
    let run_path = format!("/v1/runs/{}", start_run(&cluster.replicas[0], "stall").await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.hanging.open.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the run never reached its upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.replicas.remove(0).kill();

    // Until a health check finds the dead replica, Caddy may still pick it: a GET it could
    // not connect for goes to another. Past two health checks (2 s apart), every request
    // goes to the others; before, Caddy 2.6 could not resend a POST's body.
    let thread = cluster.create_thread(&cluster.replicas[1]).await;
    let path = format!("/v1/threads/{thread}");
    for _ in 0..30 {
        let read = cluster.client.get(cluster.caddy.url(&path)).send().await.unwrap();
        assert_eq!(read.status(), 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for n in 0..10 {
        let (status, body) = cluster.append(&cluster.caddy, &thread, &format!("after the crash {n}")).await;
        assert_eq!(status, 201, "{body}");
    }
    for endpoint in cluster.endpoints() {
        let run = run_once_ended(endpoint, &run_path, Duration::from_secs(60)).await;
        assert_eq!(run["status"], "failed", "{run}");
        assert!(run["error"].as_str().unwrap().contains("stopped before the run finished"), "{run}");
    }
}

async fn appends_through_every_replica_keep_the_turn_limit_and_seq(shared: Shared) {
    let Some(cluster) = Cluster::start(shared).await else { return };
    let endpoints = cluster.endpoints();
    let thread = cluster.create_thread(endpoints[0]).await;
    let (cluster, endpoints, thread) = (&cluster, &endpoints, &thread);
    let appends = (0..100).map(|n| async move {
        cluster.append(endpoints[n % endpoints.len()], thread, &format!("turn {n}")).await
    });
    let answers = join_all(appends).await;

    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 20, "the default turn limit");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 201) {
        assert_eq!((*status, &body["code"]), (409, &json!("turn_limit_reached")), "{body}");
    }
    let document = get_json(&cluster.replicas[2], &format!("/v1/threads/{thread}")).await;
    let seqs: Vec<u64> =
        document["turns"].as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    assert_eq!(document["turn_count"], 20);
}

async fn a_read_on_any_replica_sees_a_write_made_on_another(shared: Shared) {
    let Some(cluster) = Cluster::start(shared).await else { return };
    let endpoints = cluster.endpoints();
    let thread = cluster.create_thread(endpoints[0]).await;
    let path = format!("/v1/threads/{thread}");
    // Every ordered pair of two replicas, three times over: 18 appends, within the limit.
    let others = |writer| (0..3).filter(move |&reader| reader != writer).map(move |reader| (writer, reader));
    let pairs = (0..3).flat_map(others);
    let mut written = 0;
    for (writer, reader) in pairs.clone().chain(pairs.clone()).chain(pairs) {
        // Every replica (and Caddy) has just read the thread, so any cache holds it.
        for endpoint in &endpoints {
            assert_eq!(get_json(*endpoint, &path).await["turn_count"], written);
        }
        let content = format!("written on {writer}, read on {reader}");
        let (status, body) = cluster.append(endpoints[writer], &thread, &content).await;
        assert_eq!(status, 201, "{body}");
        written += 1;
        for endpoint in [endpoints[reader], endpoints[3]] {
            let document = get_json(endpoint, &path).await;
            assert_eq!(document["turn_count"], written, "{content}: {document}");
            assert_eq!(document["turns"].as_array().unwrap().last().unwrap()["content"], content);
        }
    }
}

macro_rules! over_every_sharing {
    ($($case:ident),* $(,)?) => {
        mod over_redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Shared::Redis).await;
                }
            )*
        }
        mod over_postgres_alone {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Shared::DatabaseOnly).await;
                }
            )*
        }
        mod over_supabase_alone {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Shared::SupabaseOnly).await;
                }
            )*
        }
    };
}

over_every_sharing!(
    a_run_started_on_one_replica_is_watched_on_a_second_and_cancelled_on_a_third,
    a_killed_replicas_run_fails_and_caddy_serves_on,
    appends_through_every_replica_keep_the_turn_limit_and_seq,
    a_read_on_any_replica_sees_a_write_made_on_another,
);
