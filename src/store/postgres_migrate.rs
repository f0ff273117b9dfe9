//! `exai migrate` on Postgres: every pending migration in one transaction, so a failure
//! leaves the database as it was and `--check` can apply them, report the difference and
//! roll back. EX-AI's tables are adopted in place; `migrations/adoption` keeps 0001's
//! back-fill from changing what EX-AI wrote (see there why).

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{Connection, Row};
use std::time::Duration;

use super::StoreError;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");
const BEFORE_ADOPTION: &str = include_str!("../../migrations/adoption/before.sql");
const AFTER_ADOPTION: &str = include_str!("../../migrations/adoption/after.sql");

/// Columns whose values a migration must never change, compared by `--check`.
const KEPT_COLUMNS: [(&str, &[&str]); 2] = [
    ("conversations", &["continuation_id", "title", "metadata", "created_at", "updated_at"]),
    ("messages", &["conversation_id", "role", "content", "metadata", "created_at", "idempotency_key"]),
];

/// What a migration run applied (or, checking, would apply).
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Migrations not applied before, as `<version>_<description>`.
    pub pending: Vec<String>,
    /// Whether EX-AI's tables were taken over by this run.
    pub adopting: bool,
    /// Existing rows given a value where they had none, as `(table.column, rows)`.
    pub filled: Vec<(String, i64)>,
    /// Existing rows whose value changed, as `(table.column, rows)`: none, unless broken.
    pub changed: Vec<(String, i64)>,
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pending.is_empty() {
            writeln!(f, "no migration pending")?;
        }
        for name in &self.pending {
            writeln!(f, "apply {name}")?;
        }
        if self.adopting {
            writeln!(f, "adopt EX-AI's conversations and messages tables in place")?;
        }
        for (column, rows) in &self.filled {
            writeln!(f, "fill missing {column} in {rows} existing rows")?;
        }
        for (column, rows) in &self.changed {
            writeln!(f, "change {column} in {rows} existing rows")?;
        }
        if self.changed.is_empty() {
            writeln!(f, "no existing value changes")?;
        }
        Ok(())
    }
}

/// Applies `migrations/postgres` to the database at `url` (a Supabase database URL too).
pub async fn migrate_postgres(url: &str) -> Result<MigrationReport, StoreError> {
    run(url, false).await
}

/// Runs the migrations as [`migrate_postgres`] would, reports what they change, and
/// rolls everything back.
pub async fn check_postgres_migration(url: &str) -> Result<MigrationReport, StoreError> {
    run(url, true).await
}

async fn run(url: &str, check: bool) -> Result<MigrationReport, StoreError> {
    let pool =
        PgPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut report = MigrationReport {
        pending: pending(&mut tx).await?,
        adopting: sqlx::query_scalar(ADOPTING).fetch_one(&mut *tx).await?,
        filled: Vec::new(),
        changed: Vec::new(),
    };
    if check {
        snapshot(&mut tx).await?;
    }
    if report.adopting {
        sqlx::raw_sql(BEFORE_ADOPTION).execute(&mut *tx).await?;
    }
    MIGRATOR.run(&mut *tx).await.map_err(|e| StoreError::Internal(format!("migrating: {e}")))?;
    if report.adopting {
        sqlx::raw_sql(AFTER_ADOPTION).execute(&mut *tx).await?;
    }
    if check {
        (report.filled, report.changed) = changes(&mut tx).await?;
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    drop(conn);
    pool.close().await;
    Ok(report)
}

/// EX-AI's tables exist and have not been adopted yet (messages has no `seq`).
const ADOPTING: &str = "
    SELECT to_regclass('conversations') IS NOT NULL AND to_regclass('messages') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_attribute
                       WHERE attrelid = to_regclass('messages') AND attname = 'seq'
                         AND NOT attisdropped)";

async fn pending(conn: &mut PgConnection) -> Result<Vec<String>, StoreError> {
    let applied: Vec<i64> =
        if sqlx::query_scalar::<_, bool>("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?
        {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&mut *conn)
                .await?
        } else {
            Vec::new()
        };
    Ok(MIGRATOR
        .iter()
        .filter(|migration| !applied.contains(&migration.version))
        .map(|migration| format!("{:04}_{}", migration.version, migration.description.replace(' ', "_")))
        .collect())
}

fn snapshot_name(table: &str) -> String {
    format!("exai_before_{table}")
}

/// Copies the kept columns of the tables that exist, to compare after migrating.
async fn snapshot(conn: &mut PgConnection) -> Result<(), StoreError> {
    for (table, columns) in KEPT_COLUMNS {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut *conn)
            .await?;
        if exists {
            let sql = format!(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT id, {} FROM {table}",
                snapshot_name(table),
                columns.join(", ")
            );
            sqlx::raw_sql(&sql).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

type Counts = Vec<(String, i64)>;

/// Rows of the snapshot given a value, and rows whose value changed, per kept column.
async fn changes(conn: &mut PgConnection) -> Result<(Counts, Counts), StoreError> {
    let mut filled = Vec::new();
    let mut changed = Vec::new();
    for (table, columns) in KEPT_COLUMNS {
        let before = snapshot_name(table);
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("pg_temp.{before}"))
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            continue;
        }
        let counts: Vec<String> = columns
            .iter()
            .map(|column| {
                format!(
                    "count(*) FILTER (WHERE b.{column} IS NULL AND t.{column} IS NOT NULL), \
                     count(*) FILTER (WHERE b.{column} IS NOT NULL \
                         AND (t.{column} IS NULL OR b.{column}::text <> t.{column}::text))"
                )
            })
            .collect();
        let sql = format!("SELECT {} FROM {before} b JOIN {table} t USING (id)", counts.join(", "));
        let row = sqlx::query(&sql).fetch_one(&mut *conn).await?;
        for (index, column) in columns.iter().enumerate() {
            for (counts, rows) in
                [(&mut filled, row.try_get(2 * index)?), (&mut changed, row.try_get(2 * index + 1)?)]
            {
                if rows > 0 {
                    counts.push((format!("{table}.{column}"), rows));
                }
            }
        }
    }
    Ok((filled, changed))
}
