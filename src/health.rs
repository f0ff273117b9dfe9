//! Health: every dependency checked concurrently, each within a timeout; one result
//! shared by all callers for a while, so monitors polling often never multiply probes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

use crate::cache::Cache;
use crate::store::{Store, StoreError};

/// How dependencies are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Longest a single dependency check may take.
    pub timeout: Duration,
    /// How long a health result is reused.
    pub reuse_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    /// The store works but the cache does not: requests succeed, more slowly.
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// The outcome of one dependency's check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// `healthy` or `unhealthy`.
    pub status: Status,
    /// Which store or cache answered. Like `error`, shown only to callers with an API key
    /// when keys are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub response_time_ms: f64,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    pub status: Status,
    pub timestamp: DateTime<Utc>,
    /// exai's version; shown only to callers with an API key when keys are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The answering process's instance id, which owns the runs it started; shown like
    /// `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `store` and `cache`.
    pub checks: BTreeMap<String, Check>,
    pub duration_ms: f64,
}

pub struct Health {
    store: Arc<dyn Store>,
    cache: Arc<dyn Cache>,
    settings: HealthSettings,
    instance: Option<String>,
    latest: Mutex<Option<(Instant, Arc<Report>)>>,
    /// Held while probing, so concurrent callers wait for one probe instead of each
    /// starting their own.
    probing: tokio::sync::Mutex<()>,
}

fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_micros() as f64 / 1000.0 * 100.0).round() / 100.0
}

fn store_problem(error: StoreError) -> String {
    match error {
        StoreError::Unavailable(cause) => format!("unreachable: {cause}"),
        StoreError::Misconfigured(cause) => format!("configuration error: {cause}"),
        other => other.to_string(),
    }
}

impl Health {
    pub fn new(store: Arc<dyn Store>, cache: Arc<dyn Cache>, settings: HealthSettings) -> Self {
        Self {
            store,
            cache,
            settings,
            instance: None,
            latest: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// Reports name the process's instance.
    pub fn with_instance(self, instance: String) -> Self {
        Self { instance: Some(instance), ..self }
    }

    /// The current report: reused while younger than the reuse window, else probed anew
    /// by one caller while the others wait for its result.
    pub async fn report(&self) -> Arc<Report> {
        if let Some(fresh) = self.fresh() {
            return fresh;
        }
        let _probing = self.probing.lock().await;
        if let Some(fresh) = self.fresh() {
            return fresh;
        }
        let report = Arc::new(self.probe().await);
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), report.clone()));
        report
    }

    /// The last report, however old, without probing: for metrics.
    pub fn last(&self) -> Option<Arc<Report>> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest.as_ref().map(|(_, report)| report.clone())
    }

    fn fresh(&self) -> Option<Arc<Report>> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest
            .as_ref()
            .filter(|(taken, _)| taken.elapsed() < self.settings.reuse_for)
            .map(|(_, report)| report.clone())
    }

    /// Checks every dependency now, concurrently.
    pub async fn probe(&self) -> Report {
        let started = Instant::now();
        let (store, cache) = tokio::join!(
            self.check(self.store.backend(), async { self.store.ping().await.map_err(store_problem) }),
            self.check(self.cache.backend(), async {
                self.cache.ping().await.map_err(|error| format!("unreachable: {}", error.0))
            }),
        );
        let status = match (store.status, cache.status) {
            (Status::Healthy, Status::Healthy) => Status::Healthy,
            (Status::Healthy, _) => Status::Degraded,
            _ => Status::Unhealthy,
        };
        Report {
            status,
            timestamp: Utc::now(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            instance: self.instance.clone(),
            checks: BTreeMap::from([("store".to_owned(), store), ("cache".to_owned(), cache)]),
            duration_ms: millis(started.elapsed()),
        }
    }

    async fn check(&self, backend: &str, call: impl Future<Output = Result<(), String>>) -> Check {
        let started = Instant::now();
        let error = match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok(())) => None,
            Ok(Err(problem)) => Some(problem),
            Err(_) => Some(format!("no answer within {} ms", self.settings.timeout.as_millis())),
        };
        Check {
            status: if error.is_none() { Status::Healthy } else { Status::Unhealthy },
            backend: Some(backend.to_owned()),
            response_time_ms: millis(started.elapsed()),
            timestamp: Utc::now(),
            error,
        }
    }
}

impl Report {
    /// What any caller may see: statuses and latencies. Backends, error texts and the
    /// version tell an outsider what to attack (error texts name addresses and roles).
    pub fn public(&self) -> Report {
        let checks = self
            .checks
            .iter()
            .map(|(name, check)| {
                let check = Check { backend: None, error: None, ..check.clone() };
                (name.clone(), check)
            })
            .collect();
        Report { version: None, instance: None, checks, ..self.clone() }
    }

    /// For people: the overall status, then a line per check.
    pub fn text(&self) -> String {
        let mut text = format!("{} in {} ms", self.status.as_str(), self.duration_ms);
        if let Some(version) = &self.version {
            let _ = write!(text, " (exai {version})");
        }
        if let Some(instance) = &self.instance {
            let _ = write!(text, " instance {instance}");
        }
        text.push('\n');
        for (name, check) in &self.checks {
            let backend = check.backend.as_deref().unwrap_or("-");
            let (status, ms) = (check.status.as_str(), check.response_time_ms);
            let _ = write!(text, "{name:<6} {backend:<9} {status:<10} {ms:>9.2} ms");
            if let Some(error) = &check.error {
                let _ = write!(text, "  {error}");
            }
            text.push('\n');
        }
        text
    }

    /// The IETF health-check response format (`application/health+json`).
    pub fn health_json(&self) -> Value {
        let verdict = |status: Status| match status {
            Status::Healthy => "pass",
            Status::Degraded => "warn",
            Status::Unhealthy => "fail",
        };
        let checks: serde_json::Map<String, Value> = self
            .checks
            .iter()
            .map(|(name, check)| {
                let mut entry = json!({
                    "componentType": "datastore",
                    "observedValue": check.response_time_ms,
                    "observedUnit": "ms",
                    "status": verdict(check.status),
                    "time": check.timestamp,
                });
                if let Some(backend) = &check.backend {
                    entry["componentId"] = Value::String(backend.clone());
                }
                if let Some(error) = &check.error {
                    entry["output"] = Value::String(error.clone());
                }
                (format!("{name}:responseTime"), json!([entry]))
            })
            .collect();
        let mut document = json!({
            "status": verdict(self.status),
            "serviceId": "exai",
            "description": "exai conversation memory and tool execution",
            "checks": checks,
        });
        if let Some(version) = &self.version {
            document["version"] = json!(version.split('.').next().unwrap_or_default());
            document["releaseId"] = json!(version);
        }
        document
    }
}
