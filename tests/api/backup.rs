//! `exai backup`: an online copy of the SQLite store, taken under write load, restores
//! to a consistent database that exai opens and serves.

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tempfile::TempDir;

use crate::dual_storage::eventually;

use crate::support::process::{ExaiProcess, exai_command};

const WRITERS: usize = 4;
const UNBOUNDED: [(&str, &str); 1] = [("MAX_CONVERSATION_TURNS", "1000000")];

/// Appends to its own thread until told to stop; returns every acknowledged turn's
/// content, in `seq` order.
async fn keep_appending(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acknowledged = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let content = format!("turn {}", acknowledged.len() + 1);
        let answer =
            client.post(&url).json(&json!({"role": "user", "content": content})).send().await.unwrap();
        assert_eq!(answer.status(), 201, "an append failed while the backup ran");
        let turn: Value = answer.json().await.unwrap();
        assert_eq!(turn["seq"], acknowledged.len() + 1);
        acknowledged.push(content);
    }
    acknowledged
}

fn backup(data: &std::path::Path, target: &std::path::Path) -> std::process::Output {
    exai_command().arg("backup").arg(target).env("EXAI_DATA_DIR", data).output().unwrap()
}

#[tokio::test]
async fn a_backup_under_write_load_restores_to_a_consistent_database() {
    let data = TempDir::new().unwrap();
    let exai = ExaiProcess::start(data.path(), &UNBOUNDED);
    let client = reqwest::Client::new();
    let mut threads = Vec::new();
    for _ in 0..WRITERS {
        let created = client.post(exai.url("/v1/threads")).json(&json!({})).send().await.unwrap();
        threads.push(created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = threads
        .iter()
        .map(|id| {
            let url = exai.url(&format!("/v1/threads/{id}/turns"));
            tokio::spawn(keep_appending(client.clone(), url, stop.clone()))
        })
        .collect();
    // Wait until every writer has written something, so the copy has turns to hold.
    let appends =
        || exai.log.lock().unwrap().iter().filter(|line| line.contains("/v1/threads/{id}/turns")).count();
    eventually("the writers appending", Duration::from_secs(15), || appends() >= 200).await;

    let target_dir = TempDir::new().unwrap();
    let target = target_dir.path().join("exai-backup.db");
    let taken = tokio::task::spawn_blocking({
        let (data, target) = (data.path().to_owned(), target.clone());
        move || backup(&data, &target)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.push(writer.await.unwrap());
    }
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    let summary = String::from_utf8_lossy(&taken.stdout);
    assert!(summary.contains(&format!("{WRITERS} threads")), "{summary}");
    drop(exai);

    // The copy, served by a new exai: each thread's turns are a prefix of what was
    // acknowledged, numbered without gaps.
    let restored = TempDir::new().unwrap();
    std::fs::copy(&target, restored.path().join("exai.db")).unwrap();
    let exai = ExaiProcess::start(restored.path(), &UNBOUNDED);
    let mut kept_turns = 0;
    for (id, acknowledged) in threads.iter().zip(&acknowledged) {
        let thread: Value =
            client.get(exai.url(&format!("/v1/threads/{id}"))).send().await.unwrap().json().await.unwrap();
        let turns = thread["turns"].as_array().unwrap();
        let contents: Vec<&str> = turns.iter().map(|turn| turn["content"].as_str().unwrap()).collect();
        assert!(
            !contents.is_empty() && contents.len() <= acknowledged.len(),
            "{} of {}",
            contents.len(),
            acknowledged.len()
        );
        assert_eq!(contents, acknowledged[..contents.len()]);
        let seqs: Vec<u64> = turns.iter().map(|turn| turn["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        kept_turns += contents.len();
    }
    assert!(summary.contains(&format!("{kept_turns} turns")), "{summary}");
    let appended = client
        .post(exai.url(&format!("/v1/threads/{}/turns", threads[0])))
        .json(&json!({"role": "user", "content": "after the restore"}));
    assert_eq!(appended.send().await.unwrap().status(), 201);
}

#[test]
fn a_backup_never_overwrites_a_file() {
    let data = TempDir::new().unwrap();
    let migrate = exai_command().arg("migrate").env("EXAI_DATA_DIR", data.path()).output().unwrap();
    assert!(migrate.status.success());
    let target = data.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    let refused = backup(data.path(), &target);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("exists already"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");

    let nothing = TempDir::new().unwrap();
    let missing = backup(nothing.path(), &nothing.path().join("copy.db"));
    assert!(!missing.status.success());
    assert!(!nothing.path().join("copy.db").exists() && !nothing.path().join("copy.db.partial").exists());
}
