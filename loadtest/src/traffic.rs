//! The message traffic the `chat` and `group` scenarios share: every member writes into its one
//! conversation and hears every other member of it. The scenarios only set up the members
//! (`chat.rs`: direct conversations of two, `group.rs`: groups of N); connecting, pacing, sending,
//! receiving, the drain, the correctness ledger and the measurements are here.
//!
//! Every member has a sender task and a receiver task sharing its [`Client`]. A message's text is
//! `"<number> <intended_ns> xxxx…"`: its number in the sender's stream (0, 1, 2, …) and the
//! instant it was due, in nanoseconds after the shared start instant `t0`, padded to
//! `--message-bytes`. The receiver computes the latency as its receive instant minus that, and
//! feeds the number and the conversation seq to its [`RecvLog`] for that sender. Order is also
//! checked across senders: a receiver's first deliveries of one conversation must come in seq
//! order, whoever sent them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use piazza_client::{
    Client, ClientConfig, ClientError, ClientEvent, ConversationId, ConversationRef, EventStart,
    Message, MessageBody, SendAck, UserId,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::hist::LatencyHist;
use crate::ledger::{Arrival, ConversationOrder, RecvLog, SendLog, Tally, reconcile};
use crate::node::{Target, cpu_seconds, machine_busy_seconds};
use crate::pacing;
use crate::progress::{self, Live};

/// Longest wait after the send phase for acknowledged messages still on their way.
pub(crate) const DRAIN_MAX: Duration = Duration::from_secs(5);

/// After failed sends, how long the drain waits without a new delivery before it ends (bounded by
/// [`DRAIN_MAX`]).
const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// Most sends of one sender in flight at once in the open loop. Past it the sender waits for one
/// to finish before starting the next, which shows as latency (measured from the intended time).
const IN_FLIGHT_MAX: usize = 4096;

/// How late a paced sender may still start a message after the send phase ended. Beyond it the
/// rest of its schedule is abandoned and reported as `unsent`, so a stalled node cannot keep the
/// generator running indefinitely.
const LATE_SEND_GRACE: Duration = Duration::from_secs(10);

/// Upper bound on the messages of one sender in the closed loop (`--max`): a safety net, far above
/// what a connection can do in a bounded run.
const CLOSED_LOOP_MAX_PER_SENDER: u64 = 50_000_000;

/// Clients connected at once while setting up.
pub(crate) const CONNECT_CONCURRENCY: usize = 16;

/// Lead time between the end of set-up and the first due message, so every task is waiting.
const START_LEAD: Duration = Duration::from_millis(200);

/// Extra time a receiver waits beyond the drain before it stops on its own (it is normally told
/// to stop earlier).
const RECEIVER_GRACE: Duration = Duration::from_secs(30);

/// How the traffic runs.
#[derive(Clone, Debug)]
pub(crate) struct TrafficParams {
    /// Total messages per second across all senders; `None`: closed loop.
    pub(crate) rate: Option<u64>,
    /// How the open-loop instants are spread (`--arrivals`).
    pub(crate) arrivals: pacing::Arrivals,
    /// Show the live progress line on stderr (see `progress.rs` for when).
    pub(crate) progress: bool,
    /// Closed loop: sends of one sender in flight at once (`--in-flight`, 1 by default).
    pub(crate) closed_in_flight: usize,
    /// Warmup before the measured window.
    pub(crate) warmup: Duration,
    /// The measured window.
    pub(crate) duration: Duration,
    /// Size of each message's text in bytes (at least the header).
    pub(crate) message_bytes: usize,
    /// The node's pid, for CPU sampling over the measured window.
    pub(crate) node_pid: Option<u32>,
    /// Clock ticks per second for `/proc` CPU times.
    pub(crate) ticks_per_s: u64,
    /// Keep each delivery's latency per message and receiver, to time when a message reached all
    /// of its listeners (`fanout_complete_us`; the channel scenario).
    pub(crate) track_fanout: bool,
}

/// One connected member: it sends to `to` and hears the members `peers` in `conversation`.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) client: Arc<Client>,
    pub(crate) me: UserId,
    /// Where its messages go.
    pub(crate) to: ConversationRef,
    /// The same conversation, as deliveries name it.
    pub(crate) conversation: ConversationId,
    /// Indices (into the member list) of the members whose messages it receives.
    pub(crate) peers: Vec<usize>,
    /// Whether it sends at all (a channel subscriber only listens). The rate is shared by the
    /// members that send.
    pub(crate) sends: bool,
}

