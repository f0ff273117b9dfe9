//! `exai healthcheck`: asks a running server for its health, or runs the same checks in
//! this process, and turns the answer into an exit code for Docker and scripts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::header::ACCEPT;

use crate::app::{open_cache, open_store};
use crate::config::{Config, StoreConfig};
use crate::health::{Health, Report, Status};
use crate::secret::Secret;

/// Why no health report could be had, and the exit code for it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Exit 2: the check itself is set up wrong (bad URL or settings, not exai at the URL).
    #[error("misconfigured: {0}")]
    Misconfigured(String),
    /// Exit 3: nothing answered.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Misconfigured(_) => 2,
            Failure::Unreachable(_) => 3,
        })
    }
}

/// Exit 0 when healthy or degraded (the service answers requests), 1 when unhealthy.
pub fn exit_code(report: &Report) -> ExitCode {
    match report.status {
        Status::Healthy | Status::Degraded => ExitCode::SUCCESS,
        Status::Unhealthy => ExitCode::from(1),
    }
}

/// `/healthz` on the address the server listens on, reached over loopback when it
/// listens on every interface.
pub fn default_url(bind: SocketAddr) -> String {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, bind.port()))
}

/// Fetches the report of a running server, with `key` when there is one: a server with
/// API keys gives its details (backends, errors, version) only to a caller with a key.
pub async fn remote(url: &str, key: Option<&Secret>, timeout: Duration) -> Result<Report, Failure> {
    // The key must not follow a redirect anywhere; the health URL is exact.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| Failure::Misconfigured(e.to_string()))?;
    let mut request = client.get(url).header(ACCEPT, "application/json");
    if let Some(key) = key {
        request = request.bearer_auth(key.expose());
    }
    let response = request.send().await.map_err(|e| match e.is_builder() {
        true => Failure::Misconfigured(format!("{url}: {e}")),
        false => Failure::Unreachable(format!("{url}: {e}")),
    })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| Failure::Unreachable(format!("{url}: {e}")))?;
    serde_json::from_slice(&body).map_err(|_| {
        Failure::Misconfigured(format!("{url} answered HTTP {status} without an exai health report"))
    })
}

/// Runs the checks here, against the store and cache the environment configures. A
/// check never creates anything: a SQLite file that is not there is a setup error.
pub async fn direct(config: &Config) -> Result<Report, Failure> {
    if let StoreConfig::Sqlite { data_dir } = &config.store {
        let file = data_dir.join("exai.db");
        if !file.is_file() {
            return Err(Failure::Misconfigured(format!("no SQLite database at {}", file.display())));
        }
    }
    let misconfigured = |e: crate::app::StartupError| Failure::Misconfigured(e.to_string());
    let store = open_store(&config.store).await.map_err(misconfigured)?;
    let cache = open_cache(config).map_err(misconfigured)?;
    Ok(Health::new(store, cache, config.health).probe().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_reaches_a_wildcard_bind_over_loopback() {
        assert_eq!(default_url("0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080/healthz");
        assert_eq!(default_url("[::]:9000".parse().unwrap()), "http://[::1]:9000/healthz");
        assert_eq!(default_url("10.0.0.5:80".parse().unwrap()), "http://10.0.0.5:80/healthz");
    }
}
