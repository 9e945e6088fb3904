//! The JSON report (schema in `loadtest/README.md`) and its human summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checkout::CheckoutSummary;
use crate::hist::Percentiles;
use crate::node::NodeCounters;

/// One run's report. Field names are a contract (see `ARCHITECTURE.md`); add, do not rename.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `piazza-loadtest`'s version.
    pub(crate) version: &'static str,
    /// The scenario run (`chat`, `group`, `channel`, `mixed`, `connect`, `checkout`).
    pub(crate) scenario: &'static str,
    /// Unix seconds when the run started.
    pub(crate) started_at: u64,
    /// `open` (`--rate`) or `closed` (`--max`).
    pub(crate) mode: &'static str,
    /// `spawned` (`--spawn-node`) or `external` (`--server`).
    pub(crate) node: &'static str,
    pub(crate) clients: usize,
    pub(crate) connections: usize,
    /// Members per group (`group` scenario), `null` otherwise.
    pub(crate) group_size: Option<usize>,
    /// Channels (= posters) in the `channel` scenario, `null` otherwise.
    pub(crate) channels: Option<usize>,
    /// Subscribers in the `channel` scenario (`clients` = `channels` + `subscribers`).
    pub(crate) subscribers: Option<usize>,
    /// Text size of each message (0 for `checkout`, which sends none).
    pub(crate) message_bytes: usize,
    /// `checkout` only (`null` otherwise): shops, each with its own owner connection.
    pub(crate) shops: Option<usize>,
    /// `--sandbox-latency-ms` given to the spawned node (`null`: the node's default, 20 ms).
    pub(crate) sandbox_latency_ms: Option<u64>,
    /// `--sandbox-jitter-ms` given to the spawned node (`null`: the node's default, 10 ms).
    pub(crate) sandbox_jitter_ms: Option<u64>,
    /// The measured window in seconds (after the warmup).
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    /// How long the run waited after the send phase for deliveries still on their way.
    pub(crate) drain_s: f64,
    /// `--rate`, or `null` with `--max`.
    pub(crate) rate_target_per_s: Option<u64>,
    /// How the open-loop instants were spread: `constant` or `poisson`; `null` with `--max`.
    pub(crate) arrivals: Option<&'static str>,
    /// The PRNG seed of `--arrivals poisson`; left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<u64>,
    /// Send attempts over the whole run (warmup included).
    pub(crate) sent: u64,
    /// `connect` only (`null` otherwise), like every field down to `node_rss_per_connection_bytes`:
    /// connections attempted in the storm.
    pub(crate) connect_attempts: Option<u64>,
    /// Connections established (TLS handshake and `Hello` done).
    pub(crate) connected: Option<u64>,
    /// Connections established per second of storm.
    pub(crate) handshakes_per_s: Option<f64>,
    /// Intended start → `Welcome`, per established connection.
    pub(crate) handshake_us: Option<Percentiles>,
    /// Wall time of the storm: first start to last connection established.
    pub(crate) connect_s: Option<f64>,
    /// Node CPU time during the storm.
    pub(crate) node_cpu_connect_s: Option<f64>,
    /// Connections still on their first connection at the end of the hold (the clients' view).
    pub(crate) idle_connections: Option<u64>,
    /// Connections open on the node at the end of the hold (its `piazza_connections_active`).
    pub(crate) idle_connections_node: Option<u64>,
    /// Node resident memory (`VmRSS`) before the storm and at the end of the hold.
    pub(crate) node_rss_before_bytes: Option<u64>,
    pub(crate) node_rss_after_bytes: Option<u64>,
    /// `(node_rss_after_bytes - node_rss_before_bytes) / idle_connections`.
    pub(crate) node_rss_per_connection_bytes: Option<f64>,
    /// Sends acknowledged (durably stored).
    pub(crate) acked: u64,
    /// Distinct messages delivered to their recipient.
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    /// Delivered with another conversation seq than the ack named.
    pub(crate) seq_mismatch: u64,
    /// Delivered although the send reported an error.
    pub(crate) delivered_unacked: u64,
    /// Scheduled messages never sent because the generator fell too far behind.
    pub(crate) unsent: u64,
    /// Failed sends.
    pub(crate) errors: u64,
    /// Failed sends by error label (the node's `ErrorCode` label, or the SDK's reason).
    pub(crate) errors_by_kind: BTreeMap<String, u64>,
    /// Deliveries received within the measured window, per second.
    pub(crate) throughput_per_s: f64,
    /// Acks of messages due within the measured window, per second.
    pub(crate) acked_per_s: f64,
    /// Intended send instant → delivered to the recipient (measured messages).
    pub(crate) latency_us: Percentiles,
    /// Intended send instant → durable ack at the sender (measured messages).
    pub(crate) ack_latency_us: Percentiles,
    /// `channel` only (`null` otherwise): intended send instant of a post → received by the last
    /// of its channel's subscribers, over the measured posts every subscriber received.
    pub(crate) fanout_complete_us: Option<Percentiles>,
    /// Intended send instant → the send actually started: the generator's own lateness.
    pub(crate) send_lag_us: Percentiles,
    /// Node CPU time (user + system) over the whole life of the spawned node.
    pub(crate) node_cpu_s: Option<f64>,
    /// Node CPU time within the measured window.
    pub(crate) node_cpu_window_s: Option<f64>,
    /// Peak resident memory (VmHWM) of the spawned node.
    pub(crate) node_peak_rss_bytes: Option<u64>,
    /// Warning and error lines the spawned node logged.
    pub(crate) node_log_warnings: Option<u64>,
    pub(crate) node_log_errors: Option<u64>,
    /// Counters from the node's `/metrics` after the run (spawned node only).
    pub(crate) node_metrics: Option<NodeCounters>,
    /// This process's CPU time within the measured window.
    pub(crate) generator_cpu_window_s: Option<f64>,
    pub(crate) generator_peak_rss_bytes: Option<u64>,
    /// Busy CPU time of the whole machine (all CPUs) within the measured window.
    pub(crate) machine_cpu_window_s: Option<f64>,
    /// The part of it spent neither by this process nor by the spawned node: other work on a
    /// shared machine that competed with the run (or the external node).
    pub(crate) other_cpu_window_s: Option<f64>,
    /// Messages that were not part of the run (other senders, other formats).
    pub(crate) foreign_messages: u64,
    /// Reconnects the clients went through.
    pub(crate) reconnects: u64,
    /// CPUs this process may use.
    pub(crate) machine_cpus: usize,
    /// `checkout` only (`null` otherwise): the steps of a checkout and how checkouts ended.
    pub(crate) checkout: Option<CheckoutSummary>,
}

