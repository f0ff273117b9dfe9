//! Throw-away `redis-server` and PostgreSQL processes on free ports in temporary
//! directories. Each test binary shares one of each for the conformance suites (tests
//! keep apart by key namespace or database); fault tests start their own to kill.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use uuid::Uuid;

use super::process::exai_command;
use super::{require_program, skip};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server process tied to the test binary: a shell holds the read end of a pipe
/// whose write end only this process has, and kills the server when the pipe closes —
/// so no server outlives the tests, however they end.
pub struct ServerProcess {
    shell: Child,
    pid: u32,
}

impl ServerProcess {
    fn spawn(program: &Path, args: &[String], user: Option<&str>) -> Self {
        let mut command = Command::new("sh");
        command.args(["-c", r#""$@" >/dev/null 2>&1 & echo $!; read _; kill -9 $! 2>/dev/null"#, "sh"]);
        if let Some(user) = user {
            command.args([
                "setpriv",
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
            ]);
        }
        let mut shell = command
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let mut line = String::new();
        BufReader::new(shell.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Self { shell, pid: line.trim().parse().expect("server pid") }
    }

    pub fn signal(&self, signal: &str) {
        Command::new("kill").args([format!("-{signal}"), self.pid.to_string()]).status().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.signal("KILL");
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    process: Option<ServerProcess>,
}

impl RedisServer {
    /// A new `redis-server`, or `None` (after saying why) when it is not installed.
    pub fn start() -> Option<Self> {
        require_program("redis-server")?;
        let mut server = Self { port: free_port(), dir: tempfile::tempdir().unwrap(), process: None };
        server.run();
        Some(server)
    }

    fn run(&mut self) {
        let dir = self.dir.path().to_str().unwrap();
        let args = format!("--port {} --bind 127.0.0.1 --appendonly no --dir {dir}", self.port);
        let mut args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        args.extend(["--save".to_owned(), String::new()]);
        self.process = Some(ServerProcess::spawn(Path::new("redis-server"), &args, None));
        wait_until("redis-server", || self.answers_ping());
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the server keeps its connections and data but answers nothing.
    pub fn freeze(&self) {
        self.process.as_ref().expect("running").signal("STOP");
    }

    pub fn thaw(&self) {
        self.process.as_ref().expect("running").signal("CONT");
    }

    /// SIGKILL: the server vanishes with everything it held.
    pub fn kill(&mut self) {
        self.process.take();
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.run();
    }
}

/// The Redis server this test binary shares, if there is one.
pub fn shared_redis() -> Option<&'static RedisServer> {
    static SHARED: OnceLock<Option<RedisServer>> = OnceLock::new();
    SHARED.get_or_init(RedisServer::start).as_ref()
}

/// Where PostgreSQL's programs are: beside the `initdb` on PATH (following a link to
/// where it really lives), or in Debian's versioned directory.
fn postgres_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| Some(std::fs::canonicalize(initdb).ok()?.parent()?.to_path_buf()));
    let debian = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|dir| dir.join("initdb").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    let found = on_path.or_else(debian);
    if found.is_none() {
        skip("PostgreSQL server programs (initdb, postgres) are not installed");
    }
    found
}

/// PostgreSQL refuses to run as root; as root the server runs as this account.
fn postgres_user() -> Option<&'static str> {
    let uid = Command::new("id").arg("-u").output().unwrap();
    (String::from_utf8_lossy(&uid.stdout).trim() == "0").then_some("postgres")
}

pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    dir: TempDir,
    process: Option<ServerProcess>,
}

impl PostgresServer {
    /// A new cluster (`initdb`, trust authentication) and its server, or `None` (after
    /// saying why) when PostgreSQL is not installed.
    pub fn start() -> Option<Self> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::tempdir().unwrap();
        let user = postgres_user();
        if let Some(user) = user {
            let status = Command::new("chown").args(["-R", user]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown the PostgreSQL directory to {user}");
        }
        let data = dir.path().join("data").to_str().unwrap().to_owned();
        let initdb = ["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]
            .map(str::to_owned);
        let mut init = Command::new("setpriv");
        let init = match user {
            Some(user) => init
                .args([&format!("--reuid={user}"), &format!("--regid={user}"), "--init-groups"])
                .arg(bin.join("initdb")),
            None => &mut Command::new(bin.join("initdb")),
        };
        let output = init.args(&initdb).output().unwrap();
        assert!(output.status.success(), "initdb: {}", String::from_utf8_lossy(&output.stderr));
        let mut server = Self { port: free_port(), bin, dir, process: None };
        server.run();
        Some(server)
    }

    fn run(&mut self) {
        let dir = self.dir.path().to_str().unwrap();
        let args = format!(
            "-D {dir}/data -p {} -k {dir} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c track_functions=all",
            self.port
        );
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        self.process = Some(ServerProcess::spawn(&self.bin.join("postgres"), &args, postgres_user()));
        let pg_isready = self.bin.join("pg_isready");
        let port = self.port.to_string();
        wait_until("postgres", || {
            Command::new(&pg_isready)
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-q"])
                .status()
                .is_ok_and(|status| status.success())
        });
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL with `psql`, failing the test on any error.
    pub fn psql(&self, database: &str, sql: &str) {
        let output = Command::new(self.bin.join("psql"))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-d", &self.url(database), "-c", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// A fast shutdown, as an operator stopping the database would do.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.signal("INT");
            let port = self.port;
            wait_until("postgres shutdown", || TcpStream::connect(("127.0.0.1", port)).is_err());
        }
    }

    pub fn restart(&mut self) {
        self.run();
    }

    /// A new empty database, migrated with `exai migrate`.
    pub fn migrated_database(&self) -> String {
        let name = format!("exai_{}", Uuid::new_v4().simple());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        let output = exai_command().arg("migrate").env("DATABASE_URL", self.url(&name)).output().unwrap();
        assert!(output.status.success(), "exai migrate: {}", String::from_utf8_lossy(&output.stderr));
        name
    }
}

/// The PostgreSQL server this test binary shares, with a migrated template database.
fn shared_postgres() -> Option<&'static PostgresServer> {
    static SHARED: OnceLock<Option<PostgresServer>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let server = PostgresServer::start()?;
            let template = server.migrated_database();
            server.psql("postgres", &format!("ALTER DATABASE {template} RENAME TO exai_template"));
            Some(server)
        })
        .as_ref()
}

/// A fresh migrated database on the shared server, copied from the template; its URL.
pub fn postgres_database() -> Option<String> {
    let server = shared_postgres()?;
    let name = format!("test_{}", Uuid::new_v4().simple());
    server.psql("postgres", &format!("CREATE DATABASE {name} TEMPLATE exai_template"));
    Some(server.url(&name))
}

/// A TCP listener that accepts every connection and never answers: a dependency that
/// hangs. It lives as long as the test binary.
pub fn hung_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.extend(stream.ok());
        }
    });
    port
}
