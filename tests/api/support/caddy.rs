//! The repository's `Caddyfile` served by a real Caddy in front of an exai process.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tempfile::TempDir;

use super::require_program;

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn caddyfile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("Caddyfile")
}

/// `caddy` with a clean environment whose home, data and config live in `home`, and
/// without the admin endpoint, so that runs never meet each other.
pub fn caddy_command(program: &Path, home: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("CADDY_ADMIN", "off");
    command
}

pub struct CaddyProcess {
    child: Child,
    pub url: String,
    /// Every line of Caddy's access log (its stdout) so far.
    pub access_log: Arc<Mutex<Vec<String>>>,
    _home: TempDir,
}

impl CaddyProcess {
    /// Starts Caddy on a free port in front of `upstream` and waits until exai answers
    /// through it; `None` (the test skipped) when Caddy is not installed.
    pub async fn start(upstream: SocketAddr) -> Option<Self> {
        Self::start_balancing(&[upstream]).await
    }

    /// As [`CaddyProcess::start`], balancing between `upstreams`: `EXAI_UPSTREAM` lists
    /// them separated by spaces.
    pub async fn start_balancing(upstreams: &[SocketAddr]) -> Option<Self> {
        let program = require_program("caddy")?;
        let home = TempDir::new().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let mut child = caddy_command(&program, home.path())
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(caddyfile())
            .env("EXAI_SITE", &url)
            .env("EXAI_UPSTREAM", upstreams.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(" "))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn caddy");
        let stdout = child.stdout.take().expect("stdout is piped");
        let access_log = Arc::new(Mutex::new(Vec::new()));
        let lines = access_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let caddy = Self { child, url, access_log, _home: home };
        caddy.wait_until_serving().await;
        Some(caddy)
    }

    async fn wait_until_serving(&self) {
        let give_up = Instant::now() + START_TIMEOUT;
        let client = reqwest::Client::new();
        loop {
            let answer = client.get(format!("{}/livez", self.url)).send().await;
            if answer.is_ok_and(|answer| answer.status().is_success()) {
                return;
            }
            assert!(Instant::now() < give_up, "Caddy did not serve exai within {START_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The access-log entries so far, parsed.
    pub fn entries(&self) -> Vec<Value> {
        let log = self.access_log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}

impl Drop for CaddyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
