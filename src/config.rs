//! Every setting, read once from the environment and validated before anything starts.

mod effective;
mod store;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::TimeDelta;
use url::Url;

pub use self::effective::{Setting, effective as effective_settings};
pub use self::store::{StoreConfig, without_password};

use self::store::store_config;
use crate::access::TrustedProxies;
use crate::domain::ConversationPolicy;
use crate::health::HealthSettings;
use crate::secret::Secret;
use crate::telemetry::LogFormat;
use crate::tools::registry::{self, ToolSettings};

/// How long a thread is served from the cache by default on a store EX-AI may share
/// (Postgres, Supabase): EX-AI's writes show within this, and a thread read all the time
/// costs the store one read per interval.
pub const SHARED_STORE_CACHE_TTL: Duration = Duration::from_secs(30);

/// A setting that cannot be used, named by its variable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { variable, message: message.into() }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub bind: SocketAddr,
    pub store: StoreConfig,
    pub redis_url: Option<Secret>,
    pub conversation: ConversationPolicy,
    pub api_keys: Vec<Secret>,
    /// Signs dashboard sessions; without it a random key per start, so sessions end at
    /// restart.
    pub session_secret: Option<Secret>,
    pub log_format: LogFormat,
    pub health: HealthSettings,
    /// Store and cache calls slower than this log a warning.
    pub slow_op: Duration,
    /// Longest a thread is served from the cache: how soon a write that bypasses exai
    /// (EX-AI's, on shared tables) shows. `None`: until the thread expires; the default
    /// on SQLite, [`SHARED_STORE_CACHE_TTL`] on Postgres and Supabase.
    pub cache_max_ttl: Option<Duration>,
    pub tools: ToolSettings,
    pub connections: ConnectionSettings,
    /// Peers whose `X-Forwarded-For`/`-Proto` are believed.
    pub trusted_proxies: TrustedProxies,
}

/// What one client may hold of the server, so that idle or slow clients cannot use up
/// its connections or open files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Longest wait for a request's headers, from when the connection opens or the
    /// previous response on it ends: so also how long a kept-alive connection may idle.
    pub header_timeout: Duration,
    /// Longest time a request's whole body may take to arrive, from its headers on.
    pub body_timeout: Duration,
    /// Most connections served at once; more wait to be accepted until one closes.
    pub max_connections: usize,
}

impl Config {
    /// Reads the process environment; `bind` (from the command line) wins over `EXAI_BIND`.
    pub fn from_env(bind: Option<SocketAddr>) -> Result<Config, ConfigError> {
        Self::load(|name| std::env::var(name).ok(), bind)
    }

    /// Reads settings through `var`; empty values count as unset.
    pub fn load(
        var: impl Fn(&str) -> Option<String>,
        bind: Option<SocketAddr>,
    ) -> Result<Config, ConfigError> {
        let var = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());

