//! Who runs a run: the instance that owns it, the lease it renews, and the sweeps that
//! fail the runs of instances that are gone.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// A run's owner, the process instance running it, and how long the run is its own
/// without the owner renewing the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLease {
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

/// Which unfinished runs of other instances a sweep marks as failed: runs no live
/// process will finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    /// Those whose lease ended before the sweep. A run recorded without a lease (by an
    /// earlier exai) holds one until `legacy_grace` after its own timeout from its
    /// creation: no process can still be running it then.
    LeaseEnded { legacy_grace: Duration },
    /// Every one: only one process can use the store (SQLite's file lock).
    All,
}

/// A sweep of abandoned runs by the instance `owner`, whose own runs it never touches.
#[derive(Debug, Clone, Copy)]
pub struct Sweep<'a> {
    pub owner: &'a str,
    pub abandoned: Abandoned,
    pub error: &'a str,
    pub now: DateTime<Utc>,
}

impl Sweep<'_> {
    /// Every run of other owners, or only those whose lease ended: a flag and a grace.
    pub(super) fn scope(&self) -> (bool, Duration) {
        match self.abandoned {
            Abandoned::All => (true, Duration::ZERO),
            Abandoned::LeaseEnded { legacy_grace } => (false, legacy_grace),
        }
    }
}
