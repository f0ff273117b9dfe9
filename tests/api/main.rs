//! Tests of the service through its public interfaces, against real backends.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[macro_use]
mod support;

mod cache_conformance;
mod concurrency;
mod errors;
mod openapi;
mod process;
mod readme;
mod service;
mod store_conformance;
mod threads;
mod turns;