        let bind = match bind {
            Some(bind) => bind,
            None => parse_or(&var, "EXAI_BIND", "127.0.0.1:8080".parse().expect("valid default"))?,
        };
        let store = store_config(&var)?;
        let redis_url = var("REDIS_URL")
            .map(|url| check_url("REDIS_URL", &url, &["redis", "unix"]).map(|_| Secret::new(url)))
            .transpose()?;
        let conversation = ConversationPolicy {
            timeout: timeout_hours(&var)?,
            max_turns: parse_or(&var, "MAX_CONVERSATION_TURNS", 20)?,
        };
        if conversation.max_turns == 0 {
            return Err(invalid("MAX_CONVERSATION_TURNS", "must be at least 1"));
        }
        let api_keys = api_keys(&var)?;
        let allow_unauthenticated = parse_or(&var, "EXAI_ALLOW_UNAUTHENTICATED", false)?;
        if api_keys.is_empty() && !bind.ip().is_loopback() && !allow_unauthenticated {
            return Err(invalid(
                "EXAI_BIND",
                format!(
                    "{bind} is not a loopback address and no EXAI_API_KEYS are set; \
                     set keys, or EXAI_ALLOW_UNAUTHENTICATED=true to serve without them"
                ),
            ));
        }
        let log_format = match var("EXAI_LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid("EXAI_LOG_FORMAT", format!("{other:?} is not pretty or json")));
            }
        };
        let health = HealthSettings {
            timeout: millis(&var, "EXAI_HEALTH_TIMEOUT_MS", 2000)?,
            reuse_for: millis(&var, "EXAI_HEALTH_CACHE_MS", 5000)?,
        };
        if health.timeout.is_zero() {
            return Err(invalid("EXAI_HEALTH_TIMEOUT_MS", "must be at least 1"));
        }
        let slow_op = millis(&var, "EXAI_SLOW_OP_MS", 500)?;
        let cache_max_ttl = match (var("EXAI_CACHE_MAX_TTL_MS"), &store) {
            (Some(_), _) => Some(millis(&var, "EXAI_CACHE_MAX_TTL_MS", 0)?),
            // Only exai writes its SQLite file; a Postgres or Supabase database may be
            // shared with EX-AI, whose writes bypass the cache.
            (None, StoreConfig::Sqlite { .. }) => None,
            (None, _) => Some(SHARED_STORE_CACHE_TTL),
        };
        if cache_max_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(invalid("EXAI_CACHE_MAX_TTL_MS", "must be at least 1"));
        }
        let tools = tool_settings(&var)?;
        let connections = ConnectionSettings {
            header_timeout: seconds(&var, "EXAI_HEADER_TIMEOUT_SECS", 20, 3_600)?,
            body_timeout: seconds(&var, "EXAI_BODY_TIMEOUT_SECS", 30, 3_600)?,
            max_connections: parse_or(&var, "EXAI_MAX_CONNECTIONS", 10_000)?,
        };
        if connections.max_connections == 0 {
            return Err(invalid("EXAI_MAX_CONNECTIONS", "must be at least 1"));
        }
        let trusted_proxies = match var("EXAI_TRUSTED_PROXIES") {
            None => TrustedProxies::default(),
            Some(text) => {
                TrustedProxies::parse(&text).map_err(|message| invalid("EXAI_TRUSTED_PROXIES", message))?
            }
        };
        Ok(Config {
            bind,
            store,
            redis_url,
            conversation,
            api_keys,
            session_secret: var("EXAI_SESSION_SECRET").filter(|s| !s.is_empty()).map(Secret::new),
            log_format,
            health,
            slow_op,
            cache_max_ttl,
            tools,
            connections,
            trusted_proxies,
        })
    }
}

fn parse_or<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|e| invalid(name, format!("{text:?}: {e}"))),
    }
}

fn seconds(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    match parse_or(var, name, default)? {
        secs @ 1.. if secs <= max => Ok(Duration::from_secs(secs)),
        _ => Err(invalid(name, format!("must be between 1 and {max}"))),
    }
}

/// The registry from `EXAI_TOOLS_FILE`, or `./tools.toml` when there is one.
fn tool_settings(var: &impl Fn(&str) -> Option<String>) -> Result<ToolSettings, ConfigError> {
    let timeout_cap = seconds(var, "WORKFLOW_TOOL_TIMEOUT_SECS", 600, 86_400)?;
    let progress_every = seconds(var, "EXAI_TOOL_PROGRESS_SECS", 8, 3_600)?;
    let run_lease = seconds(var, "EXAI_RUN_LEASE_SECS", 20, 3_600)?;
    let path = var("EXAI_TOOLS_FILE")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("tools.toml")).filter(|default| default.is_file()));
    let definitions = match path {
        None => vec![registry::echo(timeout_cap)],
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid("EXAI_TOOLS_FILE", format!("cannot read {}: {e}", path.display())))?;
            registry::parse(&text, var, timeout_cap)
                .map_err(|problem| invalid("EXAI_TOOLS_FILE", format!("{}: {problem}", path.display())))?
        }
    };
    Ok(ToolSettings { definitions, timeout_cap, progress_every, run_lease })
}

fn millis(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    parse_or(var, name, default).map(Duration::from_millis)
}

fn check_url(name: &'static str, text: &str, schemes: &[&str]) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| invalid(name, format!("not a URL: {e}")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(invalid(name, format!("scheme must be one of {}", schemes.join(", "))));
    }
    Ok(url)
}

fn timeout_hours(var: &impl Fn(&str) -> Option<String>) -> Result<TimeDelta, ConfigError> {
    const NAME: &str = "CONVERSATION_TIMEOUT_HOURS";
    let hours: f64 = parse_or(var, NAME, 24.0)?;
    let millis = hours * 3_600_000.0;
    if !(1000.0..=10.0 * 365.0 * 86_400_000.0).contains(&millis) {
        return Err(invalid(NAME, "must be between one second and ten years, in hours"));
    }
    Ok(TimeDelta::milliseconds(millis as i64))
}

