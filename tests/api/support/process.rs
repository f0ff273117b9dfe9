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
    /// Every line the process has logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ExaiProcess {
    /// Starts `exai serve` on a free port with its SQLite file in `data_dir`, and waits
    /// until it logs the address it listens on.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn(exai_command(), data_dir, env)
    }

    /// As `start`, with the soft limit on open files lowered to `files` first.
    pub fn start_with_file_limit(data_dir: &Path, env: &[(&str, &str)], files: u64) -> Self {
        let mut command = Command::new("sh");
        command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
        let script = "ulimit -Sn \"$0\" && exec \"$1\"";
        command.args(["-c", script, &files.to_string(), env!("CARGO_BIN_EXE_exai")]);
        Self::spawn(command, data_dir, env)
    }

    fn spawn(mut command: Command, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = command
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
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            // Keeps draining after start-up so the child never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if log["message"] == "listening" {
                    let _ = tx.send(log["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("exai did not start: {:?}", child.try_wait()));
        Self { child, addr: addr.parse().expect("listen address"), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines the server has logged at the error level so far.
    pub fn errors(&self) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let is_error =
            |line: &&String| serde_json::from_str::<Value>(line).is_ok_and(|log| log["level"] == "ERROR");
        log.iter().filter(is_error).cloned().collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }

    /// SIGSTOP: the process keeps its connections and holds its state, but runs nothing
    /// (a stalled VM, a long GC pause).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([format!("-{signal}"), self.child.id().to_string()]).status();
        assert!(status.expect("run kill").success());
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("reap")
    }
}

impl Drop for ExaiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
