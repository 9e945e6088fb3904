//! `piazza-loadtest`: the scenario-driven load generator.
//!
//! It drives a node through the real SDK (one QUIC connection and session per simulated client),
//! paces sends open loop (`--rate`, latency measured from each message's intended send instant, so
//! a stall cannot hide behind a slowed-down generator) or closed loop (`--max`), checks every
//! delivery (lost, duplicate, out of order) and writes one JSON report. The report schema is in
//! `loadtest/README.md`.
//!
//! Scenarios: `chat` (pairs of users writing to each other). Others come with later issues.
//!
//! Code map: `chat.rs` (the scenario: connect, send, receive, drain), `pacing.rs` (the open-loop
//! schedule), `ledger.rs` (loss/duplicate/order bookkeeping), `hist.rs` (latency percentiles),
//! `node.rs` (spawning a node, `/proc` and `/metrics` readings), `report.rs` (the JSON report).

mod chat;
mod hist;
mod ledger;
mod node;
mod pacing;
mod report;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::error::ErrorKind;
use clap::{ArgGroup, CommandFactory, Parser, ValueEnum};

use crate::chat::ChatParams;
use crate::node::{SpawnedNode, Target};
use crate::report::Report;

/// The scenarios this build offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Pairs of users writing to each other in their direct conversation.
    Chat,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Chat => "chat",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "piazza-loadtest",
    version,
    about = "Load generator for Piazza: runs a scenario against a node and writes a JSON report",
    group(ArgGroup::new("node_choice").required(true).args(["spawn_node", "server"])),
    group(ArgGroup::new("load").required(true).args(["rate", "max"])),
)]
struct Cli {
    /// The scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Start a piazza-node on a fresh temporary data directory for the run (and stop it after).
    #[arg(long)]
    spawn_node: bool,
    /// The piazza-node binary for --spawn-node. Default: `piazza-node` next to this executable.
    #[arg(long, requires = "spawn_node")]
    node_bin: Option<PathBuf>,
    /// Address of an existing node: host:port of its QUIC listener, on this machine (loopback).
    #[arg(long, requires_all = ["ca", "node_data_dir"])]
    server: Option<String>,
    /// The CA file of the existing node (`<data-dir>/tls/ca.pem`).
    #[arg(long, requires = "server")]
    ca: Option<PathBuf>,
    /// The existing node's data directory: tokens are minted from its `token-key.pk8`.
    #[arg(long, requires = "server")]
    node_data_dir: Option<PathBuf>,
    /// Open loop: this many messages per second in total, evenly paced across all senders.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rate: Option<u64>,
    /// Closed loop: every sender sends its next message as soon as the previous one is acked.
    #[arg(long)]
    max: bool,
    /// Length of the measured window in seconds (after the warmup).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_secs: u64,
    /// Seconds of load before the measured window; their messages are checked but not timed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_secs: u64,
    /// Number of simulated users (chat: an even number; they form pairs).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    clients: u64,
    /// Number of QUIC connections. For chat it equals --clients (one per user).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connections: Option<u64>,
    /// Size of each message's text in bytes (at least the "<number> <instant> " header).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16_384))]
    message_bytes: u64,
    /// Where to write the JSON report.
    #[arg(long)]
    json: PathBuf,
}

/// Where the node comes from.
enum NodeSource {
    Spawned(SpawnedNode),
    External,
}

