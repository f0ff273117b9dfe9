//! `exai backup`: a consistent copy of the SQLite store, taken while a server keeps
//! reading and writing it.
//!
//! `VACUUM INTO` copies the database as one read transaction sees it, so writers go on
//! committing (WAL mode) and the copy holds every commit made before it began and none
//! after. It is written beside the target and renamed into place only once it checks
//! out, so a failed or interrupted backup never leaves a file that looks like one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::config::StoreConfig;

/// How long to wait for a writer to let go of a lock the copy needs for a moment.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("exai backup copies the SQLite store; the {0} store is backed up with pg_dump")]
    NotSqlite(&'static str),
    #[error("{0} does not exist: nothing to back up")]
    NoDatabase(PathBuf),
    #[error("{0} exists already; a backup never overwrites a file")]
    TargetExists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Sqlite { path: PathBuf, source: sqlx::Error },
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
}

/// What the copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub path: PathBuf,
    pub threads: i64,
    pub turns: i64,
    pub runs: i64,
    pub bytes: u64,
}

/// The SQLite file of `store`, or why it has none.
pub fn database_of(store: &StoreConfig) -> Result<PathBuf, BackupError> {
    match store {
        StoreConfig::Sqlite { data_dir } => Ok(data_dir.join("exai.db")),
        other => Err(BackupError::NotSqlite(other.backend())),
    }
}

/// Copies `database` to `target`, which must not exist yet.
pub async fn backup(database: &Path, target: &Path) -> Result<Backup, BackupError> {
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database.to_owned()));
    }
    if target.exists() {
        return Err(BackupError::TargetExists(target.to_owned()));
    }
    let partial = partial_path(target);
    remove_if_present(&partial)?;
    let copied = copy(database, &partial).await;
    let checked = match copied {
        Ok(()) => check(&partial).await,
        Err(error) => Err(error),
    };
    let counts = match checked {
        Ok(counts) => counts,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    // A plain rename would replace a file that appeared meanwhile; a hard link refuses.
    std::fs::hard_link(&partial, target).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => BackupError::TargetExists(target.to_owned()),
        _ => BackupError::Io { path: target.to_owned(), source },
    })?;
    remove_if_present(&partial)?;
    let bytes = std::fs::metadata(target).map_err(|source| io(target, source))?.len();
    let (threads, turns, runs) = counts;
    Ok(Backup { path: target.to_owned(), threads, turns, runs, bytes })
}

fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

fn remove_if_present(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(io(path, source)),
        _ => Ok(()),
    }
}

fn io(path: &Path, source: std::io::Error) -> BackupError {
    BackupError::Io { path: path.to_owned(), source }
}

async fn open(path: &Path) -> Result<SqliteConnection, BackupError> {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(|source| BackupError::Sqlite { path: path.to_owned(), source })
}

async fn copy(database: &Path, into: &Path) -> Result<(), BackupError> {
    let mut connection = open(database).await?;
    let target = into.to_str().ok_or_else(|| {
        io(into, std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8"))
    })?;
    sqlx::query("VACUUM INTO ?1")
        .bind(target)
        .execute(&mut connection)
        .await
        .map_err(|source| BackupError::Sqlite { path: database.to_owned(), source })?;
    let _ = connection.close().await;
    Ok(())
}

/// Runs SQLite's integrity check on the copy and counts what it holds.
async fn check(copy: &Path) -> Result<(i64, i64, i64), BackupError> {
    let mut connection = open(copy).await?;
    let sqlite = |source| BackupError::Sqlite { path: copy.to_owned(), source };
    let verdict: String =
        sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut connection).await.map_err(sqlite)?;
    if verdict != "ok" {
        return Err(BackupError::Corrupt(verdict));
    }
    let counts = sqlx::query_as(
        "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages), \
         (SELECT count(*) FROM tool_runs)",
    )
    .fetch_one(&mut connection)
    .await
    .map_err(sqlite)?;
    let _ = connection.close().await;
    Ok(counts)
}