/// What the traffic measured.
#[derive(Debug)]
pub(crate) struct TrafficOutcome {
    /// Send attempts (successful or not).
    pub(crate) attempts: u64,
    /// Messages of the schedule never started because the sender fell more than
    /// [`LATE_SEND_GRACE`] behind.
    pub(crate) unsent: u64,
    /// The correctness tally over all directions (sender → one receiver); `acked` counts each
    /// acknowledged message once, `out_of_order` is judged per conversation at each receiver.
    pub(crate) tally: Tally,
    /// Failed sends by error label.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Intended send → delivered, measured messages only.
    pub(crate) latency: LatencyHist,
    /// Intended send → durable ack, measured messages only.
    pub(crate) ack_latency: LatencyHist,
    /// Intended send → the send actually started (the generator's own lateness).
    pub(crate) send_lag: LatencyHist,
    /// Distinct deliveries (message × receiver) whose receive instant fell in the measured window.
    pub(crate) delivered_in_window: u64,
    /// Acks of messages due in the measured window.
    pub(crate) acked_in_window: u64,
    /// How long the drain after the send phase took.
    pub(crate) drain: Duration,
    /// Messages from someone not heard, in another conversation, or not in the load test's format.
    pub(crate) foreign: u64,
    /// `Reconnected` events seen by the receivers.
    pub(crate) reconnects: u64,
    /// CPU time spent within the measured window.
    pub(crate) cpu: CpuWindow,
    /// Intended send → delivered to the last of its listeners, per measured message that reached
    /// every listener (only when asked for: [`TrafficParams::track_fanout`]).
    pub(crate) fanout_complete: Option<LatencyHist>,
}

impl TrafficOutcome {
    /// No messages at all: what a scenario without message traffic (`connect`) reports for the
    /// message fields, with the CPU of its measured window and the reconnects it saw.
    pub(crate) fn without_messages(cpu: CpuWindow, reconnects: u64) -> Result<TrafficOutcome> {
        Ok(TrafficOutcome {
            attempts: 0,
            unsent: 0,
            tally: Tally::default(),
            errors: BTreeMap::new(),
            latency: LatencyHist::new()?,
            ack_latency: LatencyHist::new()?,
            send_lag: LatencyHist::new()?,
            delivered_in_window: 0,
            acked_in_window: 0,
            drain: Duration::ZERO,
            foreign: 0,
            reconnects,
            cpu,
            fanout_complete: None,
        })
    }
}

/// CPU seconds spent within the measured window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuWindow {
    /// By the node (spawned node only).
    pub(crate) node_s: Option<f64>,
    /// By this process.
    pub(crate) generator_s: Option<f64>,
    /// By the whole machine, all CPUs added up.
    pub(crate) machine_s: Option<f64>,
}

/// Nanoseconds from `t0` to now (0 before `t0`).
fn since(t0: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(t0).as_nanos()).unwrap_or(u64::MAX)
}

/// The text of message `number`, due at `intended_ns`, padded with `x` to `bytes` bytes.
pub(crate) fn message_text(number: u64, intended_ns: u64, bytes: usize) -> String {
    let mut text = format!("{number} {intended_ns} ");
    if text.len() < bytes {
        text.extend(std::iter::repeat_n('x', bytes - text.len()));
    }
    text
}

/// The number and intended instant from a message text made by [`message_text`].
pub(crate) fn parse_text(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split(' ');
    let number = parts.next()?.parse().ok()?;
    let intended_ns = parts.next()?.parse().ok()?;
    Some((number, intended_ns))
}

/// The label a failed send is counted under: the node's error code label, or the SDK's reason.
pub(crate) fn error_label(error: &ClientError) -> String {
    match error {
        ClientError::Server(code) => code.label().to_owned(),
        ClientError::Invalid(code) => format!("invalid_request:{}", code.label()),
        ClientError::Timeout { .. } => "client_timeout".to_owned(),
        ClientError::ConnectionLost(_) => "connection_lost".to_owned(),
        ClientError::Connect { .. } => "connect".to_owned(),
        ClientError::Closed => "client_closed".to_owned(),
        ClientError::Protocol(_) => "protocol".to_owned(),
        ClientError::Config(_) => "config".to_owned(),
        ClientError::File(_) => "file".to_owned(),
    }
}