/// Checks what clap cannot express; a problem is a usage error (exit status 2), like clap's own.
fn validate(cli: &Cli) -> Result<(), clap::Error> {
    let usage = |message: String| Cli::command().error(ErrorKind::ArgumentConflict, message);
    match cli.scenario {
        Scenario::Chat => {
            if cli.clients & 1 == 1 {
                return Err(usage(format!(
                    "--clients must be even for the chat scenario (users form pairs), got {}",
                    cli.clients
                )));
            }
            if let Some(connections) = cli.connections.filter(|&c| c != cli.clients) {
                return Err(usage(format!(
                    "--connections {connections} differs from --clients {}: the chat scenario \
                     gives every user its own connection (sharing connections between users is \
                     not supported yet)",
                    cli.clients
                )));
            }
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = validate(&cli) {
        error.exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn unix_now() -> Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("read the clock")?
        .as_secs())
}

async fn run(cli: Cli) -> Result<()> {
    piazza_client::install_crypto_provider();
    let clients = usize::try_from(cli.clients).context("--clients")?;
    let message_bytes = usize::try_from(cli.message_bytes).context("--message-bytes")?;
    let started_at = unix_now()?;
    let ticks_per_s = node::clock_ticks_per_s();

    let (source, target) = if cli.spawn_node {
        let bin = match &cli.node_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()
                .context("locate this executable")?
                .with_file_name("piazza-node"),
        };
        let spawned = SpawnedNode::spawn(&bin)?;
        let target = spawned.target()?;
        (NodeSource::Spawned(spawned), target)
    } else {
        let (Some(server), Some(ca), Some(data_dir)) = (&cli.server, &cli.ca, &cli.node_data_dir)
        else {
            bail!("give --spawn-node, or --server with --ca and --node-data-dir");
        };
        (
            NodeSource::External,
            Target::existing(server, ca, data_dir)?,
        )
    };
    let node_pid = match &source {
        NodeSource::Spawned(node) => Some(node.pid()),
        NodeSource::External => None,
    };

    let params = ChatParams {
        clients,
        rate: cli.rate,
        warmup: Duration::from_secs(cli.warmup_secs),
        duration: Duration::from_secs(cli.duration_secs),
        message_bytes,
        node_pid,
        ticks_per_s,
        // Unique per run (milliseconds, base 36), so reruns against one node do not mix.
        run_tag: run_tag()?,
    };
    let outcome = chat::run(&params, &target).await;

    // Read the node's resources and counters before stopping it, whatever the outcome.
    let mut node_cpu_s = None;
    let mut node_peak_rss_bytes = None;
    let mut node_metrics = None;
    let mut node_log = None;
    if let NodeSource::Spawned(node) = source {
        if let Some(admin) = node.admin_addr() {
            match node::fetch_node_counters(admin).await {
                Ok(counters) => node_metrics = Some(counters),
                Err(e) => eprintln!("warning: node metrics: {e:#}"),
            }
        }
        node_cpu_s = node::cpu_seconds(Some(node.pid()), ticks_per_s);
        node_peak_rss_bytes = node::peak_rss_bytes(Some(node.pid()));
        node_log = Some(node.log_counts());
        if outcome.is_err() {
            eprintln!("the node's last log lines:\n{}", node.stderr_tail());
        }
        let status = node.stop()?;
        if !status.success() {
            eprintln!("warning: the node exited with {status}");
        }
    }
    let outcome = outcome?;

    let duration_s = params.duration.as_secs_f64();
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        scenario: cli.scenario.name(),
        started_at,
        mode: if cli.rate.is_some() { "open" } else { "closed" },
        node: if cli.spawn_node {
            "spawned"
        } else {
            "external"
        },
        clients,
        connections: clients,
        message_bytes,
        duration_s,
        warmup_s: params.warmup.as_secs_f64(),
        drain_s: (outcome.drain.as_secs_f64() * 1000.0).round() / 1000.0,
        rate_target_per_s: cli.rate,
        sent: outcome.attempts,
        acked: outcome.tally.acked,
        delivered: outcome.tally.delivered,
        lost: outcome.tally.lost,
        duplicates: outcome.tally.duplicates,
        out_of_order: outcome.tally.out_of_order,
        seq_mismatch: outcome.tally.seq_mismatch,
        delivered_unacked: outcome.tally.delivered_unacked,
        unsent: outcome.unsent,
        errors: outcome.errors.values().sum(),
        errors_by_kind: outcome.errors,
        throughput_per_s: outcome.delivered_in_window as f64 / duration_s,
        acked_per_s: outcome.acked_in_window as f64 / duration_s,
        latency_us: outcome.latency.percentiles(),
        ack_latency_us: outcome.ack_latency.percentiles(),
        send_lag_us: outcome.send_lag.percentiles(),
        node_cpu_s,
        node_cpu_window_s: outcome.cpu.node_s,
        node_peak_rss_bytes,
        node_log_warnings: node_log.map(|(warnings, _)| warnings),
        node_log_errors: node_log.map(|(_, errors)| errors),
        node_metrics,
        generator_cpu_window_s: outcome.cpu.generator_s,
        machine_cpu_window_s: outcome.cpu.machine_s,
        other_cpu_window_s: match (outcome.cpu.machine_s, outcome.cpu.generator_s) {
            (Some(machine), Some(generator)) => {
                Some((machine - generator - outcome.cpu.node_s.unwrap_or(0.0)).max(0.0))
            }
            _ => None,
        },
        generator_peak_rss_bytes: node::peak_rss_bytes(None),
        foreign_messages: outcome.foreign,
        reconnects: outcome.reconnects,
        machine_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
    };
    let json = serde_json::to_string_pretty(&report).context("encode the report")?;
    std::fs::write(&cli.json, format!("{json}\n"))
        .with_context(|| format!("write {}", cli.json.display()))?;
    print!("{}", report.summary());
    println!("report: {}", cli.json.display());
    Ok(())
}

