//! Faults around replicas sharing one store, with real processes: an owner paused past
//! its lease, killed, or cut off by a database outage; a cancel asked as the owner dies;
//! a relay stalled, killed, restarted or cut. Whatever
//! happens, a run ends once, its end holds, nothing is recorded for it after its end, and
//! no replica waits on it forever. Leases are 2 s, so the deadlines (a few leases) are
//! the contract, not a measure of speed.

mod harness;
mod owners;
mod relays;
