//! The README's walk-through, run as written against a real server.

use std::process::Command;

use crate::support::process::ExaiProcess;
use crate::support::require_program;

const README: &str = include_str!("../../README.md");
const BASE_LINE: &str = "EXAI=http://127.0.0.1:8080\n";

#[test]
fn the_walkthrough_works_as_written() {
    if require_program("curl").is_none() {
        return;
    }
    let block = README
        .split("<!-- walkthrough -->")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("the README has a walk-through block");
    assert!(block.starts_with(BASE_LINE), "the walk-through sets EXAI first");
    let script = block.replacen(BASE_LINE, "", 1);

    let data = tempfile::tempdir().unwrap();
    let server = ExaiProcess::start(data.path(), &[]);
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("EXAI", server.url(""))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let history = stdout.lines().last().unwrap();
    assert!(history.starts_with(r#"{"thread_ids":"#), "{history}");
    assert!(
        history.ends_with(
            r#""files":["src/store/mod.rs"],"total_turns":2,"omitted_turns":0,"truncated":false}"#
        ),
        "{history}"
    );
}
