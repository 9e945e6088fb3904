//! The node under test: either one this process starts (`--spawn-node`) on a fresh temporary data
//! directory, or an existing one (`--server`). Also reads CPU time and peak memory of a process
//! from `/proc`, and a few counters from the node's Prometheus endpoint.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use piazza_node::auth::TokenAuthority;
use piazza_protocol::UserId;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a spawned node has to print its client address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node has to exit after SIGTERM before it is killed. Its own shutdown budget is 10 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines of the node's stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;

/// The settings a spawned node gets through its environment: the per-connection limiters (sends,
/// and requests of any kind) are opened wide so that the generator measures the node, not the
/// limiter (defaults: 1000 sends/s with a burst of 2000, 2000 requests/s with a burst of 4000, see
/// the node's README). `NO_COLOR` keeps its log free of terminal colour codes.
pub(crate) const SPAWNED_NODE_ENV: &[(&str, &str)] = &[
    ("PIAZZA__LIMITS__SEND_RATE_PER_S", "1000000"),
    ("PIAZZA__LIMITS__SEND_BURST", "1000000"),
    ("PIAZZA__LIMITS__REQUEST_RATE_PER_S", "1000000"),
    ("PIAZZA__LIMITS__REQUEST_BURST", "1000000"),
    ("NO_COLOR", "1"),
];

/// Tokens minted for the load test live this long: far longer than any run.
const TOKEN_TTL_S: u64 = 6 * 3600;

/// Where the clients connect and how they authenticate.
#[derive(Debug)]
pub(crate) struct Target {
    /// `127.0.0.1:PORT`.
    pub(crate) server: String,
    /// The CA that signed the node's certificate.
    pub(crate) ca_file: PathBuf,
    /// The node's token signing key.
    pub(crate) authority: TokenAuthority,
    /// Local addresses the clients send from, round-robin (`--source-addrs`); empty: the OS
    /// picks.
    pub(crate) source_addrs: Vec<std::net::IpAddr>,
}

impl Target {
    /// An existing node: its address, CA file and data directory (for the token key).
    pub(crate) fn existing(server: &str, ca_file: &Path, data_dir: &Path) -> Result<Target> {
        check_loopback(server)?;
        let key = data_dir.join("token-key.pk8");
        // `load_or_generate` would quietly create a key the node does not know.
        if !key.is_file() {
            bail!(
                "no token signing key at {}: --node-data-dir must be the node's data directory",
                key.display()
            );
        }
        if !ca_file.is_file() {
            bail!("no CA file at {}", ca_file.display());
        }
        let authority = TokenAuthority::load_or_generate(&key)
            .with_context(|| format!("load the token key {}", key.display()))?;
        Ok(Target {
            server: server.to_owned(),
            ca_file: ca_file.to_owned(),
            authority,
            source_addrs: Vec::new(),
        })
    }

    /// A token for `user`.
    pub(crate) fn token(&self, user: &UserId) -> Result<String> {
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("read the clock")?
            .as_secs();
        self.authority
            .mint(user, now_s, TOKEN_TTL_S)
            .with_context(|| format!("mint a token for {user}"))
    }
}

/// Refuses any address that is not on this machine: a load test sends its traffic to loopback
/// only (`127.0.0.0/8`, `[::1]`, `localhost`).
fn check_loopback(server: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .with_context(|| format!("resolve --server {server}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!(
            "--server {server} is not a loopback address: piazza-loadtest only loads nodes on this machine"
        );
    }
    Ok(())
}

/// A `piazza-node` process started by this one. Dropping it kills the process (SIGKILL) if it is
/// still running; [`SpawnedNode::stop`] asks it to stop first.
#[derive(Debug)]
pub(crate) struct SpawnedNode {
    child: Child,
    /// The node's data; removed when this is dropped.
    data_dir: tempfile::TempDir,
    client_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stderr: Arc<Mutex<StderrLog>>,
}

/// What the node wrote to stderr: the last lines, and how many warnings and errors.
#[derive(Debug, Default)]
struct StderrLog {
    tail: VecDeque<String>,
    warnings: u64,
    errors: u64,
}

