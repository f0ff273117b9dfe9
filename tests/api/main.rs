//! Tests of the service through its public interfaces, against real backends.

#![expect(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

#[macro_use]
mod support;

mod adoption;
mod backup;
mod browser;
mod cache_coherence;
mod cache_conformance;
mod cache_faults;
mod cache_soak;
mod caddy;
mod concurrency;
mod connections;
mod contract;
mod dashboard;
mod dashboard_runs;
mod deploy_files;
mod dual_storage;
mod errors;
mod fuzz;
mod group_commit;
mod health;
mod healthcheck;
mod logging;
mod openapi;
mod process;
mod readme;
mod replica_faults;
mod replicas;
mod replicas_behind_caddy;
mod runs;
mod service;
mod sqlite_schema;
mod stats;
mod store_conformance;
mod supabase;
mod threads;
mod tools;
mod transfer;
mod turns;
