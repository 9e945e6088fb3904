//! The `piazza-node` command line: `run` (the default) starts a node; `token` mints a client token.
//!
//! It lives in the library (not in `main.rs`) so that the integration tests can build the very
//! same binary under another name and kill it with SIGKILL. It is the one module of the library
//! that uses `anyhow`, as a binary would.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::TokenAuthority;
use crate::{Config, Overrides};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use piazza_protocol::UserId;

#[derive(Parser, Debug)]
#[command(name = "piazza-node", version, about = "Piazza messaging node")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (the default).
    Run(RunArgs),
    /// Print a signed client token for a user.
    Token(TokenArgs),
}

#[derive(Args, Debug, Clone, Default)]
struct RunArgs {
    /// Data directory (store, TLS material, token key). Default ./piazza-data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// UDP address for client QUIC connections. Default 127.0.0.1:4433.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// TCP address for the admin HTTP server. Default 127.0.0.1:9090.
    #[arg(long)]
    admin_listen: Option<std::net::SocketAddr>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// Data directory holding the token signing key.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The user the token names.
    #[arg(long)]
    user: String,
    /// Lifetime in seconds (default from config: a day).
    #[arg(long)]
    ttl_secs: Option<u64>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn load_config(config: Option<&std::path::Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    Config::load(config, std::env::vars(), overrides).context("load configuration")
}

/// Parses the command line and runs the command; what `main` of `piazza-node` does.
pub fn main_entry() -> anyhow::Result<()> {
    crate::transport::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => token(args),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        ..Default::default()
    };
    let config = load_config(args.config.as_deref(), &overrides)?;
    let user: UserId = args.user.parse().context("parse --user")?;
    if user.is_reserved() {
        anyhow::bail!("--user {user}: names with '#' are reserved for the node");
    }
    let authority = TokenAuthority::load_or_generate(&config.signing_key_path())
        .context("load the token signing key")?;
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("read the clock")?
        .as_secs();
    let ttl = args.ttl_secs.unwrap_or(config.auth.token_ttl_secs);
    println!(
        "{}",
        authority
            .mint(&user, now_s, ttl)
            .context("mint the token")?
    );
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging();
    let overrides = Overrides {
        data_dir: args.data_dir,
        listen: args.listen,
        admin_listen: args.admin_listen,
    };
    let config = load_config(args.config.as_deref(), &overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async move {
        let data_dir = config.node.data_dir.clone();
        let node = crate::start(config).await.context("start the node")?;
        eprintln!("piazza-node is up");
        eprintln!("  clients (QUIC, ALPN piazza/1): {}", node.client_addr());
        eprintln!(
            "  admin HTTP:                    http://{}/healthz  /readyz  /metrics",
            node.admin_addr()
        );
        if let Some(ca) = node.ca_file() {
            eprintln!("  dev CA for clients:            {}", ca.display());
        }
        eprintln!(
            "  mint a token:                  piazza-node token --data-dir {} --user alice",
            data_dir.display()
        );
        wait_for_signal()
            .await
            .context("wait for a shutdown signal")?;
        node.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Whichever comes first: SIGTERM from a supervisor or Ctrl-C from a terminal.
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        result = tokio::signal::ctrl_c() => result?,
    }
    Ok(())
}
