//! The settings in effect as an operator sees them, every secret redacted.

use super::{Config, StoreConfig, without_password};
use crate::telemetry::LogFormat;

/// One setting as shown: its variable and its value, already stripped of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub value: String,
}

fn set_or_not(set: bool, when_set: &str, otherwise: &str) -> String {
    if set { when_set } else { otherwise }.to_owned()
}

/// The settings of `config` worth showing an operator. Credentials never appear:
/// URLs lose their password and query, keys and secrets are only said to be set.
pub fn effective(config: &Config) -> Vec<Setting> {
    let millis = |d: std::time::Duration| format!("{} ms", d.as_millis());
    let tools: Vec<String> = config
        .tools
        .definitions
        .iter()
        .map(|tool| format!("{} ({}, {} s)", tool.name, tool.kind.name(), tool.timeout.as_secs()))
        .collect();
    let setting = |name, value| Setting { name, value };
    vec![
        setting("EXAI_BIND", config.bind.to_string()),
        setting("EXAI_STORE", config.store.backend().to_owned()),
        setting("store location", config.store.location()),
        setting(
            "REDIS_URL",
            match (&config.redis_url, &config.store) {
                (Some(url), _) => without_password(url.expose()),
                (None, StoreConfig::Sqlite { .. }) => "(in-process cache)".to_owned(),
                (None, _) => "(no cache: the store may be shared)".to_owned(),
            },
        ),
        setting(
            "CONVERSATION_TIMEOUT_HOURS",
            format!("{}", config.conversation.timeout.as_seconds_f64() / 3600.0),
        ),
        setting("MAX_CONVERSATION_TURNS", config.conversation.max_turns.to_string()),
        setting("EXAI_API_KEYS", format!("{} key(s), hidden", config.api_keys.len())),
        setting(
            "EXAI_SESSION_SECRET",
            set_or_not(config.session_secret.is_some(), "set, hidden", "random per start"),
        ),
        setting(
            "EXAI_LOG_FORMAT",
            match config.log_format {
                LogFormat::Pretty => "pretty",
                LogFormat::Json => "json",
            }
            .to_owned(),
        ),
        setting("EXAI_HEALTH_TIMEOUT_MS", millis(config.health.timeout)),
        setting("EXAI_HEALTH_CACHE_MS", millis(config.health.reuse_for)),
        setting("EXAI_SLOW_OP_MS", millis(config.slow_op)),
        setting("tools", tools.join(", ")),
        setting("WORKFLOW_TOOL_TIMEOUT_SECS", config.tools.timeout_cap.as_secs().to_string()),
        setting("EXAI_RUN_LEASE_SECS", config.tools.run_lease.as_secs().to_string()),
        setting("EXAI_HEADER_TIMEOUT_SECS", config.connections.header_timeout.as_secs().to_string()),
        setting("EXAI_BODY_TIMEOUT_SECS", config.connections.body_timeout.as_secs().to_string()),
        setting("EXAI_MAX_CONNECTIONS", config.connections.max_connections.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn secrets_never_appear() {
        let vars = |name: &str| match name {
            "REDIS_URL" => Some("redis://:hunter2@cache:6379/0".to_owned()),
            "EXAI_API_KEYS" => Some("key-one,key-two".to_owned()),
            "EXAI_SESSION_SECRET" => Some("session-s3cret".to_owned()),
            _ => None,
        };
        let config = Config::load(vars, None).expect("valid");
        assert_eq!(config.session_secret, Some(Secret::new("session-s3cret")));
        let shown: String = effective(&config).iter().map(|s| format!("{}={}\n", s.name, s.value)).collect();
        for secret in ["hunter2", "key-one", "key-two", "session-s3cret"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("EXAI_API_KEYS=2 key(s), hidden"));
        assert!(shown.contains("REDIS_URL=redis://cache:6379/0"), "{shown}");
    }
}