/// The users `lt<run_tag>-0` … `lt<run_tag>-<count - 1>`.
pub(crate) fn user_names(run_tag: &str, count: usize) -> Result<Vec<UserId>> {
    (0..count)
        .map(|i| {
            format!("lt{run_tag}-{i}")
                .parse::<UserId>()
                .map_err(|e| anyhow!("user name: {e}"))
        })
        .collect()
}

/// The SDK configuration of the `index`-th load-test user (live events from now on, no history
/// replay; sending from the next of `--source-addrs`, if given).
pub(crate) fn client_config(target: &Target, user: &UserId, index: usize) -> Result<ClientConfig> {
    let mut config = ClientConfig::new(
        target.server.clone(),
        target.ca_file.clone(),
        target.token(user)?,
        "loadtest".parse().map_err(|e| anyhow!("device id: {e}"))?,
    );
    config.events = EventStart::Now;
    if !target.source_addrs.is_empty() {
        config.local_ip = target
            .source_addrs
            .get(index % target.source_addrs.len())
            .copied();
    }
    Ok(config)
}

/// Connects every user (each its own connection and authenticated session), at most
/// [`CONNECT_CONCURRENCY`] at once; the clients come back in the order of `users`.
pub(crate) async fn connect_users(target: &Target, users: &[UserId]) -> Result<Vec<Client>> {
    connect_users_at_most(target, users, CONNECT_CONCURRENCY).await
}

/// [`connect_users`] with at most `concurrency` connections under way at once.
pub(crate) async fn connect_users_at_most(
    target: &Target,
    users: &[UserId],
    concurrency: usize,
) -> Result<Vec<Client>> {
    let concurrency = concurrency.max(1);
    let mut slots: Vec<Option<Client>> = (0..users.len()).map(|_| None).collect();
    let mut pending = JoinSet::new();
    let mut next = 0;
    // Bounded: each iteration either starts one of the connects or finishes one.
    while next < users.len() || !pending.is_empty() {
        while next < users.len() && pending.len() < concurrency {
            let config = client_config(target, &users[next], next)?;
            let index = next;
            pending.spawn(async move { (index, Client::connect(config).await) });
            next += 1;
        }
        let Some(joined) = pending.join_next().await else {
            break;
        };
        let (index, result) = joined.context("connect task")?;
        let client = result.with_context(|| format!("connect user {}", users[index]))?;
        slots[index] = Some(client);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(index, slot)| slot.ok_or_else(|| anyhow!("user {index} did not connect")))
        .collect()
}

