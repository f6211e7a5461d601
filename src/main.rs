//! The `quotad` binary: parses the command line and config, then calls the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quotad::app;
use quotad::cli::{run_keys, KeysCommand};
use quotad::config::{Config, LogFormat};
use quotad::engine::{system_clock, Engine};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// sysexits EX_USAGE: the configuration or command line is wrong.
const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "quotad",
    version,
    about = "Exact, fail-closed API quotas on Redis"
)]
struct Args {
    /// TOML config file; every setting can also come from QUOTAD_* variables.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API until SIGTERM/SIGINT.
    Serve,
    /// Manage API keys directly in Redis.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read the audit log from SQLite.
    #[command(subcommand)]
    Audit(quotad::audit::cli::AuditCommand),
    /// Ask a running quotad for /healthz (or /readyz): exit 0 on 200, else 1.
    Health {
        /// Base URL of the node; default: the `listen` setting, wildcards as loopback.
        #[arg(long)]
        url: Option<String>,
        /// Ask /readyz (Redis answers, scripts loaded) instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
    /// Load-test a running quotad over HTTP (keys, connections, rate, latency).
    Bench(quotad::loadtest::BenchArgs),
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return clap_exit(&e),
    };
    let config = match Config::load(args.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("quotad: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    install_logging(config.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    runtime.block_on(run(config, args.command))
}

/// `--help` and `--version` print to stdout and succeed; any other clap error is a
/// usage error (EX_USAGE, as the README promises, not clap's 2).
fn clap_exit(e: &clap::Error) -> ExitCode {
    // Nothing better to do if stdout or stderr is gone.
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EX_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Logs to stderr, filtered by `QUOTAD_LOG`; colour only when stderr is a terminal,
/// so files and log collectors never get escape codes.
fn install_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUOTAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.with_ansi(false).json().flatten_event(true).init(),
    }
}

async fn run(config: Config, command: Command) -> ExitCode {
    match command {
        Command::Serve => serve(config).await,
        Command::Keys(cmd) => keys(config, cmd).await,
        Command::Audit(cmd) => audit(config, cmd).await,
        Command::Health { url, ready } => health(&config, url, ready).await,
        Command::Bench(args) => quotad::loadtest::main(args).await,
    }
}

/// `quotad health`: one bounded GET, one line of output, for container health checks.
async fn health(config: &Config, url: Option<String>, ready: bool) -> ExitCode {
    let base = url.unwrap_or_else(|| quotad::health::default_url(config.listen));
    match quotad::health::check(&base, ready, quotad::health::TIMEOUT).await {
        Ok(answer) if answer.healthy() => {
            println!("quotad health: {}", answer.message());
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("quotad health: {}", answer.message());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("quotad health: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `quotad audit …`: reads the SQLite file only; Redis is not needed.
async fn audit(config: Config, cmd: quotad::audit::cli::AuditCommand) -> ExitCode {
    let (mut out, mut note) = (std::io::stdout(), std::io::stderr());
    match quotad::audit::cli::run_audit(&config.audit, cmd, &mut out, &mut note).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quotad: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn generated_note(configured: bool) -> &'static str {
    if configured {
        "the configured admin token"
    } else {
        "the token above"
    }
}

/// Copy-paste examples on stdout; the token itself is never repeated.
fn print_examples(listen: std::net::SocketAddr, token_source: &str) {
    let base = format!("http://{listen}");
    println!(
        "quotad: listening on {base}. Try it (ADMIN = {token_source}):\n\
         \x20 curl -s -X POST {base}/v1/keys -H \"Authorization: Bearer $ADMIN\" -d '{{\"tier\": \"free\"}}'\n\
         \x20 export KEY=<the \"key\" of that answer; shown once, only its hash is stored>\n\
         \x20 curl -s -X POST {base}/v1/consume -H \"Authorization: Bearer $KEY\" -d '{{\"endpoint\": \"/hello\"}}'\n\
         \x20 curl -s {base}/v1/quota -H \"Authorization: Bearer $KEY\""
    );
}

/// `quotad keys …`: straight to Redis, no HTTP.
async fn keys(config: Config, cmd: KeysCommand) -> ExitCode {
    let store = match config.store() {
        Ok(store) => store,
        Err(e) => {
            eprintln!("quotad: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let engine = Engine::new(
        store,
        config.catalogue(),
        config.engine_settings(),
        system_clock(),
    );
    if let Err(e) = engine.start().await {
        eprintln!("quotad: {e}");
        return ExitCode::FAILURE;
    }
    match run_keys(&engine, cmd).await {
        Ok(out) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&out).expect("JSON serializes")
            );
            ExitCode::SUCCESS
        }
        Err(quotad::cli::CliError::Usage(msg)) => {
            eprintln!("quotad: {msg}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            eprintln!("quotad: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `quotad serve`: metrics recorder, admin token, listener, then the library's `serve`.
async fn serve(config: Config) -> ExitCode {
    let (admin, generated) = match app::admin_token(config.admin_token.as_deref(), config.listen) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("quotad: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let metrics = match app::install_metrics(&config.catalogue()) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("quotad: cannot install the metrics recorder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("quotad: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(token) = generated {
        // Stdout, once, never through the log.
        println!("quotad: generated admin token, shown once; paste the next line:");
        println!("export ADMIN={token}");
    }
    print_examples(config.listen, generated_note(config.admin_token.is_some()));
    let shutdown = CancellationToken::new();
    tokio::spawn(app::metrics_upkeep(metrics.clone(), shutdown.clone()));
    tokio::spawn(app::cancel_on_signal(shutdown.clone()));
    match app::serve(&config, listener, admin, metrics, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ app::AppError::Store(_)) => {
            // Only the Redis URL can be wrong before the first command.
            eprintln!("quotad: {e}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            eprintln!("quotad: {e}");
            ExitCode::FAILURE
        }
    }
}
