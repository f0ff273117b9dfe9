//! EX-AI's Supabase tables, adopted in place by `exai migrate` while EX-AI keeps
//! writing them with its own statements.

use axum::http::StatusCode;
use futures_util::future::join_all;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use exai::cache::Cache;
use exai::config::Config;
use exai::store::{PostgresStore, Store};

use crate::dual_storage::redis_cache;
use crate::support::ex_ai::{self, ExAi, KeyUniqueness, Message};
use crate::support::postgrest::{self, SECRET_KEY};
use crate::support::process::exai_command;
use crate::support::services::{PostgresServer, shared_redis};
use crate::support::{TestApp, memory_cache, policy};

/// Lower-case UUID continuation_id; its turns were written with a tie and an unknown time.
const A: &str = "03c6f0d2-09ec-421f-9e00-9859572bbaf5";
const A_ROW: &str = "5bff413f-2925-438f-873e-d29e2fde93a8";
/// Upper-case continuation_id, idle since October.
const B_CONTINUATION: &str = "DEBB44AF-15B9-456D-9B88-6A2519F81427";
/// Not a UUID at all, as in EX-AI's own test data.
const C_CONTINUATION: &str = "baseline-test-20251001";
const B_ROW: &str = "7eaffc72-0e46-4d21-9b06-0e162a5a1eff";
const C_ROW: &str = "66d31162-e932-4468-b7ee-f2767bf55452";
/// No metadata and no times.
const D: &str = "369a99d1-e24f-4c23-b99c-767b4e0f0f0b";

/// Data as EX-AI wrote it. A's 'second' and 'third' share a time and were written in that
/// order, though 'third' has the smaller id; 'fourth' has no time and was stored first.
const EX_AI_DATA: &str = "
INSERT INTO conversations (id, continuation_id, title, metadata, created_at, updated_at) VALUES
    ('5bff413f-2925-438f-873e-d29e2fde93a8', '03c6f0d2-09ec-421f-9e00-9859572bbaf5',
     'Architecture & Planning', '{\"model\": \"glm-4.6\"}',
     '2026-11-01 10:00:00+00', '2026-11-01 11:00:00+00'),
    ('7eaffc72-0e46-4d21-9b06-0e162a5a1eff', 'DEBB44AF-15B9-456D-9B88-6A2519F81427', 'October',
     '{}', '2026-10-01 08:00:00+00', '2026-10-02 09:30:00.123456+00'),
    ('66d31162-e932-4468-b7ee-f2767bf55452', 'baseline-test-20251001', 'baseline', NULL,
     now() - interval '5 hours', now() - interval '4 hours'),
    ('9935b5af-ffa6-4c64-b999-afd5c6e0a465', '369a99d1-e24f-4c23-b99c-767b4e0f0f0b', NULL, NULL,
     NULL, NULL);
INSERT INTO messages (id, conversation_id, role, content, metadata, created_at, idempotency_key) VALUES
    ('00000000-0000-4000-8000-000000000004', '5bff413f-2925-438f-873e-d29e2fde93a8', 'assistant',
     'fourth', NULL, NULL, 'k4'),
    ('00000000-0000-4000-8000-000000000001', '5bff413f-2925-438f-873e-d29e2fde93a8', 'user', 'first',
     '{\"tool_name\": \"chat\", \"model_name\": \"glm-4.6\"}', '2026-11-01 10:30:00+00', 'k1'),
    ('ffffffff-0000-4000-8000-000000000002', '5bff413f-2925-438f-873e-d29e2fde93a8', 'assistant',
     'second', NULL, '2026-11-01 10:40:00+00', 'k2'),
    ('00000000-0000-4000-8000-000000000003', '5bff413f-2925-438f-873e-d29e2fde93a8', 'user', 'third',
     '{}', '2026-11-01 10:40:00+00', NULL),
    ('00000000-0000-4000-8000-000000000005', '7eaffc72-0e46-4d21-9b06-0e162a5a1eff', 'user', 'old',
     NULL, '2026-10-02 09:30:00+00', 'k5'),
    ('00000000-0000-4000-8000-000000000006', '66d31162-e932-4468-b7ee-f2767bf55452', 'user',
     'baseline', NULL, now() - interval '4 hours', 'k6');