/// Runs the traffic between `members` and returns the measurements.
pub(crate) async fn run(params: &TrafficParams, members: Vec<Member>) -> Result<TrafficOutcome> {
    // Each sending member's place in the pacing schedule (0, 1, … over the senders only).
    let mut ordinals = vec![None; members.len()];
    let mut senders = 0u64;
    for (index, member) in members.iter().enumerate() {
        if member.sends {
            ordinals[index] = Some(senders);
            senders += 1;
        }
    }
    // How many members hear each sender: the deliveries one of its acked messages owes.
    let mut listeners = vec![0u64; members.len()];
    for member in &members {
        for &peer in &member.peers {
            let Some(count) = listeners.get_mut(peer) else {
                bail!("internal: peer index {peer} out of range");
            };
            *count += 1;
        }
    }
    let warmup_ns = u64::try_from(params.warmup.as_nanos()).unwrap_or(u64::MAX);
    let total = params.warmup + params.duration;
    let total_ns = u64::try_from(total.as_nanos()).unwrap_or(u64::MAX);
    let live = Arc::new(Live::default());
    let t0 = Instant::now() + START_LEAD;
    let (stop_tx, stop_rx) = watch::channel(false);

    // Each sender's message count in the open loop, computed once (a Poisson schedule is counted
    // by drawing it).
    let planned: Vec<u64> = ordinals
        .iter()
        .map(|ordinal| match (params.rate, ordinal) {
            (Some(rate), Some(ordinal)) => {
                pacing::count(params.arrivals, *ordinal, senders, rate, total_ns)
            }
            (Some(_), None) => 0,
            (None, _) => CLOSED_LOOP_MAX_PER_SENDER,
        })
        .collect();
    let mut receivers = JoinSet::new();
    let mut sender_tasks = JoinSet::new();
    for (index, member) in members.iter().enumerate() {
        // Per sender heard: its slot in the receiver's logs and the message numbers it can use
        // (its schedule in the open loop, the safety cap in the closed loop).
        let mut heard = HashMap::with_capacity(member.peers.len());
        for (slot, &peer) in member.peers.iter().enumerate() {
            let plan = planned.get(peer).copied().unwrap_or(0);
            heard.insert(members[peer].me.clone(), (slot, plan));
        }
        receivers.spawn(receive(ReceiverParts {
            client: Arc::clone(&member.client),
            index,
            me: member.me.clone(),
            conversation: member.conversation.clone(),
            heard,
            t0,
            warmup_ns,
            total_ns,
            deadline: t0 + total + LATE_SEND_GRACE + DRAIN_MAX + RECEIVER_GRACE,
            live: Arc::clone(&live),
            stop: stop_rx.clone(),
            track_fanout: params.track_fanout,
        }));
        let Some(ordinal) = ordinals[index] else {
            continue;
        };
        sender_tasks.spawn(send(SenderParts {
            client: Arc::clone(&member.client),
            to: member.to.clone(),
            index: index as u64,
            ordinal,
            listeners: listeners[index],
            senders,
            rate: params.rate,
            arrivals: params.arrivals,
            closed_in_flight: params.closed_in_flight.clamp(1, IN_FLIGHT_MAX),
            message_bytes: params.message_bytes,
            t0,
            warmup_ns,
            total_ns,
            live: Arc::clone(&live),
        }));
    }

    let progress = if params.progress {
        Some(tokio::spawn(progress::run(
            Arc::clone(&live),
            t0,
            total,
            total + LATE_SEND_GRACE + DRAIN_MAX,
            stop_rx.clone(),
        )))
    } else {
        None
    };
    let cpu_window = tokio::spawn(cpu_window(
        params.node_pid,
        params.ticks_per_s,
        t0 + params.warmup,
        t0 + total,
    ));

    // The send phase: every sender stops by itself (end of schedule or of the window, plus the
    // SDK's request deadline for sends in flight).
    let mut attempts = 0;
    let mut unsent = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut ack_latency = LatencyHist::new()?;
    let mut send_lag = LatencyHist::new()?;
    let mut acked_in_window = 0;
    let mut send_logs: Vec<(u64, SendLog)> = Vec::with_capacity(members.len());
    // Members that only listen have nothing acknowledged.
    for (index, ordinal) in ordinals.iter().enumerate() {
        if ordinal.is_none() {
            send_logs.push((index as u64, SendLog::new()));
        }
    }
    while let Some(joined) = sender_tasks.join_next().await {
        let outcome = joined.context("sender task")??;
        attempts += outcome.attempts;
        unsent += outcome.unsent;
        for (label, count) in outcome.errors {
            *errors.entry(label).or_default() += count;
        }
        ack_latency.merge(&outcome.ack_latency)?;
        send_lag.merge(&outcome.send_lag)?;
        acked_in_window += outcome.acked_in_window;
        send_logs.push((outcome.index, outcome.log));
    }

    // The drain: wait (briefly) until everything acknowledged has arrived at every listener.
    let drain_start = Instant::now();
    let drain_end = drain_start + DRAIN_MAX;
    while Instant::now() < drain_end {
        // A failed send may still have been stored and delivered (`delivered_unacked`), which
        // the count of deliveries owed does not include: after errors, also wait until
        // deliveries have stopped coming for DRAIN_QUIET.
        let quiet = live.errors.load(Ordering::Relaxed) == 0
            || since(t0).saturating_sub(live.last_delivery_ns.load(Ordering::Relaxed))
                >= u64::try_from(DRAIN_QUIET.as_nanos()).unwrap_or(u64::MAX);
        if quiet && live.delivered.load(Ordering::Relaxed) >= live.expected.load(Ordering::Relaxed)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = drain_start.elapsed();
    let _ = stop_tx.send(true);

    let mut latency = LatencyHist::new()?;
    let mut delivered_in_window = 0;
    let mut foreign = 0;
    let mut reconnects = 0;
    let mut out_of_order = 0;
    let mut recv_logs: Vec<(usize, Vec<RecvLog>)> = Vec::with_capacity(members.len());
    let mut arrivals: Vec<(usize, Vec<Vec<u64>>)> = Vec::new();
    while let Some(joined) = receivers.join_next().await {
        let outcome = joined.context("receiver task")??;
        latency.merge(&outcome.latency)?;
        delivered_in_window += outcome.delivered_in_window;
        foreign += outcome.foreign;
        reconnects += outcome.reconnects;
        out_of_order += outcome.order.out_of_order();
        recv_logs.push((outcome.index, outcome.logs));
        if params.track_fanout {
            arrivals.push((outcome.index, outcome.arrivals));
        }
    }
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    let cpu = cpu_window.await.context("CPU sampling task")?;

    // Every direction: sender p's log against receiver r's log of what it heard from p.
    send_logs.sort_by_key(|(index, _)| *index);
    recv_logs.sort_by_key(|(index, _)| *index);
    if send_logs.len() != members.len() || recv_logs.len() != members.len() {
        bail!("internal: a sender or receiver task is missing");
    }
    let mut tally = Tally::default();
    for (receiver, logs) in &recv_logs {
        for (&peer, received) in members[*receiver].peers.iter().zip(logs) {
            let (_, sent) = &send_logs[peer];
            tally.add(&reconcile(sent, received));
        }
    }
    // Each direction counted the sender's acks again; a message is acked once.
    tally.acked = send_logs.iter().map(|(_, log)| log.acked()).sum();
    // Judged per conversation at each receiver, which includes every per-direction inversion
    // (a sender's later seq first means the conversation's highest seq was already above).
    tally.out_of_order = out_of_order;
    let fanout_complete = if params.track_fanout {
        arrivals.sort_by_key(|(index, _)| *index);
        Some(fanout_complete(&members, &arrivals)?)
    } else {
        None
    };

    // Close every connection (each waits briefly for the node to hear about it), all at once.
    let mut closing = JoinSet::new();
    for member in members {
        if let Ok(client) = Arc::try_unwrap(member.client) {
            closing.spawn(client.close());
        }
    }
    while closing.join_next().await.is_some() {}

    Ok(TrafficOutcome {
        attempts,
        unsent,
        tally,
        errors,
        latency,
        ack_latency,
        send_lag,
        delivered_in_window,
        acked_in_window,
        drain,
        foreign,
        reconnects,
        cpu,
        fanout_complete,
    })
}

/// Per message of each sender, the latency of its last delivery over all of the sender's
/// listeners; messages some listener did not get (lost, or in the warmup) are left out.
/// `arrivals` holds, per receiver in member order, per heard sender (in `peers` order), the
/// latency + 1 in ns of each message number (0: not received or not measured).
fn fanout_complete(members: &[Member], arrivals: &[(usize, Vec<Vec<u64>>)]) -> Result<LatencyHist> {
    let peers: Vec<Vec<usize>> = members.iter().map(|m| m.peers.clone()).collect();
    fanout_from_peers(&peers, arrivals)
}

/// [`fanout_complete`] given each member's `peers`.
fn fanout_from_peers(
    peers: &[Vec<usize>],
    arrivals: &[(usize, Vec<Vec<u64>>)],
) -> Result<LatencyHist> {
    // Per sender: its listeners' latency vectors.
    let mut by_sender: Vec<Vec<&Vec<u64>>> = vec![Vec::new(); peers.len()];
    for (receiver, per_peer) in arrivals {
        let Some(heard) = peers.get(*receiver) else {
            bail!("internal: receiver index {receiver} out of range");
        };
        for (&peer, latencies) in heard.iter().zip(per_peer) {
            let Some(list) = by_sender.get_mut(peer) else {
                bail!("internal: peer index {peer} out of range");
            };
            list.push(latencies);
        }
    }
    let mut hist = LatencyHist::new()?;
    for listeners in by_sender.iter().filter(|l| !l.is_empty()) {
        let longest = listeners.iter().map(|l| l.len()).max().unwrap_or(0);
        for number in 0..longest {
            let mut worst = 0u64;
            let mut everyone = true;
            for latencies in listeners {
                match latencies.get(number).copied().unwrap_or(0) {
                    0 => {
                        everyone = false;
                        break;
                    }
                    ns => worst = worst.max(ns),
                }
            }
            if everyone {
                hist.record_ns(worst - 1);
            }
        }
    }
    Ok(hist)
}

/// CPU seconds of the node, of this process and of the whole machine between `from` and `to`.
pub(crate) async fn cpu_window(
    node_pid: Option<u32>,
    ticks_per_s: u64,
    from: Instant,
    to: Instant,
) -> CpuWindow {
    let sample = || {
        (
            node_pid.and_then(|pid| cpu_seconds(Some(pid), ticks_per_s)),
            cpu_seconds(None, ticks_per_s),
            machine_busy_seconds(ticks_per_s),
        )
    };
    sleep_until(from).await;
    let a = sample();
    sleep_until(to).await;
    let b = sample();
    let delta = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    CpuWindow {
        node_s: delta(a.0, b.0),
        generator_s: delta(a.1, b.1),
        machine_s: delta(a.2, b.2),
    }
}

struct SenderParts {
    client: Arc<Client>,
    to: ConversationRef,
    index: u64,
    /// Its place among the senders in the pacing schedule.
    ordinal: u64,
    /// Members hearing this sender.
    listeners: u64,
    senders: u64,
    rate: Option<u64>,
    arrivals: pacing::Arrivals,
    /// Closed loop: sends of this sender in flight at once (at least 1).
    closed_in_flight: usize,
    message_bytes: usize,
    t0: Instant,
    warmup_ns: u64,
    total_ns: u64,
    live: Arc<Live>,
}

struct SenderOutcome {
    index: u64,
    attempts: u64,
    unsent: u64,
    errors: BTreeMap<String, u64>,
    ack_latency: LatencyHist,
    send_lag: LatencyHist,
    acked_in_window: u64,
    log: SendLog,
}

/// One finished send: its number, when it was due, when it left, when it was answered, how.
struct Done {
    number: u64,
    intended_ns: u64,
    answered_ns: u64,
    result: Result<SendAck, ClientError>,
}

impl SenderOutcome {
    fn record(&mut self, done: Done, parts: &SenderParts) {
        match done.result {
            Ok(ack) => {
                self.log.record_ack(done.number, ack.seq.get());
                parts.live.acked.fetch_add(1, Ordering::Relaxed);
                parts
                    .live
                    .expected
                    .fetch_add(parts.listeners, Ordering::Relaxed);
                if done.intended_ns >= parts.warmup_ns {
                    self.ack_latency
                        .record_ns(done.answered_ns.saturating_sub(done.intended_ns));
                    if done.intended_ns < parts.total_ns {
                        self.acked_in_window += 1;
                    }
                }
            }
            Err(error) => {
                parts.live.errors.fetch_add(1, Ordering::Relaxed);
                *self.errors.entry(error_label(&error)).or_default() += 1;
            }
        }
    }
}

async fn send_one(
    client: Arc<Client>,
    to: ConversationRef,
    text: String,
    number: u64,
    intended_ns: u64,
    t0: Instant,
) -> Done {
    let result = client.send(to, text, None).await;
    Done {
        number,
        intended_ns,
        answered_ns: since(t0),
        result,
    }
}

async fn send(parts: SenderParts) -> Result<SenderOutcome> {
    let mut outcome = SenderOutcome {
        index: parts.index,
        attempts: 0,
        unsent: 0,
        errors: BTreeMap::new(),
        ack_latency: LatencyHist::new()?,
        send_lag: LatencyHist::new()?,
        acked_in_window: 0,
        log: SendLog::new(),
    };
    let to = parts.to.clone();
    match parts.rate {
        Some(rate) => {
            let mut schedule = pacing::Schedule::new(
                parts.arrivals,
                parts.ordinal,
                parts.senders,
                rate,
                parts.total_ns,
            );
            let late_limit_ns = parts
                .total_ns
                .saturating_add(u64::try_from(LATE_SEND_GRACE.as_nanos()).unwrap_or(u64::MAX));
            let mut in_flight: JoinSet<Done> = JoinSet::new();
            let mut number = 0u64;
            while let Some(intended_ns) = schedule.next() {
                let due = parts.t0 + Duration::from_nanos(intended_ns);
                // Wait for the due instant, collecting finished sends meanwhile. Each turn either
                // ends the wait or collects one of the (at most IN_FLIGHT_MAX) sends.
                loop {
                    tokio::select! {
                        biased;
                        () = sleep_until(due) => break,
                        Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                            outcome.record(joined.context("send task")?, &parts);
                        }
                    }
                }
                while in_flight.len() >= IN_FLIGHT_MAX {
                    if let Some(joined) = in_flight.join_next().await {
                        outcome.record(joined.context("send task")?, &parts);
                    }
                }
                let now_ns = since(parts.t0);
                if now_ns > late_limit_ns {
                    // This message and the rest of the schedule (bounded by the window).
                    outcome.unsent += 1 + schedule.count() as u64;
                    break;
                }
                if intended_ns >= parts.warmup_ns {
                    outcome
                        .send_lag
                        .record_ns(now_ns.saturating_sub(intended_ns));
                }
                outcome.attempts += 1;
                parts.live.attempts.fetch_add(1, Ordering::Relaxed);
                in_flight.spawn(send_one(
                    Arc::clone(&parts.client),
                    to.clone(),
                    message_text(number, intended_ns, parts.message_bytes),
                    number,
                    intended_ns,
                    parts.t0,
                ));
                number += 1;
            }
            // Sends in flight end by themselves: each has the SDK's request deadline.
            while let Some(joined) = in_flight.join_next().await {
                outcome.record(joined.context("send task")?, &parts);
            }
        }
        None => {
            sleep_until(parts.t0).await;
            // Up to `closed_in_flight` sends at once: the next starts when one is answered.
            let mut in_flight: JoinSet<Done> = JoinSet::new();
            for number in 0..CLOSED_LOOP_MAX_PER_SENDER {
                while in_flight.len() >= parts.closed_in_flight {
                    if let Some(joined) = in_flight.join_next().await {
                        outcome.record(joined.context("send task")?, &parts);
                    }
                }
                let intended_ns = since(parts.t0);
                if intended_ns >= parts.total_ns {
                    break;
                }
                outcome.attempts += 1;
                parts.live.attempts.fetch_add(1, Ordering::Relaxed);
                in_flight.spawn(send_one(
                    Arc::clone(&parts.client),
                    to.clone(),
                    message_text(number, intended_ns, parts.message_bytes),
                    number,
                    intended_ns,
                    parts.t0,
                ));
            }
            // Sends in flight end by themselves: each has the SDK's request deadline.
            while let Some(joined) = in_flight.join_next().await {
                outcome.record(joined.context("send task")?, &parts);
            }
        }
    }
    Ok(outcome)
}

