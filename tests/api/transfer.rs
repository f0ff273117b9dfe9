//! `exai export` and `exai import` move a deployment between backends: every thread's
//! and run's API document is the same, byte for byte, after each move.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;
use tempfile::TempDir;

use crate::support::postgrest::{self, SECRET_KEY};
use crate::support::process::{ExaiProcess, exai_command};
use crate::support::services::postgres_database;

/// Runs an exai command without holding up this runtime, which may serve a test
/// PostgREST the command talks to.
async fn exai(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = exai_command();
    command.args(args).envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn said(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Threads whose children come before their parents in an export (a child changed
/// after its parent is listed first), turns with every field, a thread without turns,
/// and a run that appended two turns at once. Returns the API paths of each thread
/// and run.
async fn populate(exai: &ExaiProcess) -> Vec<String> {
    let client = reqwest::Client::new();
    let create = async |body: Value| {
        let created = client.post(exai.url("/v1/threads")).json(&body).send().await.unwrap();
        assert_eq!(created.status(), 201);
        created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    };
    let append = async |id: &str, body: Value| {
        let appended =
            client.post(exai.url(&format!("/v1/threads/{id}/turns"))).json(&body).send().await.unwrap();
        assert_eq!(appended.status(), 201);
    };
    let parent =
        create(json!({"title": "parent", "tool_name": "chat", "metadata": {"a": [1, 2.5, "x"]}})).await;
    append(&parent, json!({"role": "user", "content": "first"})).await;
    let child = create(json!({"parent_id": parent, "title": "child ü"})).await;
    let full_turn = json!({"role": "assistant", "content": "all fields\n\"quoted\"", "tool_name": "chat",
        "files": ["a.rs", "b.md"], "model_provider": "openai", "model_name": "gpt", "metadata": {"k": {"n": null}}});
    append(&child, full_turn).await;
    let grandchild = create(json!({"parent_id": child})).await;
    let run = client
        .post(exai.url("/v1/tools/echo/runs"))
        .json(&json!({"input": "hello", "continuation_id": parent}));
    let run = run.send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    append(&child, json!({"role": "user", "content": "last"})).await;
    let mut paths: Vec<String> =
        [parent, child, grandchild].iter().map(|id| format!("/v1/threads/{id}")).collect();
    paths.push(format!("/v1/runs/{}", run["id"].as_str().unwrap()));
    paths
}

async fn documents(exai: &ExaiProcess, paths: &[String]) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut documents = Vec::new();
    for path in paths {
        let answer = client.get(exai.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        documents.push(answer.text().await.unwrap());
    }
    documents
}

/// Imports `file` into the store `env` names, twice: the second changes nothing.
async fn import_twice(file: &Path, env: &[(&str, &str)]) {
    let file = file.to_str().unwrap();
    let first = exai(&["import", file], env).await;
    assert!(first.status.success(), "{}", said(&first));
    assert!(said(&first).contains("3 threads created"), "{}", said(&first));
    let again = exai(&["import", file], env).await;
    assert!(again.status.success(), "{}", said(&again));
    assert!(
        said(&again).contains("3 unchanged; 0 runs created, 1 unchanged; 0 conflicts (nothing changed)"),
        "{}",
        said(&again)
    );
}

async fn export(env: &[(&str, &str)], to: PathBuf) -> PathBuf {
    let exported = exai(&["export", "--output", to.to_str().unwrap()], env).await;
    assert!(exported.status.success(), "{}", said(&exported));
    assert!(said(&exported).contains("exported 3 threads, 5 turns, 1 runs"), "{}", said(&exported));
    let text = std::fs::read_to_string(&to).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (&header["kind"], &header["threads"], &header["turns"], &header["runs"]),
        (&json!("header"), &json!(3), &json!(5), &json!(1))
    );
    to
}

/// A populated SQLite deployment, exported: the API paths of its threads and runs,
/// their documents, and the export.
struct Exported {
    paths: Vec<String>,
    documents: Vec<String>,
    file: PathBuf,
    _dirs: (TempDir, TempDir),
}

async fn exported_sqlite() -> Exported {
    let (source, files) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let server = ExaiProcess::start(source.path(), &[]);
    let paths = populate(&server).await;
    let documents = documents(&server, &paths).await;
    drop(server);
    let sqlite_env = [("EXAI_DATA_DIR", source.path().to_str().unwrap())];
    let file = export(&sqlite_env, files.path().join("from-sqlite.jsonl")).await;
    Exported { paths, documents, file, _dirs: (source, files) }
}

/// The documents at `paths` as an exai on the store `env` names serves them.
async fn served(env: &[(&str, &str)], paths: &[String]) -> Vec<String> {
    let scratch = TempDir::new().unwrap();
    let server = ExaiProcess::start(scratch.path(), env);
    documents(&server, paths).await
}

#[tokio::test]
async fn sqlite_to_postgres_to_sqlite_keeps_every_document() {
    let Some(postgres) = postgres_database() else { return };
    let source = exported_sqlite().await;
    let postgres_env = [("DATABASE_URL", postgres.as_str())];
    import_twice(&source.file, &postgres_env).await;
    assert_eq!(served(&postgres_env, &source.paths).await, source.documents);

    let files = TempDir::new().unwrap();
    let from_postgres = export(&postgres_env, files.path().join("from-postgres.jsonl")).await;
    let back = TempDir::new().unwrap();
    let sqlite_env = [("EXAI_DATA_DIR", back.path().to_str().unwrap())];
    import_twice(&from_postgres, &sqlite_env).await;
    assert_eq!(served(&sqlite_env, &source.paths).await, source.documents);
}

#[tokio::test]
async fn sqlite_to_supabase_keeps_every_document() {
    let Some(database) = postgres_database() else { return };
    let gateway = postgrest::start(&database, SECRET_KEY).await;
    let source = exported_sqlite().await;
    let supabase_env = [("SUPABASE_URL", gateway.url.as_str()), ("SUPABASE_SERVICE_ROLE_KEY", SECRET_KEY)];
    import_twice(&source.file, &supabase_env).await;
    assert_eq!(served(&supabase_env, &source.paths).await, source.documents);
}

#[tokio::test]
async fn a_truncated_file_is_refused_and_its_cut_thread_not_written() {
    let source = exported_sqlite().await;
    let files = TempDir::new().unwrap();
    let text = std::fs::read_to_string(&source.file).unwrap();
    // Cut inside the second thread line: the first thread is whole, the second is not.
    let second = text.match_indices("\n{\"kind\":\"thread\"").nth(1).unwrap().0;
    let cut = files.path().join("cut.jsonl");
    std::fs::write(&cut, &text[..second + 40]).unwrap();

    let target = TempDir::new().unwrap();
    let env = [("EXAI_DATA_DIR", target.path().to_str().unwrap())];
    let refused = exai(&["import", cut.to_str().unwrap()], &env).await;
    assert_eq!(refused.status.code(), Some(3), "{}", said(&refused));
    assert!(said(&refused).contains("line 3"), "{}", said(&refused));
    let server = ExaiProcess::start(target.path(), &[]);
    let listed: Value = reqwest::get(server.url("/v1/threads")).await.unwrap().json().await.unwrap();
    let cut_thread = text[second + 1..].lines().next().unwrap();
    let cut_id = serde_json::from_str::<Value>(cut_thread).unwrap()["thread"]["id"].clone();
    assert!(listed["data"].as_array().unwrap().iter().all(|thread| thread["id"] != cut_id), "{listed}");

    let without_end = files.path().join("without-end.jsonl");
    std::fs::write(
        &without_end,
        text.lines().filter(|line| !line.contains("\"kind\":\"end\"")).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let truncated = exai(&["import", without_end.to_str().unwrap()], &env).await;
    assert_eq!(truncated.status.code(), Some(3), "{}", said(&truncated));
    assert!(said(&truncated).contains("truncated"), "{}", said(&truncated));
}

#[tokio::test]
async fn a_thread_the_store_holds_differently_is_a_conflict_left_alone() {
    let source = exported_sqlite().await;
    let target = TempDir::new().unwrap();
    let env = [("EXAI_DATA_DIR", target.path().to_str().unwrap())];
    let first = exai(&["import", source.file.to_str().unwrap()], &env).await;
    assert!(first.status.success(), "{}", said(&first));
    let server = ExaiProcess::start(target.path(), &[]);
    let parent = &source.paths[0];
    let client = reqwest::Client::new();
    let appended =
        client.post(server.url(&format!("{parent}/turns"))).json(&json!({"role": "user", "content": "new"}));
    assert_eq!(appended.send().await.unwrap().status(), 201);
    let changed = documents(&server, &source.paths).await;
    drop(server);

    let again = exai(&["import", source.file.to_str().unwrap()], &env).await;
    assert_eq!(again.status.code(), Some(1), "{}", said(&again));
    assert!(
        said(&again).contains("2 unchanged; 0 runs created, 1 unchanged; 1 conflicts"),
        "{}",
        said(&again)
    );
    assert_eq!(served(&env, &source.paths).await, changed);
}

/// Checks that an export holds one instant: the end line counts what the header (read
/// at the start) counted, every thread holds as many turns as it counts, numbered from
/// 1, and every completed run's thread holds the turns that run appended.
fn check_one_instant(file: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let (header, end) = (&lines[0], lines.last().unwrap());
    for count in ["threads", "turns", "runs"] {
        assert_eq!(header[count], end[count], "{count}: {header} {end}");
    }
    let mut keys = std::collections::HashMap::new();
    for thread in lines.iter().filter(|line| line["kind"] == "thread") {
        let turns = thread["turns"].as_array().unwrap();
        assert_eq!(thread["thread"]["turn_count"], json!(turns.len()), "{thread}");
        assert!(turns.iter().zip(1..).all(|(turn, seq)| turn["seq"] == json!(seq)), "{thread}");
        keys.insert(thread["thread"]["id"].clone(), thread["keys"].clone());
    }
    for run in lines.iter().filter(|line| line["kind"] == "run").map(|line| &line["run"]) {
        let held = &keys[&run["continuation_id"]];
        if run["status"] == "completed" {
            let key = format!("run:{}", run["id"].as_str().unwrap());
            assert!(held.as_object().unwrap().values().any(|value| *value == json!(key)), "{run} {held}");
        }
    }
}

/// Exports the store `env` names a few times while a client keeps creating threads,
/// appending and running tools on `server`, which serves the same store.
async fn export_under_writes(server: &ExaiProcess, env: &[(&str, &str)]) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = stop.clone();
    let (client, base) = (reqwest::Client::new(), server.url(""));
    let writer = tokio::spawn(async move {
        while !writing.load(std::sync::atomic::Ordering::Relaxed) {
            let created = client.post(format!("{base}/v1/threads")).json(&json!({})).send().await.unwrap();
            let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            for content in ["one", "two"] {
                let turn = json!({"role": "user", "content": content});
                let appended = client.post(format!("{base}/v1/threads/{id}/turns")).json(&turn);
                assert_eq!(appended.send().await.unwrap().status(), 201);
            }
            let run = json!({"input": "hello", "continuation_id": id});
            let ran = client.post(format!("{base}/v1/tools/echo/runs")).json(&run).send().await.unwrap();
            assert!(ran.status().is_success());
        }
    });
    let files = TempDir::new().unwrap();
    for round in 0..4 {
        let file = files.path().join(format!("{round}.jsonl"));
        let exported = exai(&["export", "--output", file.to_str().unwrap()], env).await;
        assert!(exported.status.success(), "{}", said(&exported));
        check_one_instant(&file);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
}

#[tokio::test]
async fn an_sqlite_export_under_writes_holds_one_instant() {
    let data = TempDir::new().unwrap();
    let server = ExaiProcess::start(data.path(), &[]);
    export_under_writes(&server, &[("EXAI_DATA_DIR", data.path().to_str().unwrap())]).await;
}

#[tokio::test]
async fn a_postgres_export_under_writes_holds_one_instant() {
    let Some(postgres) = postgres_database() else { return };
    let (data, env) = (TempDir::new().unwrap(), [("DATABASE_URL", postgres.as_str())]);
    let server = ExaiProcess::start(data.path(), &env);
    export_under_writes(&server, &env).await;
}

/// A client that retries an append with its idempotency key after a move gets the turn
/// it made, not a second one.
#[tokio::test]
async fn idempotency_keys_move_with_their_turns() {
    let Some(postgres) = postgres_database() else { return };
    let source = TempDir::new().unwrap();
    let server = ExaiProcess::start(source.path(), &[]);
    let client = reqwest::Client::new();
    let created = client.post(server.url("/v1/threads")).json(&json!({})).send().await.unwrap();
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let append = async |server: &ExaiProcess| {
        let turn = json!({"role": "user", "content": "once"});
        let request = client.post(server.url(&format!("/v1/threads/{id}/turns"))).json(&turn);
        let answer = request.header("Idempotency-Key", "retry-me").send().await.unwrap();
        (answer.status(), answer.json::<Value>().await.unwrap())
    };
    let (status, first) = append(&server).await;
    assert_eq!(status, 201);
    drop(server);

    let files = TempDir::new().unwrap();
    let file = files.path().join("keys.jsonl");
    let sqlite_env = [("EXAI_DATA_DIR", source.path().to_str().unwrap())];
    let exported = exai(&["export", "--output", file.to_str().unwrap()], &sqlite_env).await;
    assert!(exported.status.success(), "{}", said(&exported));
    let target = TempDir::new().unwrap();
    for env in
        [vec![("DATABASE_URL", postgres.as_str())], vec![("EXAI_DATA_DIR", target.path().to_str().unwrap())]]
    {
        let imported = exai(&["import", file.to_str().unwrap()], &env).await;
        assert!(imported.status.success(), "{}", said(&imported));
        let scratch = TempDir::new().unwrap();
        let moved = ExaiProcess::start(scratch.path(), &env);
        assert_eq!(append(&moved).await, (reqwest::StatusCode::OK, first.clone()), "{env:?}");
        let thread: Value =
            reqwest::get(moved.url(&format!("/v1/threads/{id}"))).await.unwrap().json().await.unwrap();
        assert_eq!(thread["turn_count"], 1, "{env:?}");
    }
}
