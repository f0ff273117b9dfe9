use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use exai::app::{App, AppState, open_store};
use exai::config::{Config, StoreConfig, without_password};
use exai::healthcheck::{self, Failure};
use exai::store::migrate_postgres;
use exai::{http, server, telemetry};

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
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
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
    let outcome = runtime.block_on(async {
        match command {
            Command::Migrate => migrate(&config).await,
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
    exai::stats::spawn_sampler(state.clone());
    server::serve(listener, state, connections, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(config: &Config) -> Result<(), BoxError> {
    match &config.store {
        StoreConfig::Sqlite { .. } => {
            open_store(&config.store).await?;
        }
        StoreConfig::Postgres { url } | StoreConfig::Supabase { database_url: Some(url), .. } => {
            migrate_postgres(url.expose()).await?;
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
