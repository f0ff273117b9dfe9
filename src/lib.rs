//! exai: conversation memory and tool execution for AI tool chains.

pub mod access;
pub mod app;
pub mod backup;
pub mod cache;
pub mod config;
pub mod conversations;
pub mod domain;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod metrics;
pub mod secret;
pub mod server;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod transfer;