struct ReceiverParts {
    client: Arc<Client>,
    /// This member's index.
    index: usize,
    me: UserId,
    conversation: ConversationId,
    /// The senders heard: their slot in `logs`, and the bound below which their message numbers
    /// lie.
    heard: HashMap<UserId, (usize, u64)>,
    t0: Instant,
    warmup_ns: u64,
    total_ns: u64,
    deadline: Instant,
    live: Arc<Live>,
    stop: watch::Receiver<bool>,
    /// Keep the latency of each measured first delivery (for `fanout_complete_us`).
    track_fanout: bool,
}

struct ReceiverOutcome {
    /// Index of the member receiving.
    index: usize,
    /// One log per sender heard, in the order of the member's `peers`.
    logs: Vec<RecvLog>,
    /// Order of first deliveries in the conversation, whoever sent them.
    order: ConversationOrder,
    latency: LatencyHist,
    delivered_in_window: u64,
    foreign: u64,
    reconnects: u64,
    /// With `track_fanout`: per sender heard, the latency + 1 in ns of each measured first
    /// delivery by message number (0: none).
    arrivals: Vec<Vec<u64>>,
}

async fn receive(mut parts: ReceiverParts) -> Result<ReceiverOutcome> {
    let mut outcome = ReceiverOutcome {
        index: parts.index,
        logs: vec![RecvLog::new(); parts.heard.len()],
        order: ConversationOrder::default(),
        latency: LatencyHist::new()?,
        delivered_in_window: 0,
        foreign: 0,
        reconnects: 0,
        arrivals: if parts.track_fanout {
            vec![Vec::new(); parts.heard.len()]
        } else {
            Vec::new()
        },
    };
    // Bounded in time by `deadline`, and normally ended earlier by `stop`.
    loop {
        tokio::select! {
            _ = parts.stop.changed() => break,
            () = sleep_until(parts.deadline) => break,
            event = parts.client.next_event() => match event {
                None => break,
                Some(ClientEvent::Message(message)) => on_message(&parts, &mut outcome, &message),
                Some(ClientEvent::Reconnected { .. }) => outcome.reconnects += 1,
                Some(_) => {}
            },
        }
    }
    Ok(outcome)
}

