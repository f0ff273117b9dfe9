//! Postgres over its wire protocol: the store's SQL functions called through a pool.

mod export;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgExecutor, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use std::ops::ControlFlow;
use std::time::Duration;

use super::functions::{Arg, Call, CallError, FunctionStore, Session, Transport};
use super::{ExportSink, StoreError};

const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a connection, including connecting: a stopped
/// database is reported after this, not after a hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a single call may take, for a database that accepts and never answers.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub type PostgresStore = FunctionStore<PgTransport>;

pub struct PgTransport {
    pool: PgPool,
}

impl PostgresStore {
    /// Prepares a pool without connecting: a database that is down at start-up is
    /// retried on each request rather than stopping the service.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions =
            url.parse().map_err(|e| StoreError::Internal(format!("DATABASE_URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A broken connection fails its call and is dropped; testing every
            // checkout would add a round trip to each request.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(FunctionStore::new(PgTransport { pool }))
    }
}

#[async_trait]
impl Transport for PgTransport {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn call(&self, call: &Call) -> Result<String, CallError> {
        run(call, &self.pool).await
    }

    async fn snapshot(&self) -> Result<Box<dyn Session + '_>, CallError> {
        let begin = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        let tx = begin.await.map_err(classify)?;
        Ok(Box::new(Snapshot { tx, pool: self.pool.clone() }))
    }
}

/// One read-only repeatable-read transaction: every call reads the same snapshot.
struct Snapshot {
    tx: Transaction<'static, Postgres>,
    /// Where another transaction can share the snapshot, to read a second table alongside.
    pool: PgPool,
}

#[async_trait]
impl Session for Snapshot {
    async fn call(&mut self, call: &Call) -> Result<String, CallError> {
        run(call, &mut *self.tx).await
    }

    async fn export_threads(&mut self, sink: &mut dyn ExportSink) -> Result<ControlFlow<()>, StoreError> {
        export::stream_threads(&mut self.tx, &self.pool, sink).await
    }
}

/// Calls the function with named arguments and brings back its result as JSON text.
async fn run<'c>(call: &Call, executor: impl PgExecutor<'c>) -> Result<String, CallError> {
    let named: Vec<String> =
        call.args.iter().enumerate().map(|(i, (name, _))| format!("{name} => ${}", i + 1)).collect();
    let sql = format!("SELECT to_jsonb({}({}))::text", call.function, named.join(", "));
    let mut query = sqlx::query_scalar::<_, Option<String>>(&sql);
    for (_, arg) in &call.args {
        query = match arg {
            Arg::Uuid(value) => query.bind(*value),
            Arg::Text(value) => query.bind(value.clone()),
            Arg::Int(value) => query.bind(*value),
            Arg::BigInt(value) => query.bind(*value),
            Arg::Bool(value) => query.bind(*value),
            Arg::Json(value) => query.bind(Json(value.clone())),
            Arg::Time(value) => query.bind(*value),
        };
    }
    match tokio::time::timeout(CALL_TIMEOUT, query.fetch_one(executor)).await {
        Err(_) => Err(CallError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
        Ok(Ok(json)) => Ok(json.unwrap_or_else(|| "null".into())),
        Ok(Err(error)) => Err(classify(error)),
    }
}

fn classify(error: sqlx::Error) -> CallError {
    if let sqlx::Error::Database(db) = &error {
        let sqlstate = db.code().unwrap_or_default().into_owned();
        return match sqlstate.as_str() {
            code if code.starts_with("EX") => CallError::Rejected { sqlstate },
            "42883" | "42P01" => CallError::Misconfigured(format!(
                "the database schema is missing or outdated ({error}); run `exai migrate`"
            )),
            // authentication failures, a database that does not exist
            code if code.starts_with("28") || code == "3D000" => CallError::Misconfigured(error.to_string()),
            // Worth retrying: connection exceptions, shutdown in progress, too many
            // connections, a cancelled statement, serialization failures, deadlocks,
            // locks not granted.
            code if code.starts_with("08")
                || code.starts_with("57")
                || ["53300", "40001", "40P01", "55P03"].contains(&code) =>
            {
                CallError::Unavailable(error.to_string())
            }
            _ => CallError::Failed(error.to_string()),
        };
    }
    match StoreError::from(error) {
        StoreError::Unavailable(cause) => CallError::Unavailable(cause),
        other => CallError::Failed(other.to_string()),
    }
}
