//! The `connect` scenario: a connection storm, then idle connections.
//!
//! 1. **Storm.** `clients` users connect, each its own QUIC connection (its own UDP socket) with a
//!    TLS 1.3 handshake and an authenticated `Hello` (the SDK's `Client::connect` with
//!    `EventStart::Off`, so nothing but the handshake and `Hello`/`Welcome`). At most
//!    [`STORM_CONCURRENCY`] are under way at once; with `--rate R` connection `i` is started at
//!    `i / R` s (open loop: a late start counts in the latency), with `--max` as soon as the bound
//!    allows. Tokens are minted before the storm, so signing them is not measured.
//! 2. **Hold.** Every connection then stays open and idle for `duration` (the SDK keeps it alive);
//!    at the end the node's resident memory is read again and each client is asked whether it is
//!    still on its first connection.
//!
//! Measured: handshakes per second (connections established / storm time), the latency of each
//! (intended start → `Welcome`), the node's CPU time during the storm, and the node's RSS growth
//! from before the storm to the end of the hold, per connection still open.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use piazza_client::{Client, ClientEvent, EventStart};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::hist::LatencyHist;
use crate::node::{Target, cpu_seconds, fetch_node_counters, rss_bytes};
use crate::pacing;
use crate::traffic::{self, CpuWindow, error_label};

/// Connections being set up at once. High enough that the node, not the generator's waiting, is
/// what limits the storm; low enough that 10,000 simultaneous handshakes do not all time out on
/// two cores.
pub(crate) const STORM_CONCURRENCY: usize = 64;

/// Longest one connection may take (the SDK's own connect has its own, shorter deadlines).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Lead time between minting the tokens and the first connection.
const START_LEAD: Duration = Duration::from_millis(50);

/// Events drained from one client at the end of the hold; it has seen none but reconnects.
const EVENTS_DRAIN_MAX: usize = 64;

/// What the scenario is asked to do.
#[derive(Clone, Debug)]
pub(crate) struct ConnectParams {
    pub(crate) clients: usize,
    /// Connections started per second; `None`: as fast as the concurrency bound allows.
    pub(crate) rate: Option<u64>,
    /// How long the connections are held idle after the storm.
    pub(crate) hold: Duration,
    pub(crate) node_pid: Option<u32>,
    /// The node's admin address, to read its connection gauge at the end of the hold.
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) ticks_per_s: u64,
    pub(crate) run_tag: String,
}

/// What the scenario measured.
#[derive(Debug)]
pub(crate) struct ConnectOutcome {
    /// Connections attempted.
    pub(crate) attempts: u64,
    /// Connections established (handshake and `Hello` done).
    pub(crate) connected: u64,
    /// Failed connections by label.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Intended start → `Welcome`, per established connection.
    pub(crate) handshake: LatencyHist,
    /// From the first start to the last connection established.
    pub(crate) storm: Duration,
    /// Node CPU seconds during the storm.
    pub(crate) node_cpu_storm_s: Option<f64>,
    /// Connections still on their first connection at the end of the hold.
    pub(crate) idle_connections: u64,
    /// Connections the node counted as open at the end of the hold (`piazza_connections_active`).
    pub(crate) idle_connections_node: Option<u64>,
    /// Reconnects the clients went through during the hold.
    pub(crate) reconnects: u64,
    /// Node RSS before the storm and at the end of the hold.
    pub(crate) rss_before: Option<u64>,
    pub(crate) rss_after: Option<u64>,
    /// CPU time spent during the hold.
    pub(crate) cpu: CpuWindow,
}

impl ConnectOutcome {
    /// The storm's wall time in seconds, to the millisecond.
    pub(crate) fn connect_s(&self) -> f64 {
        (self.storm.as_secs_f64() * 1000.0).round() / 1000.0
    }

    /// Established connections per second of storm.
    pub(crate) fn handshakes_per_s(&self) -> Option<f64> {
        let secs = self.storm.as_secs_f64();
        (secs > 0.0).then(|| self.connected as f64 / secs)
    }

    /// Node RSS growth over the run per connection still open.
    pub(crate) fn rss_per_connection_bytes(&self) -> Option<f64> {
        rss_per_connection(self.rss_before, self.rss_after, self.idle_connections)
    }
}

/// `(after - before) / connections`; `None` without both readings or without connections. A
/// shrinking RSS gives a negative figure, which is reported as it is.
pub(crate) fn rss_per_connection(
    before: Option<u64>,
    after: Option<u64>,
    connections: u64,
) -> Option<f64> {
    let (before, after) = (before?, after?);
    (connections > 0).then(|| (after as f64 - before as f64) / connections as f64)
}

/// One finished connection attempt.
struct Attempt {
    intended: Instant,
    done: Instant,
    result: Result<Client, String>,
}