fn on_message(parts: &ReceiverParts, outcome: &mut ReceiverOutcome, message: &Message) {
    let received_ns = since(parts.t0);
    if message.sender == parts.me {
        // The node also pushes our own messages to us (all of the sender's sessions get them).
        return;
    }
    if message.conversation == parts.conversation && matches!(message.body, MessageBody::System(_))
    {
        // The group's own announcements (created, members added): part of setting it up.
        return;
    }
    let parsed = match (&message.body, parts.heard.get(&message.sender)) {
        (MessageBody::Text(text), Some(&(slot, plan))) => {
            parse_text(text).map(|(number, intended_ns)| (slot, plan, number, intended_ns))
        }
        _ => None,
    };
    let Some((slot, plan, number, intended_ns)) = parsed else {
        outcome.foreign += 1;
        return;
    };
    if message.conversation != parts.conversation || number >= plan {
        outcome.foreign += 1;
        return;
    }
    let Some(log) = outcome.logs.get_mut(slot) else {
        outcome.foreign += 1;
        return;
    };
    let seq = message.seq.get();
    match log.record(number, seq) {
        Arrival::Duplicate => {
            parts.live.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Arrival::New | Arrival::OutOfOrder => {
            if !outcome.order.record(seq) {
                parts.live.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            parts.live.delivered.fetch_add(1, Ordering::Relaxed);
            parts
                .live
                .last_delivery_ns
                .fetch_max(received_ns, Ordering::Relaxed);
            if intended_ns >= parts.warmup_ns {
                let latency_ns = received_ns.saturating_sub(intended_ns);
                outcome.latency.record_ns(latency_ns);
                parts.live.latency.record_ns(latency_ns);
                if let (Some(latencies), Ok(at)) =
                    (outcome.arrivals.get_mut(slot), usize::try_from(number))
                {
                    if latencies.len() <= at {
                        latencies.resize(at + 1, 0);
                    }
                    latencies[at] = latency_ns.saturating_add(1);
                }
            }
            if (parts.warmup_ns..parts.total_ns).contains(&received_ns) {
                outcome.delivered_in_window += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_round_trips_and_is_padded() {
        let text = message_text(42, 1_234_567_890, 64);
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("42 1234567890 x"));
        assert_eq!(parse_text(&text), Some((42, 1_234_567_890)));
    }

    #[test]
    fn a_short_size_keeps_the_whole_header() {
        let text = message_text(7, 99, 1);
        assert_eq!(text, "7 99 ");
        assert_eq!(parse_text(&text), Some((7, 99)));
    }

    #[test]
    fn fanout_completes_at_the_last_listener_and_skips_posts_someone_missed() {
        // One poster (member 0) and two subscribers hearing it.
        let peers = [vec![], vec![0], vec![0]];
        let arrivals = vec![
            (0, Vec::new()),
            // Subscriber 1: post 0 after 5 ns, post 1 after 7 ns, post 2 not measured.
            (1, vec![vec![6, 8, 0]]),
            // Subscriber 2: post 0 after 9 ns, post 1 after 2 ns, post 2 after 4 ns.
            (2, vec![vec![10, 3, 5]]),
        ];
        let hist = fanout_from_peers(&peers, &arrivals).unwrap();
        let p = hist.percentiles();
        // Posts 0 (9 ns) and 1 (7 ns) reached everyone; post 2 did not.
        assert_eq!(p.count, 2);
    }

    #[test]
    fn foreign_texts_do_not_parse() {
        assert_eq!(parse_text("hello bob"), None);
        assert_eq!(parse_text("12"), None);
        assert_eq!(parse_text(""), None);
    }
}
