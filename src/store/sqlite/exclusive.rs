//! One serving process per SQLite file. A second `exai` serving the same file would fail
//! the first one's running runs as orphans at start, and neither would see the other's
//! live runs or in-process cache: it is refused before it opens anything.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// Held for as long as this process serves the database; the operating system releases
/// it when the process ends, however it ends.
#[derive(Debug)]
pub struct ServingLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another exai process is serving {database} (it holds {lock}); one process serves a SQLite \
         database — stop it, or use Postgres or Supabase to run several"
    )]
    Held { database: PathBuf, lock: PathBuf },
    #[error("cannot lock {lock}: {source}")]
    Io { lock: PathBuf, source: std::io::Error },
}

impl ServingLock {
    /// Takes the lock beside `database` without waiting.
    pub fn acquire(database: &Path) -> Result<Self, LockError> {
        let lock = database.with_extension("db.lock");
        let io = |source| LockError::Io { lock: lock.clone(), source };
        let file = File::options().create(true).truncate(false).write(true).open(&lock).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held { database: database.to_owned(), lock }),
            Err(TryLockError::Error(source)) => Err(io(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("exai.db");
        let first = ServingLock::acquire(&database).unwrap();
        let refused = ServingLock::acquire(&database).unwrap_err();
        assert!(matches!(refused, LockError::Held { .. }), "{refused}");
        assert!(refused.to_string().contains("another exai process"), "{refused}");
        drop(first);
        ServingLock::acquire(&database).unwrap();
    }
}
