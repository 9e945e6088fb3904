//! `piazza-loadtest`: the scenario-driven load generator.
//!
//! It drives a node through the real SDK (one QUIC connection and session per simulated client),
//! paces sends open loop (`--rate`, latency measured from each message's intended send instant, so
//! a stall cannot hide behind a slowed-down generator) or closed loop (`--max`), checks every
//! delivery (lost, duplicate, out of order) and writes one JSON report. The report schema is in
//! `loadtest/README.md`.
//!
//! Scenarios: `chat` (pairs of users writing to each other), `group` (groups of N, everyone
//! writing into their group), `channel` (posters and their channels' subscribers), `mixed` (all
//! three at once, `--mix`), `connect` (a connection storm, then idle connections), `checkout`
//! (customers buying in shops, from the cart to a paid order). `compare` sets two reports side
//! by side.
//!
//! Code map: `traffic.rs` (what the message scenarios share: connect, send, receive, drain),
//! `chat.rs`, `group.rs`, `channel.rs` and `mixed.rs` (who talks to whom), `connect.rs`,
//! `checkout.rs` (its own pipeline, sharing pacing, histograms and the report), `compare.rs`, `pacing.rs` (the open-loop schedule, constant or Poisson), `progress.rs` (the live
//! progress line), `ledger.rs` (loss/duplicate/order bookkeeping), `hist.rs` (latency percentiles),
//! `node.rs` (spawning a node, `/proc` and `/metrics` readings), `report.rs` (the JSON report).

mod channel;
mod chat;
mod checkout;
mod compare;
mod connect;
mod group;
mod hist;
mod ledger;
mod mixed;
mod node;
mod pacing;
mod progress;
mod report;
mod traffic;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::error::ErrorKind;
use clap::{ArgGroup, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::connect::{ConnectOutcome, ConnectParams};
use crate::hist::LatencyHist;
use crate::node::{SpawnedNode, Target};
use crate::report::Report;
use crate::traffic::{TrafficOutcome, TrafficParams};

/// How open-loop send instants are spread (`--arrivals`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ArrivalsArg {
    /// Evenly spaced: slot j at j / rate.
    Constant,
    /// Exponential gaps (a Poisson stream of --rate per second) from a PRNG seeded by --seed.
    Poisson,
}

