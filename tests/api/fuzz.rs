//! The conformance fuzzer: Schemathesis drives the real binary through its served OpenAPI
//! document, on SQLite and on PostgreSQL + Redis, with API keys set so the auth checks
//! apply. Any server error, schema violation or undocumented status fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::process::ExaiProcess;
use crate::support::services::{postgres_database, shared_redis};
use crate::support::{require_program, skip};

const API_KEY: &str = "fuzz-key";
/// Seconds each backend's run may take. Fuzzing stops after this many cases per
/// operation, so that the stateful phase, which repeats until the budget is spent,
/// gets the rest.
const BUDGET_SECS: &str = "90";
const CASES_PER_OPERATION: &str = "20";

/// The `st` program: `EXAI_TEST_SCHEMATHESIS` (which `.ci/run` sets to the pinned
/// install), else whichever is on PATH.
fn schemathesis() -> Option<PathBuf> {
    match std::env::var_os("EXAI_TEST_SCHEMATHESIS") {
        Some(path) if Path::new(&path).is_file() => Some(path.into()),
        Some(path) => {
            skip(&format!("EXAI_TEST_SCHEMATHESIS names {path:?}, which is not a file"));
            None
        }
        None => require_program("st"),
    }
}

fn fuzz(st: &Path, env: &[(&str, &str)]) {
    let data = tempfile::tempdir().unwrap();
    let keys = [("EXAI_API_KEYS", API_KEY)];
    let server = ExaiProcess::start(data.path(), &[env, &keys].concat());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/schemathesis.toml");
    let output = Command::new(st)
        .current_dir(data.path())
        .arg("--config-file")
        .arg(config)
        .args(["run", &server.url("/openapi.json")])
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--header", &format!("Authorization: Bearer {API_KEY}")])
        // One worker: CPython 3.11's parser is not safe across the threads more would use.
        .args(["--max-time", BUDGET_SECS, "--max-examples", CASES_PER_OPERATION])
        .args(["--workers", "1", "--no-color"])
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    let errors = server.errors();
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}\nthe server's first logged errors:\n{}",
        String::from_utf8_lossy(&output.stderr),
        errors.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_api_conforms_to_its_document_on_sqlite() {
    let Some(st) = schemathesis() else { return };
    fuzz(&st, &[]);
}

#[test]
fn the_api_conforms_to_its_document_on_postgres_and_redis() {
    let Some(st) = schemathesis() else { return };
    let (Some(database), Some(redis)) = (postgres_database(), shared_redis()) else { return };
    fuzz(&st, &[("DATABASE_URL", &database), ("REDIS_URL", &redis.url())]);
}