-- 19 more conversations with 5 messages each: every 4th continuation_id upper-case, every
-- 3rd without metadata, messages written in pairs at the same minute, and in every 5th
-- conversation the third message without a time.
INSERT INTO conversations (id, continuation_id, title, metadata, created_at, updated_at)
SELECT md5('bulk' || n)::uuid,
       CASE WHEN n % 4 = 0 THEN upper(md5('continuation' || n)::uuid::text)
            ELSE md5('continuation' || n)::uuid::text END,
       'bulk ' || n,
       CASE WHEN n % 3 <> 0 THEN '{\"model\": \"glm-4.6\"}'::jsonb END,
       timestamptz '2026-10-15 00:00+00' + n * interval '1 day',
       timestamptz '2026-10-15 00:00+00' + n * interval '1 day' + n * interval '7 minutes'
FROM generate_series(1, 19) n;
INSERT INTO messages (conversation_id, role, content, metadata, created_at, idempotency_key)
SELECT md5('bulk' || n)::uuid, (ARRAY['user', 'assistant'])[1 + i % 2]::message_role,
       'message ' || i || ' of ' || n,
       CASE WHEN i % 2 = 1 THEN '{\"tool_name\": \"chat\", \"model_name\": \"kimi-k2\"}'::jsonb END,
       CASE WHEN NOT (i = 3 AND n % 5 = 0)
            THEN timestamptz '2026-10-15 00:00+00' + n * interval '1 day' + (i / 2) * interval '1 minute' END,
       md5(n || ':' || i)
FROM generate_series(1, 19) n, generate_series(1, 5) i
ORDER BY n, i;
";

/// Every value EX-AI wrote, one line per row, `-` where it wrote none.
async fn written_values(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws(' | ', id, continuation_id, coalesce(title, '-'), coalesce(metadata::text, '-'),
                          coalesce(created_at::text, '-'), coalesce(updated_at::text, '-'))
         FROM conversations
         UNION ALL
         SELECT concat_ws(' | ', id, conversation_id, role, content, coalesce(metadata::text, '-'),
                          coalesce(created_at::text, '-'), coalesce(idempotency_key, '-'))
         FROM messages
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Each value of `before` that was written is still there, unchanged, in `after`.
fn assert_kept(before: &[String], after: &[String]) {
    assert_eq!(before.len(), after.len());
    for (old, new) in before.iter().zip(after) {
        for (old, new) in old.split(" | ").zip(new.split(" | ")) {
            assert!(old == "-" || old == new, "{old} became {new}\nbefore: {before:#?}\nafter: {after:#?}");
        }
    }
}

fn exai_migrate(url: &str, args: &[&str]) -> String {
    exai_migrate_logging(url, args).0
}

/// `exai migrate` with `args`: what it printed, and what it logged.
fn exai_migrate_logging(url: &str, args: &[&str]) -> (String, String) {
    let output = exai_command().arg("migrate").args(args).env("DATABASE_URL", url).output().unwrap();
    let log = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "exai migrate {args:?}: {log}");
    (String::from_utf8(output.stdout).unwrap(), log)
}

/// A database holding EX-AI's schema and data on `server`, adopted by `exai migrate`
/// after `--check` has shown the plan and changed nothing; its URL and an owner pool.
async fn adopted_database(server: &PostgresServer, key: KeyUniqueness) -> (String, PgPool) {
    let name = format!("ex_ai_{}", Uuid::new_v4().simple());
    server.psql("postgres", &format!("CREATE DATABASE {name}"));
    server.psql(&name, &ex_ai::schema(key));
    server.psql(&name, EX_AI_DATA);
    let url = server.url(&name);
    let pool = PgPool::connect(&url).await.unwrap();
    let before = written_values(&pool).await;

    let plan = exai_migrate(&url, &["--check"]);
    assert!(plan.contains("apply 0001_conversations"), "{plan}");
    assert!(plan.contains("adopt EX-AI's"), "{plan}");
    assert!(plan.contains("no existing value changes"), "{plan}");
    assert_eq!(written_values(&pool).await, before, "--check changes nothing");
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!migrated, "--check records no migration");

    let (_, log) = exai_migrate_logging(&url, &[]);
    assert!(log.contains("EXAI_CACHE_MAX_TTL_MS"), "adopting tells how to bound the cache: {log}");
    let (_, log) = exai_migrate_logging(&url, &[]);
    assert!(!log.contains("EXAI_CACHE_MAX_TTL_MS"), "{log}");
    assert_kept(&before, &written_values(&pool).await);
    assert!(exai_migrate(&url, &["--check"]).contains("no migration pending"));
    (url, pool)
}