impl StderrLog {
    fn push(&mut self, line: String) {
        let line = strip_ansi(&line);
        // tracing's format: `<timestamp>  WARN <target>: …`.
        let level = line.split_whitespace().nth(1).unwrap_or_default();
        match level {
            "WARN" => self.warnings += 1,
            "ERROR" => self.errors += 1,
            _ => {}
        }
        if self.tail.len() == STDERR_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// `line` without terminal escape sequences (`ESC [ … letter`), in case the node colours its log.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip up to and including the final letter of the sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Addresses announced on the node's stderr.
#[derive(Debug, Default)]
struct Announced {
    client: Option<SocketAddr>,
    admin: Option<SocketAddr>,
}

/// Parses `  clients (QUIC, ALPN piazza/1): 127.0.0.1:PORT`.
fn parse_client_line(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix("clients (QUIC, ALPN piazza/1):")?;
    rest.trim().parse().ok()
}

/// Parses `  admin HTTP:   http://127.0.0.1:PORT/healthz  /readyz  /metrics`.
fn parse_admin_line(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix("admin HTTP:")?.trim();
    let rest = rest.strip_prefix("http://")?;
    let addr = rest.split('/').next()?;
    addr.parse().ok()
}

impl SpawnedNode {
    /// Starts `bin` on a fresh temporary data directory, on loopback ports chosen by the kernel,
    /// with [`SPAWNED_NODE_ENV`] and then `extra_env` (configuration the run asked for, e.g. the
    /// payment sandbox's latency), and waits until it announces its client address.
    pub(crate) fn spawn(bin: &Path, extra_env: &[(&str, String)]) -> Result<SpawnedNode> {
        if !bin.is_file() {
            bail!(
                "no piazza-node binary at {} (build it with `cargo build --release -p piazza-node`, \
                 or pass --node-bin)",
                bin.display()
            );
        }
        let data_dir = tempfile::Builder::new()
            .prefix("piazza-loadtest-")
            .tempdir()
            .context("create a temporary data directory")?;
        let mut command = Command::new(bin);
        command
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in SPAWNED_NODE_ENV {
            command.env(key, value);
        }
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the node's stderr was not captured");
        };

        // A thread reads stderr until the node exits (EOF), so the pipe never fills up and blocks
        // the node. It reports the addresses once, then only keeps the tail and the counts.
        let log = Arc::new(Mutex::new(StderrLog::default()));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Announced>(1);
        let thread_log = Arc::clone(&log);
        std::thread::Builder::new()
            .name("node-stderr".into())
            .spawn(move || {
                let mut announced = Announced::default();
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if tx.is_some() {
                        if let Some(addr) = parse_client_line(&line) {
                            announced.client = Some(addr);
                        }
                        if let Some(addr) = parse_admin_line(&line) {
                            announced.admin = Some(addr);
                        }
                        // The admin line follows the client line; wait for both.
                        let complete = announced.client.is_some() && announced.admin.is_some();
                        if let Some(tx) = tx.take_if(|_| complete) {
                            let _ = tx.send(std::mem::take(&mut announced));
                        }
                    }
                    thread_log
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(line);
                }
                // EOF before both lines: report what was seen (possibly nothing).
                if let Some(tx) = tx.take() {
                    let _ = tx.send(announced);
                }
            })
            .context("start the stderr reader")?;

        let announced = rx.recv_timeout(STARTUP_TIMEOUT).unwrap_or_default();
        let mut node = SpawnedNode {
            child,
            data_dir,
            client_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: announced.admin,
            stderr: log,
        };
        match announced.client {
            Some(addr) => node.client_addr = addr,
            None => {
                let status = node.child.try_wait().ok().flatten();
                let tail = node.stderr_tail();
                return Err(anyhow!(
                    "the node did not announce its client address within {} s (exit status: \
                     {status:?}); its stderr ended with:\n{tail}",
                    STARTUP_TIMEOUT.as_secs()
                ));
            }
        }
        Ok(node)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The client address and credentials.
    pub(crate) fn target(&self) -> Result<Target> {
        Target::existing(
            &self.client_addr.to_string(),
            &self.data_dir.path().join("tls").join("ca.pem"),
            self.data_dir.path(),
        )
    }

    /// The admin HTTP address, if the node announced one.
    pub(crate) fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Warnings and errors the node logged so far.
    pub(crate) fn log_counts(&self) -> (u64, u64) {
        let log = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        (log.warnings, log.errors)
    }

    /// The last lines of the node's stderr.
    pub(crate) fn stderr_tail(&self) -> String {
        let log = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Sends SIGTERM (with the `kill` command, to this process id only) and waits for the exit;
    /// kills it if it has not exited after [`STOP_TIMEOUT`].
    pub(crate) fn stop(mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait().context("check the node")? {
            return Ok(status);
        }
        let pid = self.child.id().to_string();
        let term = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("run kill -TERM")?;
        if !term.success() {
            eprintln!("warning: kill -TERM {pid} failed ({term}); killing the node");
            let _ = self.child.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("wait for the node")? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "warning: the node did not exit within {} s of SIGTERM; killing it",
            STOP_TIMEOUT.as_secs()
        );
        self.child.kill().context("kill the node")?;
        self.child.wait().context("wait for the killed node")
    }
}

impl Drop for SpawnedNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux in practice).
pub(crate) fn clock_ticks_per_s() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// User plus system CPU time of a process in clock ticks, from the text of `/proc/<pid>/stat`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line; `after_name` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` (peak resident set) in bytes, from the text of `/proc/<pid>/status`.
fn parse_peak_rss(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmHWM:")
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`, …) in bytes.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line
        .trim_start_matches(key)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) of a process in seconds. `pid` `None`: this process.
pub(crate) fn cpu_seconds(pid: Option<u32>, ticks_per_s: u64) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let ticks = parse_cpu_ticks(&std::fs::read_to_string(path).ok()?)?;
    Some(ticks as f64 / ticks_per_s.max(1) as f64)
}

/// Peak resident memory of a process in bytes. `pid` `None`: this process.
pub(crate) fn peak_rss_bytes(pid: Option<u32>) -> Option<u64> {
    parse_peak_rss(&read_status(pid)?)
}

/// Resident memory of a process now (`VmRSS`) in bytes. `pid` `None`: this process.
pub(crate) fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    parse_status_kib(&read_status(pid)?, "VmRSS:")
}

fn read_status(pid: Option<u32>) -> Option<String> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path).ok()
}

/// Busy CPU time of the whole machine in clock ticks (all CPUs: everything but idle and I/O
/// wait), from the text of `/proc/stat`.
fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is already
    // counted in user and nice.
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    if fields.len() < 4 {
        return None;
    }
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// Busy CPU seconds of the whole machine since boot (all CPUs added up).
pub(crate) fn machine_busy_seconds(ticks_per_s: u64) -> Option<f64> {
    let ticks = parse_machine_busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(ticks as f64 / ticks_per_s.max(1) as f64)
}

/// A few of the node's own counters, read from `/metrics` after the run: they tell where time
/// went (how big the group commits were, whether sessions had to resync). A counter the node has
/// not exported reads 0: the node registers a counter on its first increment.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct NodeCounters {
    pub(crate) sends_total: f64,
    pub(crate) deliveries_total: f64,
    pub(crate) deliveries_dropped_total: f64,
    pub(crate) resyncs_total: f64,
    pub(crate) rate_limited_total: f64,
    pub(crate) storage_commits_total: f64,
    pub(crate) storage_records_total: f64,
    /// `storage_records_total / storage_commits_total`: messages per fsync.
    pub(crate) records_per_commit: Option<f64>,
    /// Mean time of one group commit, from the `piazza_storage_commit_seconds` histogram.
    pub(crate) commit_mean_ms: Option<f64>,
    /// Mean request-received → durable-ack time on the node, from `piazza_send_seconds`.
    pub(crate) send_mean_ms: Option<f64>,
    /// Storage queue pushes refused because it was full.
    pub(crate) storage_queue_full_total: f64,
    /// QUIC connections open when the metrics were read (a gauge).
    pub(crate) connections_active: f64,
    /// Connections refused (over `server.max_connections`).
    pub(crate) connections_refused_total: f64,
}

/// The sum of a metric over all its label sets, from Prometheus text.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // Exactly this metric: followed by labels or by the value, not a longer name.
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

fn ratio(a: Option<f64>, b: Option<f64>, scale: f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b * scale),
        _ => None,
    }
}

/// Extracts [`NodeCounters`] from Prometheus text.
fn parse_node_counters(text: &str) -> NodeCounters {
    let counter = |name: &str| metric_sum(text, name).unwrap_or(0.0);
    let commits = counter("piazza_storage_commits_total");
    let records = counter("piazza_storage_records_total");
    NodeCounters {
        sends_total: counter("piazza_sends_total"),
        deliveries_total: counter("piazza_deliveries_total"),
        deliveries_dropped_total: counter("piazza_deliveries_dropped_total"),
        resyncs_total: counter("piazza_resyncs_total"),
        rate_limited_total: counter("piazza_rate_limited_total"),
        storage_commits_total: commits,
        storage_records_total: records,
        records_per_commit: ratio(Some(records), Some(commits), 1.0),
        commit_mean_ms: ratio(
            metric_sum(text, "piazza_storage_commit_seconds_sum"),
            metric_sum(text, "piazza_storage_commit_seconds_count"),
            1000.0,
        ),
        send_mean_ms: ratio(
            metric_sum(text, "piazza_send_seconds_sum"),
            metric_sum(text, "piazza_send_seconds_count"),
            1000.0,
        ),
        storage_queue_full_total: counter("piazza_storage_queue_full_total"),
        connections_active: counter("piazza_connections_active"),
        connections_refused_total: counter("piazza_connections_refused_total"),
    }
}

/// Reads the node's `/metrics` over plain HTTP/1.0 on loopback, within two seconds.
pub(crate) async fn fetch_node_counters(admin: SocketAddr) -> Result<NodeCounters> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(admin)
            .await
            .context("connect to the admin port")?;
        let request =
            format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        // A metrics page is a few tens of KiB; 16 MiB is a generous bound.
        (&mut stream)
            .take(16 * 1024 * 1024)
            .read_to_end(&mut body)
            .await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        anyhow::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .context("fetch /metrics: timed out")??;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("fetch /metrics: no HTTP body");
    };
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        bail!(
            "fetch /metrics: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(parse_node_counters(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_accepted() {
        assert!(check_loopback("127.0.0.1:4433").is_ok());
        assert!(check_loopback("[::1]:4433").is_ok());
        assert!(check_loopback("10.0.0.1:4433").is_err());
        assert!(check_loopback("192.168.1.20:4433").is_err());
        assert!(check_loopback("no-port").is_err());
    }

    #[test]
    fn parses_the_announced_addresses() {
        assert_eq!(
            parse_client_line("  clients (QUIC, ALPN piazza/1): 127.0.0.1:40123"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            parse_admin_line(
                "  admin HTTP:                    http://127.0.0.1:9191/healthz  /readyz  /metrics"
            ),
            Some("127.0.0.1:9191".parse().unwrap())
        );
        assert_eq!(parse_client_line("piazza-node is up"), None);
    }

    #[test]
    fn counts_warnings_and_errors_with_or_without_colours() {
        let mut log = StderrLog::default();
        log.push("2026-11-22T20:13:22.240592Z  INFO piazza_node::node: node started".into());
        log.push("\u{1b}[2m2026-11-22T20:13:22Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x: slow".into());
        log.push("2026-11-22T20:13:22Z ERROR piazza_node::storage: commit failed".into());
        log.push("piazza-node is up".into());
        assert_eq!((log.warnings, log.errors), (1, 1));
        assert_eq!(log.tail.len(), 4);
        assert!(log.tail[1].contains(" WARN x: slow"));
    }

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let stat = "4242 (piazza node) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 37 0 0 20 0 9 0 \
                    100 200000000 3000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(187));
    }

    #[test]
    fn parses_machine_busy_time() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(
            parse_machine_busy_ticks(stat),
            Some(100 + 5 + 50 + 3 + 2 + 1)
        );
        assert_eq!(parse_machine_busy_ticks("intr 1\n"), None);
    }

    #[test]
    fn parses_vm_hwm() {
        let status =
            "Name:\tpiazza-node\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_peak_rss(status), Some(51_200 * 1024));
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(40_000 * 1024));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn sums_metrics_over_labels_only_for_the_exact_name() {
        let text = "# HELP piazza_sends_total sends\n\
                    piazza_sends_total 120\n\
                    piazza_sends_total_other 5\n\
                    piazza_storage_commits_total 10\n\
                    piazza_storage_records_total 120\n\
                    piazza_storage_commit_seconds_sum 0.05\n\
                    piazza_storage_commit_seconds_count 10\n\
                    piazza_requests_total{kind=\"send\",outcome=\"ok\"} 7\n\
                    piazza_requests_total{kind=\"sync\",outcome=\"ok\"} 3\n";
        assert_eq!(metric_sum(text, "piazza_sends_total"), Some(120.0));
        assert_eq!(metric_sum(text, "piazza_requests_total"), Some(10.0));
        assert_eq!(metric_sum(text, "piazza_nothing"), None);
        let counters = parse_node_counters(text);
        assert_eq!(counters.records_per_commit, Some(12.0));
        assert_eq!(
            counters.resyncs_total, 0.0,
            "not exported: never incremented"
        );
        assert!((counters.commit_mean_ms.unwrap() - 5.0).abs() < 1e-9);
    }
}
