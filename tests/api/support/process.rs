//! The `exai` binary as a child process, for tests about start-up, signals and crashes.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn exai_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_exai"));
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

pub struct ExaiProcess {
    child: Child,
    pub addr: SocketAddr,
    errors: Arc<Mutex<Vec<String>>>,
}

impl ExaiProcess {
    /// Starts `exai serve` on a free port with its SQLite file in `data_dir`, and waits
    /// until it logs the address it listens on.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = exai_command()
            .env("EXAI_BIND", "127.0.0.1:0")
            .env("EXAI_DATA_DIR", data_dir)
            .env("EXAI_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn exai");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let logged = Arc::clone(&errors);
        std::thread::spawn(move || {
            // Keeps draining after start-up so the child never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if log["message"] == "listening" {
                    let _ = tx.send(log["addr"].as_str().unwrap_or_default().to_owned());
                }
                if log["level"] == "ERROR" {
                    logged.lock().unwrap_or_else(PoisonError::into_inner).push(line);
                }
            }
        });
        let addr = rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("exai did not start: {:?}", child.try_wait()));
        Self { child, addr: addr.parse().expect("listen address"), errors }
    }

    /// The lines the server has logged at the error level so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success());
        self.child.wait().expect("reap")
    }
}

impl Drop for ExaiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
