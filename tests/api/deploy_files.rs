//! The deployment files, checked by the tools that know their formats. No container
//! engine runs here: the compose file is validated against the Compose specification's
//! schema and the Dockerfile linted, not run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

use crate::support::{require_program, say_skipped};

fn repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A checker named by `variable` (as `.ci/run` sets it), else found on `PATH`.
fn checker(variable: &str, program: &str) -> Option<PathBuf> {
    std::env::var_os(variable).map(PathBuf::from).or_else(|| require_program(program))
}

fn assert_passed(output: &Output) {
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{said}");
}

/// The compose file, and the one laid over it to run several replicas.
const COMPOSE_FILES: [&str; 2] = ["compose/compose.yaml", "compose/replicas.yaml"];

#[test]
fn the_compose_files_follow_the_compose_specification() {
    let Some(program) = checker("EXAI_TEST_CHECK_JSONSCHEMA", "check-jsonschema") else { return };
    let checked = Command::new(program)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .args(COMPOSE_FILES.map(repository))
        .output()
        .unwrap();
    assert_passed(&checked);
}

/// The services of a compose file, each as its name and its block of lines: the
/// two-space-indented keys under `services:`, up to the next top-level key.
fn services(compose: &str) -> Vec<(&str, &str)> {
    let services = compose.split("\nservices:\n").nth(1).unwrap();
    let blocks = services.split("\n\n").take_while(|block| !block.starts_with(char::is_alphabetic));
    blocks.map(|block| (service_name(block), block)).collect()
}

/// A service block's first line that is not a comment: its name.
fn service_name(block: &str) -> &str {
    let line = block.lines().find(|line| !line.trim_start().starts_with('#')).unwrap();
    line.trim().trim_end_matches(':')
}

#[test]
fn only_caddy_publishes_ports_and_every_variable_is_in_the_example() {
    let example = std::fs::read_to_string(repository("compose/.env.example")).unwrap();
    let documented = |name: &str| {
        example.lines().any(|line| line.trim_start_matches("#   ").starts_with(&format!("{name}=")))
    };
    for (file, publishers) in COMPOSE_FILES.into_iter().zip([&["caddy"][..], &[]]) {
        let compose = std::fs::read_to_string(repository(file)).unwrap();
        let services = services(&compose);
        let publishing: Vec<&str> = services
            .iter()
            .filter(|(_, block)| block.contains("\n    ports:"))
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(publishing, publishers, "{file}");

        let used: Vec<&str> =
            compose.split("${").skip(1).filter_map(|rest| rest.split([':', '}']).next()).collect();
        assert!(!used.is_empty());
        let missing: Vec<&&str> = used.iter().filter(|name| !documented(name)).collect();
        assert!(missing.is_empty(), "{file}: not in compose/.env.example: {missing:?}");
    }
}

#[test]
fn caddy_balances_between_every_replica_and_waits_for_each() {
    let compose = std::fs::read_to_string(repository("compose/replicas.yaml")).unwrap();
    let services = services(&compose);
    let replicas: Vec<&str> =
        services.iter().map(|(name, _)| *name).filter(|name| name.starts_with("exai")).collect();
    assert!(replicas.len() > 1, "{replicas:?}");
    let upstream = compose.lines().find_map(|line| line.trim().strip_prefix("EXAI_UPSTREAM: ")).unwrap();
    let expected: Vec<String> = replicas.iter().map(|name| format!("{name}:8080")).collect();
    assert_eq!(upstream.split(' ').collect::<Vec<_>>(), expected);
    let (_, caddy) = services.iter().find(|(name, _)| *name == "caddy").unwrap();
    for replica in replicas.iter().filter(|name| **name != "exai") {
        let waits = format!("\n      {replica}:\n        condition: service_healthy");
        assert!(caddy.contains(&waits), "caddy does not wait for {replica}");
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let Some(program) = checker("EXAI_TEST_HADOLINT", "hadolint") else { return };
    let linted = Command::new(program).arg(repository("Dockerfile")).output().unwrap();
    assert_passed(&linted);
}

/// `systemd-analyze verify` wants the binary the unit starts to exist: the copy it
/// checks starts the one just built.
#[test]
fn the_systemd_unit_passes_systemd_analyze() {
    let Some(program) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("systemd-analyze"))
        .find(|path| path.is_file())
    else {
        return say_skipped("systemd-analyze is not installed");
    };
    let unit = std::fs::read_to_string(repository("deploy/exai.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/exai serve"));
    let dir = TempDir::new().unwrap();
    let copy = dir.path().join("exai.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/exai", env!("CARGO_BIN_EXE_exai"))).unwrap();
    let verified = Command::new(program).args(["verify", "--man=no"]).arg(&copy).output().unwrap();
    assert_passed(&verified);
    assert!(verified.stderr.is_empty(), "{}", String::from_utf8_lossy(&verified.stderr));
}