fn opt_us(value: Option<u64>) -> String {
    match value {
        Some(us) if us >= 10_000 => format!("{:.1} ms", us as f64 / 1000.0),
        Some(us) => format!("{us} µs"),
        None => "-".to_owned(),
    }
}

fn percentile_line(name: &str, p: &Percentiles) -> String {
    format!(
        "{name:<12} p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}  (n={})",
        opt_us(p.p50),
        opt_us(p.p90),
        opt_us(p.p99),
        opt_us(p.p999),
        opt_us(p.max),
        p.count
    )
}

impl Report {
    fn errors_line(&self) -> String {
        if self.errors_by_kind.is_empty() {
            "none".to_owned()
        } else {
            self.errors_by_kind
                .iter()
                .map(|(kind, count)| format!("{kind} {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// The lines of a `connect` run (`None` for other scenarios).
    fn connect_summary(&self) -> Option<String> {
        let handshake = self.handshake_us.as_ref()?;
        let mut out = String::new();
        let show = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.0}{unit}"),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "connections  {} of {} established in {} s = {} handshakes/s; errors {} ({})",
            self.connected.unwrap_or(0),
            self.connect_attempts.unwrap_or(0),
            self.connect_s
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
            show(self.handshakes_per_s, ""),
            self.errors,
            self.errors_line()
        );
        let _ = writeln!(out, "{}", percentile_line("handshake", handshake));
        let node_view = self
            .idle_connections_node
            .map(|n| format!(" (node: {n} open)"))
            .unwrap_or_default();
        let mib = |b: Option<u64>| show(b.map(|b| b as f64 / (1024.0 * 1024.0)), " MiB");
        let _ = writeln!(
            out,
            "idle         {} connections after {} s{node_view}; node RSS {} -> {} = {} per \
             connection; reconnects {}",
            self.idle_connections.unwrap_or(0),
            self.duration_s,
            mib(self.node_rss_before_bytes),
            mib(self.node_rss_after_bytes),
            show(self.node_rss_per_connection_bytes, " B"),
            self.reconnects
        );
        if let (Some(cpu), Some(connected)) = (self.node_cpu_connect_s, self.connected) {
            let per = if connected > 0 {
                format!(
                    " = {:.2} ms per connection",
                    cpu * 1000.0 / connected as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(out, "node         CPU {cpu:.2} s during the storm{per}");
        }
        if let (Some(cpu), Some(peak)) = (self.node_cpu_window_s, self.node_peak_rss_bytes) {
            let _ = writeln!(
                out,
                "node         CPU {cpu:.2} s while idle; peak RSS {:.1} MiB",
                peak as f64 / (1024.0 * 1024.0)
            );
        }
        Some(out)
    }

    /// The lines of a `checkout` run (`None` for other scenarios).
    fn checkout_summary(&self) -> Option<String> {
        let checkout = self.checkout.as_ref()?;
        let mut out = String::new();
        let rate = match self.rate_target_per_s {
            Some(rate) => format!("open loop at {rate} checkouts/s"),
            None => "closed loop (--max)".to_owned(),
        };
        let sandbox = match (self.sandbox_latency_ms, self.sandbox_jitter_ms) {
            (None, None) => "node default".to_owned(),
            (latency, jitter) => format!(
                "latency {} ms, jitter {} ms",
                latency.map_or_else(|| "default".to_owned(), |v| v.to_string()),
                jitter.map_or_else(|| "default".to_owned(), |v| v.to_string())
            ),
        };
        let _ = writeln!(
            out,
            "piazza-loadtest checkout: {} customers in {} shops ({} connections), {rate}, {} s \
             measured after {} s warmup, {} node, payment sandbox {sandbox}",
            checkout.customers,
            checkout.shops,
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.node
        );
        let _ = writeln!(
            out,
            "throughput   {:.0} checkouts paid/s ({:.0} placed/s)",
            self.throughput_per_s, self.acked_per_s
        );
        let _ = writeln!(
            out,
            "checkouts    started {}  placed {}  paid {} ({} only found by reading the order)  \
             lost {}  unsent {} ({} for a full shop)  cancelled {}  stuck {}",
            self.sent,
            self.acked,
            self.delivered,
            checkout.paid_unnotified,
            self.lost,
            self.unsent,
            checkout.shop_full,
            checkout.cancelled,
            checkout.stuck
        );
        let _ = writeln!(out, "errors       {} ({})", self.errors, self.errors_line());
        let _ = writeln!(out, "{}", percentile_line("placed", &checkout.placed_us));
        let _ = writeln!(
            out,
            "{}",
            percentile_line("accepted", &checkout.accepted_us)
        );
        let _ = writeln!(
            out,
            "{}",
            percentile_line("pay asked", &checkout.payment_requested_us)
        );
        let _ = writeln!(out, "{}", percentile_line("paid", &self.latency_us));
        let _ = writeln!(
            out,
            "{}",
            percentile_line("asked→paid", &checkout.requested_to_paid_us)
        );
        let _ = writeln!(out, "{}", percentile_line("start lag", &self.send_lag_us));
        Some(out)
    }

    /// The node, generator and machine lines every message and checkout run ends with.
    fn resources_summary(&self, out: &mut String) {
        if let Some(cpu) = self.node_cpu_s {
            let window = self
                .node_cpu_window_s
                .map(|w| {
                    format!(
                        ", {w:.2} s in the window = {:.2} cores",
                        w / self.duration_s
                    )
                })
                .unwrap_or_default();
            let rss = self
                .node_peak_rss_bytes
                .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
                .unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(out, "node         CPU {cpu:.2} s{window}; peak RSS {rss}");
        }
        if let Some(metrics) = &self.node_metrics {
            let show = |v: Option<f64>, digits: usize| match v {
                Some(v) => format!("{v:.digits$}"),
                None => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "node metrics commits {}  records/commit {}  commit mean {} ms  send mean {} ms  \
                 resyncs {}",
                show(Some(metrics.storage_commits_total), 0),
                show(metrics.records_per_commit, 1),
                show(metrics.commit_mean_ms, 2),
                show(metrics.send_mean_ms, 2),
                show(Some(metrics.resyncs_total), 0),
            );
        }
        if let Some(cpu) = self.generator_cpu_window_s {
            let _ = writeln!(
                out,
                "generator    CPU {cpu:.2} s in the window = {:.2} cores (same machine, {} CPUs)",
                cpu / self.duration_s,
                self.machine_cpus
            );
        }
        if let Some(other) = self.other_cpu_window_s {
            let who = if self.node == "spawned" {
                "other processes"
            } else {
                "other processes (the node included)"
            };
            let _ = writeln!(
                out,
                "machine      {who}: CPU {other:.2} s in the window = {:.2} cores",
                other / self.duration_s
            );
        }
    }

    /// A few lines for a person.
    pub(crate) fn summary(&self) -> String {
        let mut out = String::new();
        let rate = match self.rate_target_per_s {
            Some(rate) => format!("open loop at {rate}/s"),
            None => "closed loop (--max)".to_owned(),
        };
        let groups = match (self.group_size, self.channels, self.subscribers) {
            (Some(size), _, _) => format!(" in groups of {size}"),
            (None, Some(channels), Some(subscribers)) => {
                format!(" ({channels} posting, {subscribers} subscribed)")
            }
            _ => String::new(),
        };
        if let Some(connect) = self.connect_summary() {
            let rate = match self.rate_target_per_s {
                Some(rate) => format!("{rate} connections/s"),
                None => "as fast as possible (--max)".to_owned(),
            };
            let _ = writeln!(
                out,
                "piazza-loadtest connect: {} connections, {rate}, then held idle {} s, {} node",
                self.clients, self.duration_s, self.node
            );
            out.push_str(&connect);
            return out;
        }
        if let Some(checkout) = self.checkout_summary() {
            out.push_str(&checkout);
            self.resources_summary(&mut out);
            return out;
        }
        let _ = writeln!(
            out,
            "piazza-loadtest {}: {} clients{groups} on {} connections, {rate}, {} s measured \
             after {} s warmup, {} B messages, {} node",
            self.scenario,
            self.clients,
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.message_bytes,
            self.node
        );
        let _ = writeln!(
            out,
            "throughput   {:.0} deliveries/s ({:.0} acks/s)",
            self.throughput_per_s, self.acked_per_s
        );
        let _ = writeln!(
            out,
            "messages     sent {}  acked {}  delivered {}  lost {}  duplicates {}  out of order {}  \
             seq mismatch {}  unsent {}",
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicates,
            self.out_of_order,
            self.seq_mismatch,
            self.unsent
        );
        let _ = writeln!(out, "errors       {} ({})", self.errors, self.errors_line());
        let _ = writeln!(out, "{}", percentile_line("latency", &self.latency_us));
        let _ = writeln!(
            out,
            "{}",
            percentile_line("ack latency", &self.ack_latency_us)
        );
        let _ = writeln!(out, "{}", percentile_line("send lag", &self.send_lag_us));
        if let Some(fanout) = &self.fanout_complete_us {
            let _ = writeln!(out, "{}", percentile_line("to all subs", fanout));
        }
        self.resources_summary(&mut out);
        out
    }
}