fn turns(thread: &Value) -> Vec<(u64, &str)> {
    thread["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["seq"].as_u64().unwrap(), t["content"].as_str().unwrap()))
        .collect()
}

/// EX-AI's statements after adoption: its upserts and reads work unchanged and what it
/// writes is numbered in the store, as exai's own appends are.
async fn ex_ai_keeps_working(ex_ai: &ExAi, app: &TestApp) {
    let a_row: Uuid = A_ROW.parse().unwrap();
    let version = |row: Value| row["version"].as_i64().unwrap();
    let before = version(ex_ai.conversation(A).await.unwrap());
    assert_eq!(ex_ai.upsert_conversation(A, "Architecture", json!({"model": "glm-4.6"})).await, a_row);
    assert_eq!(version(ex_ai.conversation(A).await.unwrap()), before + 1, "a new title is a change");
    let message = |content, created_at| Message {
        conversation_id: a_row,
        role: "assistant",
        content,
        metadata: json!({"tool_name": "chat", "model_name": "kimi-k2"}),
        created_at,
    };
    let fifth = message("fifth", "2026-11-29T10:00:00+00:00");
    ex_ai.store_messages(&[fifth]).await;
    ex_ai.store_messages(&[message("fifth", "2026-11-29T10:00:00+00:00")]).await;
    ex_ai
        .store_messages(&[
            message("sixth", "2026-11-29T10:00:01+00:00"),
            message("seventh", "2026-11-29T10:00:02+00:00"),
        ])
        .await;

    let thread = app.get(&format!("/v1/threads/{A}")).await.json();
    assert_eq!(
        turns(&thread),
        [
            (1, "first"),
            (2, "second"),
            (3, "third"),
            (4, "fourth"),
            (5, "fifth"),
            (6, "sixth"),
            (7, "seventh")
        ]
    );
    assert_eq!(thread["turn_count"], 7);
    assert_eq!(thread["title"], "Architecture");
    let all = thread["turns"].as_array().unwrap();
    assert_eq!((&all[0]["tool_name"], &all[0]["model_name"]), (&json!("chat"), &json!("glm-4.6")));
    assert_eq!(all[5]["model_name"], "kimi-k2");
    assert!(all[3]["created_at"].as_str() >= all[2]["created_at"].as_str(), "time follows seq: {all:#?}");

    let appended =
        app.post_json(&format!("/v1/threads/{A}/turns"), &json!({"role": "user", "content": "eighth"})).await;
    assert_eq!(appended.status, StatusCode::CREATED, "{}", appended.text());
    assert_eq!(appended.json()["seq"], 8);
    let cached = app.get(&format!("/v1/threads/{A}")).await.json();
    assert_eq!(turns(&cached).last(), Some(&(8, "eighth")));
    ex_ai.store_messages(&[message("ninth", "2026-11-29T10:00:03+00:00")]).await;

    let read = ex_ai.messages(a_row, 100).await;
    assert_eq!(read.len(), 9, "EX-AI reads every turn: {read:#?}");
    assert_eq!(read[0]["content"], "first");
    let b = ex_ai.conversation(B_CONTINUATION).await.expect("found by its id as written");
    assert_eq!(b["updated_at"], "2026-10-02T09:30:00.123456+00:00");
    assert!(ex_ai.conversation(C_CONTINUATION).await.is_some());

    let new_row = ex_ai.upsert_conversation("ex-ai-started-this", "new", Value::Null).await;
    ex_ai
        .store_messages(&[Message {
            conversation_id: new_row,
            role: "user",
            content: "hello",
            metadata: Value::Null,
            created_at: "2026-11-29T11:00:00+00:00",
        }])
        .await;
    assert_eq!(ex_ai.messages(new_row, 10).await[0]["seq"], 1);
    read_once_shown(app, A, |read| turns(read).last() == Some(&(9, "ninth"))).await;
    every_conversation_is_reachable(app, new_row).await;
}

/// A conversation whose continuation_id is not a lower-case UUID is a thread under its
/// row id; all are listed.
async fn every_conversation_is_reachable(app: &TestApp, started_by_ex_ai: Uuid) {
    let b = app.get(&format!("/v1/threads/{B_ROW}")).await.json();
    assert_eq!((&b["title"], &b["turn_count"]), (&json!("October"), &json!(1)), "{b}");
    let idle = app
        .post_json(&format!("/v1/threads/{B_ROW}/turns"), &json!({"role": "user", "content": "late"}))
        .await;
    assert_eq!(idle.status, StatusCode::GONE, "idle since October: {}", idle.text());
    let c = app.get(&format!("/v1/threads/{C_ROW}")).await.json();
    assert_eq!(turns(&c), [(1, "baseline")]);
    assert_eq!(c["turns"][0]["thread_id"], C_ROW);

    for (continuation_id, row) in [(B_CONTINUATION, B_ROW), (C_CONTINUATION, C_ROW), (A, A)] {
        let found = app.get(&format!("/v1/threads?continuation_id={continuation_id}")).await.json();
        let ids: Vec<&Value> = found["data"].as_array().unwrap().iter().map(|t| &t["id"]).collect();
        assert_eq!(ids, [row], "EX-AI's id {continuation_id}");
    }
    let lower =
        app.get(&format!("/v1/threads?continuation_id={}", B_CONTINUATION.to_lowercase())).await.json();
    assert_eq!(lower["data"], json!([]), "matched exactly, as EX-AI does");

    let listed = app.get("/v1/threads?limit=100").await.json();
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 24, "EX-AI's 23 conversations and the one it started: {listed:#?}");
    let ids: Vec<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let started_by_ex_ai = started_by_ex_ai.to_string();
    for id in [A, B_ROW, C_ROW, D, started_by_ex_ai.as_str()] {
        assert!(ids.contains(&id), "{id} listed");
    }
    let bulk = |title: &str| {
        let found = listed.iter().find(|t| t["title"] == title).unwrap();
        format!("/v1/threads/{}", found["id"].as_str().unwrap())
    };
    let paired = app.get(&bulk("bulk 1")).await.json();
    let order: Vec<&str> = turns(&paired).into_iter().map(|(_, content)| content).collect();
    assert_eq!(
        order,
        ["message 1 of 1", "message 2 of 1", "message 3 of 1", "message 4 of 1", "message 5 of 1"]
    );
    assert_eq!(paired["turns"][0]["tool_name"], "chat");
    let untimed = app.get(&bulk("bulk 5")).await.json();
    let order: Vec<&str> = turns(&untimed).into_iter().map(|(_, content)| content).collect();
    assert_eq!(
        order,
        ["message 1 of 5", "message 2 of 5", "message 4 of 5", "message 5 of 5", "message 3 of 5"]
    );
    let times: Vec<&str> =
        untimed["turns"].as_array().unwrap().iter().map(|t| t["created_at"].as_str().unwrap()).collect();
    assert!(times.is_sorted(), "a turn without a time takes the latest before it: {times:?}");
}