/// Keys from `EXAI_API_KEYS` and the lines of `EXAI_API_KEYS_FILE`, separated by
/// commas or newlines.
fn api_keys(var: &impl Fn(&str) -> Option<String>) -> Result<Vec<Secret>, ConfigError> {
    let mut text = var("EXAI_API_KEYS").unwrap_or_default();
    if let Some(path) = var("EXAI_API_KEYS_FILE") {
        let file = std::fs::read_to_string(&path)
            .map_err(|e| invalid("EXAI_API_KEYS_FILE", format!("cannot read {path}: {e}")))?;
        text.push('\n');
        text.push_str(&file);
    }
    Ok(text.split([',', '\n']).map(str::trim).filter(|key| !key.is_empty()).map(Secret::new).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(|name| vars.get(name).cloned(), None)
    }

    fn failing_variable(vars: &[(&str, &str)]) -> &'static str {
        load(vars).expect_err("configuration should be refused").variable
    }

    #[test]
    fn defaults_need_no_configuration() {
        let config = load(&[]).unwrap();
        assert_eq!(config.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.store, StoreConfig::Sqlite { data_dir: "./data".into() });
        assert_eq!(config.conversation.timeout, TimeDelta::hours(24));
        assert_eq!(config.conversation.max_turns, 20);
        assert!(config.api_keys.is_empty() && config.redis_url.is_none());
        assert_eq!(config.health.timeout, Duration::from_millis(2000));
        assert_eq!(config.health.reuse_for, Duration::from_millis(5000));
        assert_eq!(config.slow_op, Duration::from_millis(500));
        assert_eq!(config.cache_max_ttl, None);
        let tools: Vec<&str> = config.tools.definitions.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tools, ["echo"]);
        assert_eq!(config.tools.timeout_cap, Duration::from_secs(600));
        assert_eq!(config.tools.progress_every, Duration::from_secs(8));
        assert_eq!(config.tools.run_lease, Duration::from_secs(20));
        let connections = config.connections;
        assert_eq!(connections.header_timeout, Duration::from_secs(20));
        assert_eq!(connections.body_timeout, Duration::from_secs(30));
        assert_eq!(connections.max_connections, 10_000);
    }

    #[test]
    fn store_is_derived_from_what_is_configured() {
        let postgres = load(&[("DATABASE_URL", "postgres://u:p@db/exai")]).unwrap();
        assert_eq!(postgres.store.backend(), "postgres");
        assert_eq!(postgres.cache_max_ttl, Some(SHARED_STORE_CACHE_TTL), "a store EX-AI may share");
        let supabase = load(&[
            ("DATABASE_URL", "postgres://u:p@db/exai"),
            ("SUPABASE_URL", "https://abc.supabase.co"),
            ("SUPABASE_KEY", "sb_secret_x"),
        ])
        .unwrap();
        assert_eq!(supabase.store.backend(), "supabase");
        let forced = load(&[("EXAI_STORE", "sqlite"), ("DATABASE_URL", "postgres://db/x")]).unwrap();
        assert_eq!(forced.store.backend(), "sqlite");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("EXAI_BIND", "localhost")], "EXAI_BIND"),
            (&[("EXAI_STORE", "mongo")], "EXAI_STORE"),
            (&[("EXAI_STORE", "supabase")], "SUPABASE_URL"),
            (&[("SUPABASE_URL", "https://abc.supabase.co")], "SUPABASE_SERVICE_ROLE_KEY"),
            (&[("DATABASE_URL", "mysql://db")], "DATABASE_URL"),
            (&[("REDIS_URL", "not a url")], "REDIS_URL"),
            (&[("REDIS_URL", "rediss://cache:6380")], "REDIS_URL"),
            (&[("CONVERSATION_TIMEOUT_HOURS", "soon")], "CONVERSATION_TIMEOUT_HOURS"),
            (&[("CONVERSATION_TIMEOUT_HOURS", "-1")], "CONVERSATION_TIMEOUT_HOURS"),
            (&[("MAX_CONVERSATION_TURNS", "0")], "MAX_CONVERSATION_TURNS"),
            (&[("EXAI_LOG_FORMAT", "xml")], "EXAI_LOG_FORMAT"),
            (&[("EXAI_API_KEYS_FILE", "/nonexistent/keys")], "EXAI_API_KEYS_FILE"),
            (&[("EXAI_HEALTH_TIMEOUT_MS", "0")], "EXAI_HEALTH_TIMEOUT_MS"),
            (&[("EXAI_HEALTH_CACHE_MS", "-5")], "EXAI_HEALTH_CACHE_MS"),
            (&[("EXAI_SLOW_OP_MS", "1.5")], "EXAI_SLOW_OP_MS"),
            (&[("EXAI_CACHE_MAX_TTL_MS", "0")], "EXAI_CACHE_MAX_TTL_MS"),
            (&[("WORKFLOW_TOOL_TIMEOUT_SECS", "0")], "WORKFLOW_TOOL_TIMEOUT_SECS"),
            (&[("WORKFLOW_TOOL_TIMEOUT_SECS", "86401")], "WORKFLOW_TOOL_TIMEOUT_SECS"),
            (&[("EXAI_TOOL_PROGRESS_SECS", "3601")], "EXAI_TOOL_PROGRESS_SECS"),
            (&[("EXAI_TOOL_PROGRESS_SECS", "x")], "EXAI_TOOL_PROGRESS_SECS"),
            (&[("EXAI_RUN_LEASE_SECS", "0")], "EXAI_RUN_LEASE_SECS"),
            (&[("EXAI_TOOLS_FILE", "/nonexistent/tools.toml")], "EXAI_TOOLS_FILE"),
            (&[("EXAI_HEADER_TIMEOUT_SECS", "0")], "EXAI_HEADER_TIMEOUT_SECS"),
            (&[("EXAI_BODY_TIMEOUT_SECS", "3601")], "EXAI_BODY_TIMEOUT_SECS"),
            (&[("EXAI_MAX_CONNECTIONS", "0")], "EXAI_MAX_CONNECTIONS"),
        ];
        for (vars, variable) in cases {
            assert_eq!(failing_variable(vars), *variable, "{vars:?}");
        }
    }

    #[test]
    fn locations_never_show_passwords() {
        let config = load(&[("DATABASE_URL", "postgres://exai:hunter2@db:5432/exai")]).unwrap();
        assert_eq!(config.store.location(), "postgres://exai@db:5432/exai");
        assert_eq!(without_password("redis://:hunter2@cache:6379/0"), "redis://cache:6379/0");
        let with_query = load(&[("DATABASE_URL", "postgres://exai@db/exai?password=hunter2")]).unwrap();
        assert_eq!(with_query.store.location(), "postgres://exai@db/exai");
        let supabase = load(&[
            ("SUPABASE_URL", "http://admin:SUPAPW@abc.supabase.co/?k=QTOKEN#frag"),
            ("SUPABASE_KEY", "sb_secret_x"),
        ])
        .unwrap();
        assert_eq!(supabase.store.location(), "http://abc.supabase.co/");
    }

    #[test]
    fn fractional_hours_are_allowed() {
        let config = load(&[("CONVERSATION_TIMEOUT_HOURS", "0.5")]).unwrap();
        assert_eq!(config.conversation.timeout, TimeDelta::minutes(30));
    }

    #[test]
    fn non_loopback_needs_keys_or_an_explicit_opt_out() {
        assert_eq!(failing_variable(&[("EXAI_BIND", "0.0.0.0:8080")]), "EXAI_BIND");
        assert!(load(&[("EXAI_BIND", "0.0.0.0:8080"), ("EXAI_API_KEYS", "k1")]).is_ok());
        assert!(load(&[("EXAI_BIND", "0.0.0.0:8080"), ("EXAI_ALLOW_UNAUTHENTICATED", "true")]).is_ok());
        assert!(load(&[("EXAI_BIND", "[::1]:9000")]).is_ok());
    }

    #[test]
    fn keys_come_from_the_variable_and_the_file() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "k3\n\n k4 \n").unwrap();
        let config =
            load(&[("EXAI_API_KEYS", "k1, k2"), ("EXAI_API_KEYS_FILE", file.path().to_str().unwrap())])
                .unwrap();
        let keys: Vec<&str> = config.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["k1", "k2", "k3", "k4"]);
        assert_eq!(format!("{:?}", config.api_keys[0]), "Secret(***)");
    }
}