/// The scenarios this build offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Pairs of users writing to each other in their direct conversation.
    Chat,
    /// Groups of --group-size users, every member writing into its group.
    Group,
    /// A connection storm (--clients connections), then the connections held idle.
    Connect,
    /// --channels posters, each posting into its own channel, and --subscribers listeners.
    Channel,
    /// Chat pairs, groups and channels at once, in the proportions of --mix.
    Mixed,
    /// Customers checking out in --shops shops: cart, checkout, accept, pay, until paid.
    Checkout,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Chat => "chat",
            Scenario::Group => "group",
            Scenario::Connect => "connect",
            Scenario::Channel => "channel",
            Scenario::Mixed => "mixed",
            Scenario::Checkout => "checkout",
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
    // `compare` takes no run options, and a run needs its options only without a subcommand.
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The scenario to run.
    #[arg(long, value_enum, required = true)]
    scenario: Option<Scenario>,
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
    /// With --rate: `constant` (evenly spaced, the default) or `poisson` (exponential gaps, the
    /// same mean rate, drawn from a PRNG seeded by --seed).
    #[arg(long, value_enum)]
    arrivals: Option<ArrivalsArg>,
    /// With --arrivals poisson: the PRNG seed (default a fixed one, so runs repeat).
    #[arg(long, requires = "arrivals")]
    seed: Option<u64>,
    /// No live progress line on stderr (it is shown only on a terminal and never when CI is set).
    #[arg(long)]
    quiet: bool,
    /// Loopback source addresses for the clients' UDP sockets, round-robin
    /// (`127.0.0.1,127.0.0.2,…`), for more connections than one address has ephemeral ports.
    #[arg(long)]
    source_addrs: Option<String>,
    /// Length of the measured window in seconds (after the warmup).
    #[arg(long, required = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_secs: Option<u64>,
    /// Seconds of load before the measured window; their messages are checked but not timed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_secs: u64,
    /// Number of simulated users (chat: an even number; they form pairs; group: a multiple of
    /// --group-size).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    clients: u64,
    /// Number of QUIC connections. It equals --clients (one per user).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connections: Option<u64>,
    /// Size of each message's text in bytes (at least the "<number> <instant> " header).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16_384))]
    message_bytes: u64,
    /// Members per group (group scenario): 2 to 1001 (the creator and up to 1000 others).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    group_size: Option<u64>,
    /// Channel scenario: listening users (each its own connection); subscriber `i` follows
    /// channel `i mod --channels`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    subscribers: Option<u64>,
    /// Channel scenario: channels, each with its own posting user.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    channels: Option<u64>,
    /// Closed loop (--max): sends of one sender in flight at once, the next starting as soon as
    /// one is acked. Default 1.
    #[arg(long, conflicts_with = "rate", value_parser = clap::value_parser!(u64).range(1..=4096))]
    in_flight: Option<u64>,
    /// Mixed scenario: shares of the senders (and so of the sends) per kind, e.g.
    /// `chat=70,group=20,channel=10`. Groups are of --group-size (default 10); channels have
    /// --subscribers listeners in all (default 10 per channel).
    #[arg(long)]
    mix: Option<String>,
    /// Checkout scenario: shops, each with its own owner (default one per 100 customers, at
    /// least one); customer `i` shops at shop `i mod --shops`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    shops: Option<u64>,
    /// Spawned node: the payment sandbox's settlement delay in ms (its `payments.sandbox_latency_ms`;
    /// the node's default is 20).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    sandbox_latency_ms: Option<u64>,
    /// Spawned node: the payment sandbox's random extra delay in ms, up to this much (its
    /// `payments.sandbox_jitter_ms`; the node's default is 10).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    sandbox_jitter_ms: Option<u64>,
    /// Where to write the JSON report.
    #[arg(long, required = true)]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compare two reports: every numeric field of A and B side by side with the ratio B/A.
    Compare {
        /// The baseline report.
        a: PathBuf,
        /// The report compared with it.
        b: PathBuf,
        /// Print the comparison as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where the node comes from.
enum NodeSource {
    Spawned(SpawnedNode),
    External,
}

/// Checks what clap cannot express; a problem is a usage error (exit status 2), like clap's own.
fn validate(cli: &Cli) -> Result<(), clap::Error> {
    let usage = |message: String| Cli::command().error(ErrorKind::ArgumentConflict, message);
    if let Some(connections) = cli.connections.filter(|&c| c != cli.clients) {
        return Err(usage(format!(
            "--connections {connections} differs from --clients {}: every user has its own \
             connection (sharing connections between users is not supported yet)",
            cli.clients
        )));
    }
    if let Some(list) = &cli.source_addrs {
        parse_source_addrs(list).map_err(usage)?;
    }
    if cli.arrivals.is_some() && cli.rate.is_none() {
        return Err(usage(
            "--arrivals goes with --rate (the closed loop --max has no schedule)".to_owned(),
        ));
    }
    if cli.seed.is_some() && cli.arrivals != Some(ArrivalsArg::Poisson) {
        return Err(usage("--seed goes with --arrivals poisson".to_owned()));
    }
    if cli.arrivals == Some(ArrivalsArg::Poisson) && cli.scenario == Some(Scenario::Connect) {
        return Err(usage(
            "--arrivals poisson is for the message scenarios: connect starts its connections \
             evenly"
                .to_owned(),
        ));
    }
    let mixed = cli.scenario == Some(Scenario::Mixed);
    let checkout = cli.scenario == Some(Scenario::Checkout);
    if (cli.sandbox_latency_ms.is_some() || cli.sandbox_jitter_ms.is_some()) && !cli.spawn_node {
        return Err(usage(
            "--sandbox-latency-ms and --sandbox-jitter-ms configure a spawned node \
             (--spawn-node); an existing node has its own [payments] settings"
                .to_owned(),
        ));
    }
    if cli.shops.is_some() && !checkout {
        return Err(usage("--shops goes with --scenario checkout".to_owned()));
    }
    if cli.group_size.is_some() && cli.scenario != Some(Scenario::Group) && !mixed {
        return Err(usage("--group-size goes with --scenario group".to_owned()));
    }
    if cli.mix.is_some() != mixed {
        return Err(usage(
            "--scenario mixed needs --mix, and --mix goes with --scenario mixed only".to_owned(),
        ));
    }
    if (cli.subscribers.is_some() && !mixed || cli.channels.is_some())
        && cli.scenario != Some(Scenario::Channel)
    {
        return Err(usage(
            "--subscribers and --channels go with --scenario channel".to_owned(),
        ));
    }
    match cli.scenario {
        None => {}
        Some(Scenario::Chat) if cli.clients & 1 == 1 => {
            return Err(usage(format!(
                "--clients must be even for the chat scenario (users form pairs), got {}",
                cli.clients
            )));
        }
        Some(Scenario::Chat | Scenario::Connect) => {}
        Some(Scenario::Checkout) => {
            let customers = usize::try_from(cli.clients).unwrap_or(usize::MAX);
            let shops = checkout::shop_count(
                customers,
                cli.shops.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            );
            if shops > customers {
                return Err(usage(format!(
                    "--shops {shops} is more than --clients {customers}: every shop needs a \
                     customer"
                )));
            }
            if cli.connections.is_some() {
                return Err(usage(
                    "--connections does not go with --scenario checkout: every customer and \
                     shop owner has its own connection"
                        .to_owned(),
                ));
            }
            if let Some(in_flight) = cli.in_flight
                && in_flight > checkout::IN_FLIGHT_PER_CUSTOMER_MAX as u64
            {
                return Err(usage(format!(
                    "--in-flight {in_flight}: a customer may hold at most 10 unpaid orders, so \
                     the checkout scenario keeps at most {} of one customer under way",
                    checkout::IN_FLIGHT_PER_CUSTOMER_MAX
                )));
            }
            if let (Some(rate), Some(duration)) = (cli.rate, cli.duration_secs) {
                checkout::check_capacity(rate, cli.warmup_secs + duration, shops).map_err(usage)?;
            }
        }
        Some(Scenario::Mixed) => {
            let weights = mixed::parse_mix(cli.mix.as_deref().unwrap_or("")).map_err(usage)?;
            let group_size = usize::try_from(cli.group_size.unwrap_or(10)).unwrap_or(usize::MAX);
            if !(2..=group::GROUP_SIZE_MAX).contains(&group_size) {
                return Err(usage(format!(
                    "--group-size must be between 2 and {}",
                    group::GROUP_SIZE_MAX
                )));
            }
            let clients = usize::try_from(cli.clients).unwrap_or(usize::MAX);
            let split = mixed::split(clients, weights, group_size);
            if split.chat + split.group + split.channel == 0 {
                return Err(usage("--mix leaves no sender: raise --clients".to_owned()));
            }
        }
        Some(Scenario::Channel) => {
            let Some(subscribers) = cli.subscribers else {
                return Err(usage("--scenario channel needs --subscribers N".to_owned()));
            };
            let channels = cli.channels.unwrap_or(1);
            if subscribers < channels {
                return Err(usage(format!(
                    "--subscribers {subscribers} is fewer than --channels {channels}: every \
                     channel needs a subscriber"
                )));
            }
            if cli.connections.is_some() {
                return Err(usage(
                    "--connections does not go with --scenario channel: every poster and \
                     subscriber has its own connection"
                        .to_owned(),
                ));
            }
        }
        Some(Scenario::Group) => {
            let Some(group_size) = cli.group_size else {
                return Err(usage("--scenario group needs --group-size N".to_owned()));
            };
            let sizes = match (usize::try_from(cli.clients), usize::try_from(group_size)) {
                (Ok(clients), Ok(group_size)) => group::check_sizes(clients, group_size),
                _ => Err("--clients or --group-size is too large".to_owned()),
            };
            sizes.map_err(usage)?;
        }
    }
    Ok(())
}

/// The addresses of `--source-addrs`: a comma-separated list of loopback addresses (127.0.0.0/8
/// or ::1), each once.
fn parse_source_addrs(list: &str) -> Result<Vec<IpAddr>, String> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    for item in list.split(',').map(str::trim) {
        let addr: IpAddr = item.parse().map_err(|_| {
            format!("--source-addrs: `{item}` is not an IP address (expected e.g. 127.0.0.2)")
        })?;
        if !addr.is_loopback() {
            return Err(format!(
                "--source-addrs: {addr} is not a loopback address (127.0.0.0/8 or ::1): the \
                 generator only drives a node on this machine"
            ));
        }
        if addrs.contains(&addr) {
            return Err(format!("--source-addrs: {addr} is given twice"));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

fn main() {
    let cli = Cli::parse();
    if let Some(Command::Compare { a, b, json }) = &cli.command {
        if let Err(e) = run_compare(a, b, *json) {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
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

fn run_compare(a: &std::path::Path, b: &std::path::Path, json: bool) -> Result<()> {
    let comparison = compare::compare_files(a, b)?;
    if json {
        let text = serde_json::to_string_pretty(&comparison).context("encode the comparison")?;
        println!("{text}");
    } else {
        print!(
            "{}",
            comparison.table(&a.display().to_string(), &b.display().to_string())
        );
    }
    Ok(())
}

fn unix_now() -> Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("read the clock")?
        .as_secs())
}

async fn run(cli: Cli) -> Result<()> {
    // clap requires these when there is no subcommand, and a subcommand never gets here.
    let (Some(scenario), Some(duration_secs), Some(json_path)) =
        (cli.scenario, cli.duration_secs, cli.json.clone())
    else {
        bail!("--scenario, --duration-secs and --json are required");
    };
    piazza_client::install_crypto_provider();
    let channels = match scenario {
        Scenario::Channel => {
            Some(usize::try_from(cli.channels.unwrap_or(1)).context("--channels")?)
        }
        _ => None,
    };
    let subscribers = match (scenario, cli.subscribers) {
        (Scenario::Channel, Some(n)) => Some(usize::try_from(n).context("--subscribers")?),
        _ => None,
    };
    let subscribers_mixed = match (scenario, cli.subscribers) {
        (Scenario::Mixed, Some(n)) => Some(usize::try_from(n).context("--subscribers")?),
        _ => None,
    };
    let clients = match (channels, subscribers) {
        (Some(channels), Some(subscribers)) => channels + subscribers,
        _ => usize::try_from(cli.clients).context("--clients")?,
    };
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
        let mut node_env: Vec<(&str, String)> = Vec::new();
        if let Some(ms) = cli.sandbox_latency_ms {
            node_env.push(("PIAZZA__PAYMENTS__SANDBOX_LATENCY_MS", ms.to_string()));
        }
        if let Some(ms) = cli.sandbox_jitter_ms {
            node_env.push(("PIAZZA__PAYMENTS__SANDBOX_JITTER_MS", ms.to_string()));
        }
        let spawned = SpawnedNode::spawn(&bin, &node_env)?;
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
    let mut target = target;
    if let Some(list) = &cli.source_addrs {
        target.source_addrs = parse_source_addrs(list).map_err(|e| anyhow::anyhow!(e))?;
    }
    let node_pid = match &source {
        NodeSource::Spawned(node) => Some(node.pid()),
        NodeSource::External => None,
    };

    let arrivals = match cli.arrivals {
        Some(ArrivalsArg::Poisson) => pacing::Arrivals::Poisson {
            seed: cli.seed.unwrap_or(pacing::DEFAULT_SEED),
        },
        Some(ArrivalsArg::Constant) | None => pacing::Arrivals::Constant,
    };
    let params = TrafficParams {
        rate: cli.rate,
        arrivals,
        progress: progress::wanted(cli.quiet),
        warmup: Duration::from_secs(cli.warmup_secs),
        duration: Duration::from_secs(duration_secs),
        message_bytes,
        node_pid,
        ticks_per_s,
        track_fanout: matches!(scenario, Scenario::Channel | Scenario::Mixed),
        closed_in_flight: usize::try_from(cli.in_flight.unwrap_or(1)).context("--in-flight")?,
    };
    // Unique per run (milliseconds, base 36), so reruns against one node do not mix.
    let tag = run_tag()?;
    let group_size = match (scenario, cli.group_size) {
        (_, Some(size)) => Some(usize::try_from(size).context("--group-size")?),
        (Scenario::Mixed, None) => Some(10),
        (_, None) => None,
    };
    let admin = match &source {
        NodeSource::Spawned(node) => node.admin_addr(),
        NodeSource::External => None,
    };
    let outcome = async {
        let members = match (scenario, group_size) {
            (Scenario::Chat, _) => chat::setup(clients, &tag, &target).await?,
            (Scenario::Group, Some(size)) => group::setup(clients, size, &tag, &target).await?,
            (Scenario::Group, None) => bail!("--scenario group needs --group-size"),
            (Scenario::Mixed, _) => {
                let weights = mixed::parse_mix(cli.mix.as_deref().unwrap_or(""))
                    .map_err(|e| anyhow::anyhow!(e))?;
                let size = group_size.unwrap_or(10);
                let split = mixed::split(clients, weights, size);
                let subscribers = subscribers_mixed.unwrap_or(10 * split.channel);
                mixed::setup(split, size, subscribers, &tag, &target).await?
            }
            (Scenario::Channel, _) => match (subscribers, channels) {
                (Some(subscribers), Some(channels)) => {
                    channel::setup(subscribers, channels, &tag, &target).await?
                }
                _ => bail!("--scenario channel needs --subscribers"),
            },
            (Scenario::Connect, _) => {
                let connect_params = ConnectParams {
                    clients,
                    rate: cli.rate,
                    hold: params.duration,
                    node_pid,
                    admin,
                    ticks_per_s,
                    run_tag: tag.clone(),
                };
                let storm = connect::run(&connect_params, &target).await?;
                let mut traffic = TrafficOutcome::without_messages(storm.cpu, storm.reconnects)?;
                traffic.errors = storm.errors.clone();
                return Ok((traffic, Some(storm), clients, None));
            }
            (Scenario::Checkout, _) => {
                let shops = checkout::shop_count(
                    clients,
                    cli.shops
                        .map(usize::try_from)
                        .transpose()
                        .context("--shops")?,
                );
                let setup = checkout::setup(clients, shops, &tag, &target).await?;
                let users = setup.users();
                let checkout_params = checkout::CheckoutParams {
                    rate: cli.rate,
                    arrivals,
                    progress: params.progress,
                    in_flight: params.closed_in_flight,
                    warmup: params.warmup,
                    duration: params.duration,
                    paid_wait: checkout::paid_wait(cli.sandbox_latency_ms, cli.sandbox_jitter_ms),
                    node_pid,
                    ticks_per_s,
                };
                let (traffic, summary) = checkout::run(&checkout_params, setup).await?;
                return Ok((traffic, None, users, Some(summary)));
            }
        };
        let users = members.len();
        Ok((traffic::run(&params, members).await?, None, users, None))
    }
    .await;

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
    // Every user has its own connection; the mixed scenario's count is known after set-up.
    let (outcome, storm, clients, checkout_summary) = outcome?;

    let duration_s = params.duration.as_secs_f64();
    // A connection storm has no warmup: its window is the hold after the storm.
    let warmup_s = if storm.is_some() {
        0.0
    } else {
        params.warmup.as_secs_f64()
    };
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        scenario: scenario.name(),
        started_at,
        mode: if cli.rate.is_some() { "open" } else { "closed" },
        node: if cli.spawn_node {
            "spawned"
        } else {
            "external"
        },
        clients,
        connections: clients,
        group_size,
        channels,
        subscribers,
        message_bytes: if checkout_summary.is_some() {
            0
        } else {
            message_bytes
        },
        shops: checkout_summary.as_ref().map(|c| c.shops),
        sandbox_latency_ms: cli.sandbox_latency_ms,
        sandbox_jitter_ms: cli.sandbox_jitter_ms,
        duration_s,
        warmup_s,
        drain_s: (outcome.drain.as_secs_f64() * 1000.0).round() / 1000.0,
        rate_target_per_s: cli.rate,
        arrivals: match (cli.rate, storm.is_some(), arrivals) {
            (None, _, _) => None,
            (Some(_), true, _) | (Some(_), false, pacing::Arrivals::Constant) => Some("constant"),
            (Some(_), false, pacing::Arrivals::Poisson { .. }) => Some("poisson"),
        },
        seed: match arrivals {
            pacing::Arrivals::Poisson { seed } => Some(seed),
            pacing::Arrivals::Constant => None,
        },
        sent: outcome.attempts,
        connect_attempts: storm.as_ref().map(|s| s.attempts),
        connected: storm.as_ref().map(|s| s.connected),
        handshakes_per_s: storm.as_ref().and_then(ConnectOutcome::handshakes_per_s),
        handshake_us: storm.as_ref().map(|s| s.handshake.percentiles()),
        connect_s: storm.as_ref().map(ConnectOutcome::connect_s),
        node_cpu_connect_s: storm.as_ref().and_then(|s| s.node_cpu_storm_s),
        idle_connections: storm.as_ref().map(|s| s.idle_connections),
        idle_connections_node: storm.as_ref().and_then(|s| s.idle_connections_node),
        node_rss_before_bytes: storm.as_ref().and_then(|s| s.rss_before),
        node_rss_after_bytes: storm.as_ref().and_then(|s| s.rss_after),
        node_rss_per_connection_bytes: storm
            .as_ref()
            .and_then(ConnectOutcome::rss_per_connection_bytes),
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
        fanout_complete_us: outcome
            .fanout_complete
            .as_ref()
            .map(LatencyHist::percentiles),
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
        checkout: checkout_summary,
    };
    let json = serde_json::to_string_pretty(&report).context("encode the report")?;
    std::fs::write(&json_path, format!("{json}\n"))
        .with_context(|| format!("write {}", json_path.display()))?;
    print!("{}", report.summary());
    println!("report: {}", json_path.display());
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
    fn unknown_scenarios_list_the_available_ones() {
        let error = Cli::try_parse_from([
            "piazza-loadtest",
            "--scenario",
            "video",
            "--spawn-node",
            "--max",
            "--duration-secs",
            "1",
            "--json",
            "r.json",
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("possible values: chat, group"),
            "{error}"
        );
    }

    /// A spawned-node, closed-loop run of `scenario` with `extra` options, parsed by clap.
    fn parse_run(scenario: &str, extra: &str) -> Cli {
        let mut args = vec![
            "piazza-loadtest",
            "--scenario",
            scenario,
            "--spawn-node",
            "--max",
            "--duration-secs",
            "1",
            "--json",
            "r.json",
        ];
        args.extend(extra.split_whitespace());
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn groups_need_a_size_that_divides_the_clients() {
        let group = |extra: &str| validate(&parse_run("group", extra));
        assert!(group("--clients 20 --group-size 5").is_ok());
        let missing = group("").unwrap_err();
        assert!(missing.to_string().contains("--group-size"), "{missing}");
        let partial = group("--clients 21 --group-size 5").unwrap_err();
        assert!(partial.to_string().contains("not a multiple"), "{partial}");
        assert!(group("--clients 2004 --group-size 1002").is_err());
        let chat = validate(&parse_run("chat", "--group-size 5")).unwrap_err();
        assert!(
            chat.to_string().contains("goes with --scenario group"),
            "{chat}"
        );
    }

    #[test]
    fn channels_need_subscribers_and_in_flight_needs_max() {
        let channel = |extra: &str| validate(&parse_run("channel", extra));
        assert!(channel("--subscribers 1000").is_ok());
        assert!(channel("--subscribers 10 --channels 3 --in-flight 8").is_ok());
        let missing = channel("").unwrap_err();
        assert!(missing.to_string().contains("--subscribers"), "{missing}");
        let few = channel("--subscribers 2 --channels 3").unwrap_err();
        assert!(few.to_string().contains("fewer than"), "{few}");
        let chat = validate(&parse_run("chat", "--subscribers 5")).unwrap_err();
        assert!(chat.to_string().contains("--scenario channel"), "{chat}");
        let open = Cli::try_parse_from([
            "piazza-loadtest",
            "--scenario",
            "channel",
            "--subscribers",
            "5",
            "--spawn-node",
            "--rate",
            "10",
            "--in-flight",
            "4",
            "--duration-secs",
            "1",
            "--json",
            "r.json",
        ]);
        assert!(open.is_err(), "--in-flight is for the closed loop");
    }

    #[test]
    fn mixed_needs_a_mix_that_leaves_senders() {
        let mixed = |extra: &str| validate(&parse_run("mixed", extra));
        assert!(mixed("--mix chat=70,group=20,channel=10 --clients 100").is_ok());
        assert!(mixed("--mix chat=1 --clients 2 --group-size 4 --subscribers 5").is_ok());
        let missing = mixed("").unwrap_err();
        assert!(missing.to_string().contains("--mix"), "{missing}");
        assert!(mixed("--mix video=1").is_err());
        assert!(mixed("--mix group=1 --clients 4 --group-size 5").is_err());
        let chat = validate(&parse_run("chat", "--mix chat=1")).unwrap_err();
        assert!(chat.to_string().contains("--mix"), "{chat}");
        assert!(mixed("--mix chat=1 --channels 2").is_err());
    }

    #[test]
    fn checkout_sizes_its_shops_and_keeps_within_the_nodes_order_limits() {
        let checkout = |extra: &str| validate(&parse_run("checkout", extra));
        assert!(checkout("").is_ok());
        assert!(checkout("--clients 1000 --shops 10 --in-flight 8").is_ok());
        let many = checkout("--clients 4 --shops 5").unwrap_err();
        assert!(many.to_string().contains("every shop needs"), "{many}");
        let deep = checkout("--in-flight 9").unwrap_err();
        assert!(deep.to_string().contains("10 unpaid orders"), "{deep}");
        assert!(checkout("--clients 20 --connections 20").is_err());
        let shops = validate(&parse_run("chat", "--shops 2")).unwrap_err();
        assert!(shops.to_string().contains("--scenario checkout"), "{shops}");
        // Open loop: 25,000/s for 1 s + 1 s warmup is 50,000 orders, fine in one shop; 60,000/s
        // is not.
        let open = |rate: &str, extra: &str| {
            let mut args = vec![
                "piazza-loadtest",
                "--scenario",
                "checkout",
                "--spawn-node",
                "--rate",
                rate,
                "--duration-secs",
                "1",
                "--json",
                "r.json",
            ];
            args.extend(extra.split_whitespace());
            validate(&Cli::try_parse_from(args).unwrap())
        };
        assert!(open("25000", "").is_ok());
        let full = open("60000", "").unwrap_err();
        assert!(full.to_string().contains("--shops 2"), "{full}");
        assert!(open("60000", "--clients 200 --shops 2").is_ok());
        // The sandbox knobs need a spawned node.
        let sandbox = parse_run("checkout", "--sandbox-latency-ms 0 --sandbox-jitter-ms 0");
        assert_eq!(
            (sandbox.sandbox_latency_ms, sandbox.sandbox_jitter_ms),
            (Some(0), Some(0))
        );
        let external = Cli::try_parse_from([
            "piazza-loadtest",
            "--scenario",
            "checkout",
            "--server",
            "127.0.0.1:4433",
            "--ca",
            "ca.pem",
            "--node-data-dir",
            "d",
            "--max",
            "--duration-secs",
            "1",
            "--json",
            "r.json",
            "--sandbox-latency-ms",
            "0",
        ]);
        let external = validate(&external.unwrap()).unwrap_err();
        assert!(external.to_string().contains("--spawn-node"), "{external}");
    }

    #[test]
    fn chat_needs_pairs_and_one_connection_per_user() {
        let chat = |extra: &str| validate(&parse_run("chat", extra));
        assert!(chat("").is_ok());
        assert!(chat("--clients 50 --connections 50").is_ok());
        let odd = chat("--clients 5").unwrap_err();
        assert!(odd.to_string().contains("must be even"), "{odd}");
        let shared = chat("--clients 4 --connections 2").unwrap_err();
        assert!(shared.to_string().contains("--connections 2"), "{shared}");
    }

    #[test]
    fn arrivals_go_with_the_open_loop_and_seeds_with_poisson() {
        let open = |extra: &str| {
            let mut args = vec![
                "piazza-loadtest",
                "--spawn-node",
                "--duration-secs",
                "1",
                "--json",
                "r.json",
            ];
            args.extend(extra.split_whitespace());
            Cli::try_parse_from(args)
        };
        let poisson = open("--scenario chat --rate 100 --arrivals poisson --seed 9").unwrap();
        assert!(validate(&poisson).is_ok());
        assert_eq!(
            (poisson.arrivals, poisson.seed),
            (Some(ArrivalsArg::Poisson), Some(9))
        );
        assert!(validate(&open("--scenario chat --rate 100 --arrivals constant").unwrap()).is_ok());
        let closed = validate(&open("--scenario chat --max --arrivals poisson").unwrap());
        assert!(
            closed
                .unwrap_err()
                .to_string()
                .contains("--arrivals goes with --rate")
        );
        assert!(open("--scenario chat --rate 10 --seed 9").is_err());
        let seed =
            validate(&open("--scenario chat --rate 10 --arrivals constant --seed 9").unwrap());
        assert!(seed.unwrap_err().to_string().contains("--seed goes with"));
        let storm = validate(&open("--scenario connect --rate 10 --arrivals poisson").unwrap());
        assert!(storm.unwrap_err().to_string().contains("connect"));
        assert!(parse_run("chat", "--quiet").quiet);
    }

    #[test]
    fn source_addresses_must_be_loopback_and_distinct() {
        let parsed = parse_source_addrs("127.0.0.1, 127.0.0.2,::1").unwrap();
        assert_eq!(parsed.len(), 3);
        assert!(parsed.iter().all(IpAddr::is_loopback));
        let remote = parse_source_addrs("127.0.0.1,10.0.0.1").unwrap_err();
        assert!(remote.contains("10.0.0.1 is not a loopback"), "{remote}");
        assert!(
            parse_source_addrs("127.0.0.1,nope")
                .unwrap_err()
                .contains("`nope`")
        );
        assert!(parse_source_addrs("").is_err());
        assert!(
            parse_source_addrs("127.0.0.2,127.0.0.2")
                .unwrap_err()
                .contains("twice")
        );
        let bad = validate(&parse_run("chat", "--source-addrs 192.168.1.1")).unwrap_err();
        assert!(bad.to_string().contains("not a loopback"), "{bad}");
        assert!(validate(&parse_run("connect", "--source-addrs 127.0.0.1,127.0.0.2")).is_ok());
    }

    #[test]
    fn compare_takes_two_reports_and_no_run_options() {
        let cli = Cli::try_parse_from(["piazza-loadtest", "compare", "a.json", "b.json"]).unwrap();
        match cli.command {
            Some(Command::Compare { a, b, json }) => {
                assert_eq!((a, b, json), ("a.json".into(), "b.json".into(), false));
            }
            None => panic!("compare was not parsed"),
        }
        let json =
            Cli::try_parse_from(["piazza-loadtest", "compare", "a.json", "b.json", "--json"]);
        assert!(matches!(
            json.unwrap().command,
            Some(Command::Compare { json: true, .. })
        ));
        assert!(Cli::try_parse_from(["piazza-loadtest", "compare", "a.json"]).is_err());
        assert!(
            Cli::try_parse_from([
                "piazza-loadtest",
                "--scenario",
                "chat",
                "compare",
                "a.json",
                "b.json"
            ])
            .is_err()
        );
        // Without a subcommand the run options are still required.
        assert!(Cli::try_parse_from(["piazza-loadtest"]).is_err());
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
