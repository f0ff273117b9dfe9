use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;

use exai::app::{App, AppState, open_store};
use exai::config::{Config, StoreConfig, without_password};
use exai::healthcheck::{self, Failure};
use exai::store::{check_postgres_migration, migrate_postgres};
use exai::{backup, http, server, telemetry, transfer};

/// Conversation memory and tool execution for AI tool chains.
#[derive(Parser)]
#[command(name = "exai", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Check health: exit 0 healthy or degraded, 1 unhealthy, 2 misconfigured, 3 unreachable.
    Healthcheck(HealthcheckArgs),
    /// Apply database migrations to the configured store.
    Migrate(MigrateArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Copy the SQLite store to PATH while a server keeps serving it.
    Backup(BackupArgs),
    /// Write every thread and run of the configured store as JSON Lines, from one snapshot
    /// on SQLite and Postgres (on Supabase page after page, not a snapshot).
    Export(ExportArgs),
    /// Read an export into the configured store; importing again changes nothing.
    Import(ImportArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// Write here instead of to standard output.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct ImportArgs {
    /// A file `exai export` wrote.
    file: PathBuf,
}

/// Exit code for an import file that is malformed or truncated.
const EXIT_BAD_FILE: u8 = 3;

#[derive(Args)]
struct BackupArgs {
    /// Where the copy goes; must not exist yet.
    path: PathBuf,
}

#[derive(Args)]
struct MigrateArgs {
    /// Print what the migrations would change (Postgres, Supabase), and change nothing.
    #[arg(long)]
    check: bool,
}

#[derive(Args, Default)]
struct ServeArgs {
    /// Listen address; overrides EXAI_BIND.
    #[arg(long)]
    bind: Option<SocketAddr>,
}

#[derive(Args)]
struct HealthcheckArgs {
    /// Health URL of a running server [default: /healthz on EXAI_BIND].
    #[arg(long)]
    url: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Give up on the server after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Run the checks in this process, from the environment, without a server.
    #[arg(long, conflicts_with = "url")]
    direct: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Exit code for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    if let Command::Openapi = command {
        let document = http::openapi().to_pretty_json().expect("the OpenAPI document serializes");
        println!("{document}");
        return ExitCode::SUCCESS;
    }

    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        eprintln!("exai: .env: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let bind = match &command {
        Command::Serve(args) => args.bind,
        _ => None,
    };
    let config = Config::from_env(bind);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("exai: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Healthcheck(args) = &command {
        return runtime.block_on(check_health(args, config));
    }
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("exai: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log_format);
    if let Command::Import(args) = &command {
        return runtime.block_on(import(&config, &args.file));
    }
    let outcome = runtime.block_on(async {
        match command {
            Command::Export(args) => export(&config, args.output.as_deref()).await,
            Command::Migrate(args) => migrate(&config, &args).await,
            Command::Backup(args) => back_up(&config, &args.path).await,
            _ => serve(&config).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

async fn serve(config: &Config) -> Result<(), BoxError> {
    let app = App::from_config(config).await?;
    tracing::info!(
        store = app.conversations.store().backend(),
        location = %config.store.location(),
        cache = app.conversations.cache().backend(),
        redis = config.redis_url.as_ref().map(|url| without_password(url.expose())),
        max_turns = config.conversation.max_turns,
        timeout_hours = config.conversation.timeout.as_seconds_f64() / 3600.0,
        api_keys = config.api_keys.len(),
        tools = ?config.tools.definitions.iter().map(|tool| tool.name.as_str()).collect::<Vec<_>>(),
        "exai starting"
    );
    let mut connections = config.connections;
    connections.max_connections = server::fit_open_files(connections.max_connections);
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.bind))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        max_connections = connections.max_connections,
        "listening"
    );
    let state = AppState::new(app);
    exai::app::spawn_sampler(state.clone());
    server::serve(listener, state, connections, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(config: &Config, args: &MigrateArgs) -> Result<(), BoxError> {
    match &config.store {
        StoreConfig::Sqlite { .. } if args.check => {
            return Err("`exai migrate --check` needs a Postgres or Supabase store".into());
        }
        StoreConfig::Sqlite { .. } => {
            open_store(&config.store).await?;
        }
        StoreConfig::Postgres { url } | StoreConfig::Supabase { database_url: Some(url), .. }
            if args.check =>
        {
            print!("{}", check_postgres_migration(url.expose()).await?);
            return Ok(());
        }
        StoreConfig::Postgres { url } | StoreConfig::Supabase { database_url: Some(url), .. } => {
            if migrate_postgres(url.expose()).await?.adopting {
                tracing::warn!(
                    "adopted EX-AI's tables; while EX-AI still writes them, its writes show through \
                     exai's cache within EXAI_CACHE_MAX_TTL_MS (30 s unless set)"
                );
            }
        }
        StoreConfig::Supabase { database_url: None, .. } => {
            return Err("migrating Supabase needs DATABASE_URL set to the project's database \
                        URL; or paste migrations/postgres/*.sql into its SQL editor"
                .into());
        }
    }
    tracing::info!(store = config.store.backend(), location = %config.store.location(), "migrations applied");
    Ok(())
}

async fn back_up(config: &Config, target: &Path) -> Result<(), BoxError> {
    let database = backup::database_of(&config.store)?;
    let copy = backup::backup(&database, target).await?;
    println!(
        "{}: {} threads, {} turns, {} runs, {} bytes",
        copy.path.display(),
        copy.threads,
        copy.turns,
        copy.runs,
        copy.bytes
    );
    Ok(())
}

async fn export(config: &Config, output: Option<&Path>) -> Result<(), BoxError> {
    let store = open_store(&config.store).await?;
    let bar = progress_bar("{spinner} exporting {human_pos}/{human_len} threads [{bar:30}] {per_sec} {eta}");
    let exported = match output {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|error| format!("{}: {error}", path.display()))?;
            transfer::export(store.as_ref(), &mut std::io::BufWriter::new(file), &bar).await?
        }
        None => {
            transfer::export(store.as_ref(), &mut std::io::BufWriter::new(std::io::stdout()), &bar).await?
        }
    };
    bar.finish_and_clear();
    eprintln!(
        "exported {} threads, {} turns, {} runs from {}",
        exported.threads,
        exported.turns,
        exported.runs,
        config.store.backend()
    );
    Ok(())
}

/// A progress bar on a terminal; nothing where standard error is a log or a pipe.
fn progress_bar(template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(0).with_style(style.progress_chars("=> "))
}

async fn import(config: &Config, file: &Path) -> ExitCode {
    let store = match open_store(&config.store).await {
        Ok(store) => store,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let bar = progress_bar("{spinner} importing {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} {eta}");
    let outcome = transfer::import(store.as_ref(), file, &bar).await;
    bar.finish_and_clear();
    match outcome {
        Ok(done) => {
            println!(
                "{} threads created, {} unchanged; {} runs created, {} unchanged; {} conflicts{}",
                done.threads_created,
                done.threads_unchanged,
                done.runs_created,
                done.runs_unchanged,
                done.conflicts,
                if done.changed_nothing() { " (nothing changed)" } else { "" }
            );
            if done.conflicts == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(error) => {
            tracing::error!("{}: {error}", file.display());
            if error.is_bad_file() { ExitCode::from(EXIT_BAD_FILE) } else { ExitCode::FAILURE }
        }
    }
}

async fn check_health(args: &HealthcheckArgs, config: Result<Config, exai::config::ConfigError>) -> ExitCode {
    let key = config.as_ref().ok().and_then(|config| config.api_keys.first());
    let timeout = Duration::from_millis(args.timeout_ms);
    let report = match (&config, args.direct, &args.url) {
        (Err(error), true, _) | (Err(error), false, None) => Err(Failure::Misconfigured(error.to_string())),
        (Ok(config), true, _) => healthcheck::direct(config).await,
        (_, false, Some(url)) => healthcheck::remote(url, key, timeout).await,
        (Ok(config), false, None) => {
            healthcheck::remote(&healthcheck::default_url(config.bind), key, timeout).await
        }
    };
    match report {
        Ok(report) => {
            match args.format {
                Format::Text => print!("{}", report.text()),
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&report).expect("a report serializes"))
                }
            }
            healthcheck::exit_code(&report)
        }
        Err(failure) => {
            eprintln!("exai healthcheck: {failure}");
            failure.exit_code()
        }
    }
}