/// How soon the tests' apps show a write made around them: EXAI_CACHE_MAX_TTL_MS.
const CACHE_MAX_TTL_MS: &str = "200";

/// The application over `store` and `cache`, serving threads from the cache for at most
/// [`CACHE_MAX_TTL_MS`].
fn app_sharing_tables(store: Arc<dyn Store>, cache: Arc<dyn Cache>) -> TestApp {
    let mut config =
        Config::load(|name| (name == "EXAI_CACHE_MAX_TTL_MS").then(|| CACHE_MAX_TTL_MS.into()), None)
            .unwrap();
    config.conversation = policy(50);
    TestApp::with_config(store, cache, &config, tempfile::tempdir().unwrap())
}

/// The thread as read once `shown` holds for it, which happens when its cached copy has
/// lived out the bound (polled, with a deadline far beyond it; the copy was fresh, so
/// without the bound it would be served for the thread's whole timeout).
async fn read_once_shown(app: &TestApp, thread: &str, shown: impl Fn(&Value) -> bool) -> Value {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let read = app.get(&format!("/v1/threads/{thread}")).await.json();
        if shown(&read) {
            return read;
        }
        assert!(Instant::now() < give_up, "never shown: {read:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same client key on two threads is two turns; on the same thread, one.
async fn keys_are_unique_per_thread(app: &TestApp) {
    let append = |thread: &str| {
        let mut request = crate::support::json_request(
            &format!("/v1/threads/{thread}/turns"),
            json!({"role": "user", "content": "keyed"}).to_string(),
        );
        request.headers_mut().insert("idempotency-key", "k1".parse().unwrap());
        app.send(request)
    };
    assert_eq!(append(D).await.status, StatusCode::CREATED);
    let replay = append(D).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text());
    let reused = append(A).await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "A's adopted turn holds k1: {}",
        reused.text()
    );
    let created = app.post_json("/v1/threads", &json!({})).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(append(&id).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn ex_ai_keeps_writing_adopted_tables_as_their_owner() {
    let Some(server) = PostgresServer::start() else {
        return;
    };
    for key in [KeyUniqueness::Constraint, KeyUniqueness::Index, KeyUniqueness::Both] {
        let (url, pool) = adopted_database(&server, key).await;
        let store = Arc::new(PostgresStore::connect(&url).unwrap());
        let app = app_sharing_tables(store, memory_cache());
        ex_ai_keeps_working(&ExAi::Owner(pool), &app).await;
        keys_are_unique_per_thread(&app).await;
    }
}

#[tokio::test]
async fn ex_ai_keeps_writing_adopted_tables_as_service_role_over_rest() {
    let Some(server) = PostgresServer::start() else {
        return;
    };
    let (url, _pool) = adopted_database(&server, KeyUniqueness::Both).await;
    let gateway = postgrest::start(&url, SECRET_KEY).await;
    let store = exai::store::SupabaseStore::connect(
        &gateway.url.parse().unwrap(),
        &exai::secret::Secret::new(SECRET_KEY),
    )
    .unwrap();
    store.ping().await.unwrap();
    let Some(redis) = shared_redis() else {
        return;
    };
    let app = app_sharing_tables(Arc::new(store), redis_cache(&redis.url()));
    ex_ai_keeps_working(&ExAi::ServiceRole(gateway.url.clone()), &app).await;
    keys_are_unique_per_thread(&app).await;
}

/// EX-AI's inserts and exai's appends to one thread at the same time: the thread's row
/// lock serializes them, so every turn gets its own seq and none is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ex_ai_and_exai_writing_one_thread_at_once_number_every_turn() {
    let Some(server) = PostgresServer::start() else {
        return;
    };
    let (url, pool) = adopted_database(&server, KeyUniqueness::Index).await;
    let app = app_sharing_tables(Arc::new(PostgresStore::connect(&url).unwrap()), memory_cache());
    let ex_ai = ExAi::Owner(pool);
    let d_row: Uuid = "9935b5af-ffa6-4c64-b999-afd5c6e0a465".parse().unwrap();
    const EACH: usize = 12;
    let contents: Vec<(String, String)> =
        (0..EACH).map(|i| (format!("ex-ai {i}"), format!("2026-11-29T12:00:{i:02}+00:00"))).collect();
    let ex_ai_writes = contents.iter().map(|(content, created_at)| async {
        let message =
            Message { conversation_id: d_row, role: "user", content, metadata: Value::Null, created_at };
        ex_ai.store_messages(&[message]).await
    });
    let exai_writes = (0..EACH).map(|i| {
        let path = format!("/v1/threads/{D}/turns");
        let body = json!({"role": "assistant", "content": format!("exai {i}")});
        let app = &app;
        async move { app.post_json(&path, &body).await }
    });
    let (_, appended) = tokio::join!(join_all(ex_ai_writes), join_all(exai_writes));
    assert!(appended.iter().all(|r| r.status == StatusCode::CREATED));

    let total = 2 * EACH as u64;
    let thread =
        read_once_shown(&app, D, |read| read["turns"].as_array().map(Vec::len) == Some(2 * EACH)).await;
    let numbered = turns(&thread);
    let seqs: Vec<u64> = numbered.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    let mut written: Vec<&str> = numbered.iter().map(|(_, content)| *content).collect();
    written.sort_unstable();
    let mut expected: Vec<String> =
        contents.into_iter().map(|(c, _)| c).chain((0..EACH).map(|i| format!("exai {i}"))).collect();
    expected.sort_unstable();
    assert_eq!(written, expected);
    assert_eq!(thread["turn_count"], total);
}

/// A database an earlier exai adopted (0001 to 0008, without today's care), where exai has
/// since stored the same client key on two threads, migrates on: those keys are qualified
/// by their thread so EX-AI's global key index can exist, and replays still find them.
#[tokio::test]
async fn a_database_adopted_by_an_earlier_exai_migrates_on() {
    let Some(server) = PostgresServer::start() else {
        return;
    };
    let name = format!("ex_ai_{}", Uuid::new_v4().simple());
    server.psql("postgres", &format!("CREATE DATABASE {name}"));
    server.psql(&name, &ex_ai::schema(KeyUniqueness::Constraint));
    server.psql(&name, EX_AI_DATA);
    let url = server.url(&name);
    let pool = PgPool::connect(&url).await.unwrap();
    let mut earlier =
        sqlx::migrate::Migrator::new(std::path::Path::new("migrations/postgres")).await.unwrap();
    earlier.migrations =
        earlier.migrations.iter().filter(|m| m.version <= 8).cloned().collect::<Vec<_>>().into();
    earlier.run(&pool).await.unwrap();
    let thread = |id: &str| format!("/v1/threads/{id}/turns");
    let earlier_app =
        TestApp::with_backends(Arc::new(PostgresStore::connect(&url).unwrap()), memory_cache(), policy(50));
    let keyed = |path: String| {
        let mut request =
            crate::support::json_request(&path, json!({"role": "user", "content": "keyed"}).to_string());
        request.headers_mut().insert("idempotency-key", "shared".parse().unwrap());
        request
    };
    for id in [A, D] {
        assert_eq!(earlier_app.send(keyed(thread(id))).await.status, StatusCode::CREATED);
    }

    exai_migrate(&url, &[]);
    let app = app_sharing_tables(Arc::new(PostgresStore::connect(&url).unwrap()), memory_cache());
    for id in [A, D] {
        let replay = app.send(keyed(thread(id))).await;
        assert_eq!(replay.status, StatusCode::OK, "a replay: {}", replay.text());
    }
    let ex_ai = ExAi::Owner(pool);
    let a_row: Uuid = A_ROW.parse().unwrap();
    let message = Message {
        conversation_id: a_row,
        role: "user",
        content: "after",
        metadata: json!({}),
        created_at: "2026-11-29T13:00:00+00:00",
    };
    ex_ai.store_messages(&[message]).await;
    let read = read_once_shown(&app, A, |read| turns(read).last().is_some_and(|(_, c)| *c == "after")).await;
    assert_eq!(read["turn_count"], 6);
    assert_eq!(read["turns"].as_array().unwrap().len(), 6);
}

/// `--check` on an empty database: every migration listed, nothing created.
#[tokio::test]
async fn checking_an_empty_database_creates_nothing() {
    let Some(server) = PostgresServer::start() else {
        return;
    };
    server.psql("postgres", "CREATE DATABASE empty");
    let url = server.url("empty");
    let plan = exai_migrate(&url, &["--check"]);
    assert!(plan.contains("apply 0001_conversations") && plan.contains("apply 0009_"), "{plan}");
    assert!(!plan.contains("adopt"), "{plan}");
    let pool = PgPool::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tables, 0);
}