/// Runs the storm and the hold against `target`.
pub(crate) async fn run(params: &ConnectParams, target: &Target) -> Result<ConnectOutcome> {
    let users = traffic::user_names(&params.run_tag, params.clients)?;
    let mut configs = Vec::with_capacity(users.len());
    for (index, user) in users.iter().enumerate() {
        let mut config = traffic::client_config(target, user, index)?;
        config.events = EventStart::Off;
        configs.push(config);
    }
    // Only a node this run spawned has a known process: `rss_bytes(None)` would be our own.
    let node_rss = || params.node_pid.and_then(|pid| rss_bytes(Some(pid)));
    let rss_before = node_rss();
    let node_cpu = || {
        params
            .node_pid
            .and_then(|pid| cpu_seconds(Some(pid), params.ticks_per_s))
    };
    let cpu_before = node_cpu();

    let t0 = Instant::now() + START_LEAD;
    let mut clients: Vec<Client> = Vec::with_capacity(users.len());
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut handshake = LatencyHist::new()?;
    let mut last_done = t0;
    let mut record = |attempt: Attempt| {
        last_done = last_done.max(attempt.done);
        match attempt.result {
            Ok(client) => {
                let ns = attempt.done.saturating_duration_since(attempt.intended);
                handshake.record_ns(u64::try_from(ns.as_nanos()).unwrap_or(u64::MAX));
                clients.push(client);
            }
            Err(label) => *errors.entry(label).or_default() += 1,
        }
    };

    let mut pending: JoinSet<Attempt> = JoinSet::new();
    let count = configs.len() as u64;
    for (index, config) in (0..count).zip(configs) {
        let due = match params.rate {
            Some(rate) => t0 + Duration::from_nanos(pacing::intended_ns(0, index, 1, rate)),
            None => t0,
        };
        // Wait for the due instant and for room under the bound, collecting finished attempts
        // meanwhile. Each turn ends the wait, passes the due instant, or collects one of the (at
        // most STORM_CONCURRENCY) attempts under way.
        loop {
            let due_now = Instant::now() >= due;
            if due_now && pending.len() < STORM_CONCURRENCY {
                break;
            }
            tokio::select! {
                () = sleep_until(due), if !due_now => {}
                Some(joined) = pending.join_next(), if !pending.is_empty() => {
                    record(joined.context("connect task")?);
                }
            }
        }
        // Closed loop: measured from the actual start; open loop: from the schedule.
        let intended = if params.rate.is_some() {
            due
        } else {
            Instant::now()
        };
        pending.spawn(async move {
            let result = match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(config)).await
            {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(e)) => Err(error_label(&e)),
                Err(_) => Err("connect_timeout".to_owned()),
            };
            Attempt {
                intended,
                done: Instant::now(),
                result,
            }
        });
    }
    // Bounded: one turn per attempt still under way, each with CONNECT_TIMEOUT.
    while let Some(joined) = pending.join_next().await {
        record(joined.context("connect task")?);
    }
    let storm = last_done.saturating_duration_since(t0);
    let node_cpu_storm_s = match (cpu_before, node_cpu()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let connected = clients.len() as u64;

    // The hold: nothing but the SDK's keep-alives.
    let hold_start = Instant::now();
    let cpu = tokio::spawn(traffic::cpu_window(
        params.node_pid,
        params.ticks_per_s,
        hold_start,
        hold_start + params.hold,
    ));
    sleep_until(hold_start + params.hold).await;
    let cpu = cpu.await.context("CPU sampling task")?;
    let rss_after = node_rss();
    let idle_connections_node = match params.admin {
        Some(admin) => match fetch_node_counters(admin).await {
            Ok(counters) => Some(counters.connections_active.max(0.0) as u64),
            Err(e) => {
                eprintln!("warning: node metrics at the end of the hold: {e:#}");
                None
            }
        },
        None => None,
    };
    let mut idle_connections = 0;
    let mut reconnects = 0;
    for client in &clients {
        let mut reconnected = false;
        for _ in 0..EVENTS_DRAIN_MAX {
            match client.try_next_event() {
                Some(ClientEvent::Reconnected { .. }) => {
                    reconnected = true;
                    reconnects += 1;
                }
                Some(_) => {}
                None => break,
            }
        }
        if client.node().is_some() && !reconnected {
            idle_connections += 1;
        }
    }

    // Close every connection, all at once (each waits briefly for the node to hear about it).
    let mut closing = JoinSet::new();
    for client in clients {
        closing.spawn(client.close());
    }
    while closing.join_next().await.is_some() {}

    Ok(ConnectOutcome {
        attempts: count,
        connected,
        errors,
        handshake,
        storm,
        node_cpu_storm_s,
        idle_connections,
        idle_connections_node,
        reconnects,
        rss_before,
        rss_after,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_growth_is_shared_by_the_open_connections() {
        assert_eq!(
            rss_per_connection(Some(10_000_000), Some(30_000_000), 1_000),
            Some(20_000.0)
        );
        assert_eq!(
            rss_per_connection(Some(30_000), Some(20_000), 10),
            Some(-1_000.0)
        );
        assert_eq!(rss_per_connection(Some(1), Some(2), 0), None);
        assert_eq!(rss_per_connection(None, Some(2), 5), None);
        assert_eq!(rss_per_connection(Some(1), None, 5), None);
    }

    #[test]
    fn handshakes_per_second_count_established_connections_over_the_storm() {
        let outcome = |connected, storm_ms| ConnectOutcome {
            attempts: 100,
            connected,
            errors: BTreeMap::new(),
            handshake: LatencyHist::new().unwrap(),
            storm: Duration::from_millis(storm_ms),
            node_cpu_storm_s: None,
            idle_connections: 0,
            idle_connections_node: None,
            reconnects: 0,
            rss_before: None,
            rss_after: None,
            cpu: CpuWindow::default(),
        };
        assert_eq!(outcome(90, 500).handshakes_per_s(), Some(180.0));
        assert_eq!(outcome(0, 0).handshakes_per_s(), None);
    }
}