fn run_tag() -> Result<String> {
    let mut millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("read the clock")?
        .as_millis();
    let mut tag = Vec::new();
    // At most 25 base-36 digits for a u128; bounded.
    for _ in 0..25 {
        let digit = (millis % 36) as u32;
        tag.push(char::from_digit(digit, 36).unwrap_or('0'));
        millis /= 36;
        if millis == 0 {
            break;
        }
    }
    Ok(tag.into_iter().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn only_chat_is_offered() {
        let error = Cli::try_parse_from([
            "piazza-loadtest",
            "--scenario",
            "group",
            "--spawn-node",
            "--max",
            "--duration-secs",
            "1",
            "--json",
            "r.json",
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("possible values: chat"),
            "{error}"
        );
    }

    #[test]
    fn chat_needs_pairs_and_one_connection_per_user() {
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "piazza-loadtest",
                "--scenario",
                "chat",
                "--spawn-node",
                "--max",
                "--duration-secs",
                "1",
                "--json",
                "r.json",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).unwrap()
        };
        assert!(validate(&parse(&[])).is_ok());
        assert!(validate(&parse(&["--clients", "50", "--connections", "50"])).is_ok());
        let odd = validate(&parse(&["--clients", "5"])).unwrap_err();
        assert!(odd.to_string().contains("must be even"), "{odd}");
        let shared = validate(&parse(&["--clients", "4", "--connections", "2"])).unwrap_err();
        assert!(shared.to_string().contains("--connections 2"), "{shared}");
    }

    #[test]
    fn rate_and_max_are_exclusive_and_one_is_required() {
        let base = [
            "piazza-loadtest",
            "--scenario",
            "chat",
            "--spawn-node",
            "--duration-secs",
            "1",
            "--json",
            "r.json",
        ];
        assert!(Cli::try_parse_from(base).is_err());
        assert!(Cli::try_parse_from(base.iter().chain(&["--max"])).is_ok());
        assert!(Cli::try_parse_from(base.iter().chain(&["--rate", "10"])).is_ok());
        assert!(Cli::try_parse_from(base.iter().chain(&["--rate", "10", "--max"])).is_err());
    }

    #[test]
    fn an_existing_node_needs_its_ca_and_data_dir() {
        let base = [
            "piazza-loadtest",
            "--scenario",
            "chat",
            "--max",
            "--duration-secs",
            "1",
            "--json",
            "r.json",
            "--server",
            "127.0.0.1:4433",
        ];
        assert!(Cli::try_parse_from(base).is_err());
        assert!(
            Cli::try_parse_from(
                base.iter()
                    .chain(&["--ca", "ca.pem", "--node-data-dir", "d"])
            )
            .is_ok()
        );
        assert!(
            Cli::try_parse_from(base.iter().chain(&[
                "--ca",
                "ca.pem",
                "--node-data-dir",
                "d",
                "--spawn-node"
            ]))
            .is_err()
        );
    }
}
