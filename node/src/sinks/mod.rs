//! Event sinks: delivery of the commerce event outbox to webhooks and NATS JetStream (the
//! Business API's event feed).
//!
//! The shop actor writes each event into the outbox ([`outbox::outbox_write`]) in the same
//! storage batch as the state change that produced it, and calls [`SinksHandle::notify`] once
//! the batch is durable. One dispatcher task per configured sink then walks the outbox and
//! delivers what its cursor has not passed yet. An event is therefore delivered *at least once*,
//! never before it is durable, and never lost by a crash: delivery state lives in storage too.
//!
//! # Order and retries
//!
//! Each sink delivers each shop's events **in seq order, one at a time**: a failing event is
//! retried (exponential backoff with jitter, from `initial_backoff_ms` doubling up to
//! `max_backoff_ms`) and holds back the *same shop's* later events on *that sink*, but never
//! another shop's or another sink's. Commerce events are causal (an order is paid after it was
//! placed), and receivers that keep state are far simpler when they never see them out of
//! order. The price: one event a receiver keeps refusing stalls its shop's feed until that
//! event's `max_age_secs` (7 days by default, counted from its first attempt) has passed; it is
//! then **dead** — recorded in the sinks table, counted in `piazza_sink_dead_total`, logged —
//! and the shop's next event goes. Receivers should still deduplicate by event id (a
//! redelivery after a timeout or a crash repeats one), and can check `seq` for gaps.
//!
//! # Delivery state (table `sinks`)
//!
//! * `s\0<sink>\0<shop>` → `{"next": n, "attempts": k, "first_attempt_ms": …, "next_at_ms": …,
//!   "last_error": "…"}`: every event of the shop before seq `n` is done (delivered, dead, or
//!   not of the sink's types); `k` attempts of event `n` were made (0: none yet), the next is
//!   due at `next_at_ms`. Webhook sinks write the attempt *before* making it, so an event
//!   attempted before a crash is sent again as a redelivery.
//! * `d\0<sink>\0<shop>\0<seq: u64 BE>` → `{"id", "type", "attempts", "first_attempt_ms",
//!   "dead_ms", "last_error"}`: a dead event, kept for inspection (and a manual replay).
//!
//! A sink added later starts at its shops' first events; renaming a sink starts it over.
//!
//! # Dispatch
//!
//! A dispatcher wakes on [`SinksHandle::notify`], when the earliest retry is due, and every
//! [`RESCAN_INTERVAL`] (events committed by a shop that did not notify, or before a crash). It
//! then walks the shops with events (one storage read per shop to find the next, so a walk costs
//! O(shops)), and starts a job for each shop with due work, at most `concurrency` at once; a job
//! delivers its shop's events in order until one fails, none are left, or it delivered
//! [`JOB_EVENTS_MAX`] (then the shop goes to the back of the line).
//!
//! Metrics (labelled by sink name, never by shop): `piazza_sink_deliveries_total{sink,outcome}`
//! (`delivered`, `failed`, `dead`), `piazza_sink_dead_total{sink}`, and the gauge
//! `piazza_sink_lag_events{sink}`: events not yet done, as of the last walk.

pub(crate) mod config;
pub(crate) mod nats;
pub(crate) mod outbox;
pub(crate) mod webhook;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use config::{NatsSink, SinksSection, WebhookSink};

use crate::commerce::ids::ShopId;
use crate::node::now_ms;
use crate::storage::{KvTable, Storage, StorageError, Write};

/// Starts the delivery tasks for the configured sinks (none configured: nothing runs, but outbox
/// rows are still written). Reads secret files; fails on an invalid configuration.
pub(crate) fn start(
    config: &SinksSection,
    storage: Arc<dyn Storage>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SinksHandle> {
    config.validate().map_err(anyhow::Error::msg)?;
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let mut sinks = Vec::new();
    for (i, hook) in config.webhooks.iter().enumerate() {
        let name = hook.name(i);
        let secret = match (&hook.secret, &hook.secret_file) {
            (Some(secret), _) => secret.clone().into_bytes(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("read sink {name}'s secret_file {}", path.display())
                })?;
                text.trim().as_bytes().to_vec()
            }
            (None, None) => anyhow::bail!("sink {name} has no secret"),
        };
        config::check_secret(&secret).map_err(|e| anyhow::anyhow!("sink {name}'s secret: {e}"))?;
        let endpoint = webhook::Endpoint::parse(&hook.url).map_err(anyhow::Error::msg)?;
        sinks.push(Sink {
            shop: parse_shop(&hook.shop)?,
            event_types: (!hook.event_types.is_empty())
                .then(|| hook.event_types.iter().cloned().collect()),
            policy: RetryPolicy {
                initial_backoff_ms: hook.initial_backoff_ms,
                max_backoff_ms: hook.max_backoff_ms,
                max_age_ms: hook.max_age_secs.saturating_mul(1000),
            },
            concurrency: hook.concurrency,
            record_attempts: true,
            transport: Arc::new(webhook::WebhookTransport::new(endpoint, &secret, timeout)),
            name,
        });
    }
    if let Some(nats) = &config.nats {
        let target = nats::NatsTarget {
            address: nats::Address::parse(&nats.url).map_err(anyhow::Error::msg)?,
            stream: nats.stream.clone(),
            subject_prefix: nats.subject_prefix.clone(),
            duplicate_window: Duration::from_secs(nats.duplicate_window_secs),
            timeout,
            reconnect_min: Duration::from_millis(nats.initial_backoff_ms),
            reconnect_max: Duration::from_millis(nats.max_backoff_ms),
        };
        sinks.push(Sink {
            name: nats.name.clone(),
            shop: None,
            event_types: None,
            policy: RetryPolicy {
                initial_backoff_ms: nats.initial_backoff_ms,
                max_backoff_ms: nats.max_backoff_ms,
                max_age_ms: nats.max_age_secs.saturating_mul(1000),
            },
            // One connection, one request at a time (see `nats`).
            concurrency: 1,
            // Redeliveries are deduplicated by JetStream; no redelivery flag to get right.
            record_attempts: false,
            transport: Arc::new(nats::NatsTransport::new(target)),
        });
    }
    Ok(start_sinks(sinks, storage, shutdown))
}

/// Wakes and tracks the dispatcher tasks.
#[derive(Clone, Debug)]
pub(crate) struct SinksHandle {
    wakers: Arc<[Arc<Notify>]>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SinksHandle {
    /// Wakes the dispatchers: new outbox rows are durable.
    pub(crate) fn notify(&self) {
        for waker in self.wakers.iter() {
            // Stores a permit if the dispatcher is busy, so the wake-up is never lost.
            waker.notify_one();
        }
    }

    /// Waits until every dispatcher has stopped (after the shutdown signal).
    pub(crate) async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Events one job delivers before its shop yields its slot to other shops.
pub(crate) const JOB_EVENTS_MAX: usize = 256;
/// How often a dispatcher walks the outbox without being woken.
pub(crate) const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Shops looked at between two checks for shutdown and finished jobs.
const SCAN_STEP_SHOPS: usize = 256;
/// After a storage error, the next walk waits this long.
const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// Longest `last_error` kept in the state rows.
const LAST_ERROR_BYTES_MAX: usize = 512;

/// A boxed future, so that [`Transport`] is object safe.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt to deliver one event.
#[derive(Debug)]
pub(crate) struct Delivery<'a> {
    /// The event's shop.
    pub(crate) shop: &'a ShopId,
    /// `<shop>:<seq>`.
    pub(crate) id: String,
    /// Its type.
    pub(crate) event_type: &'a str,
    /// The envelope JSON.
    pub(crate) body: &'a [u8],
    /// Counts attempts from 1.
    pub(crate) attempt: u32,
    /// Whether it was attempted before.
    pub(crate) redelivery: bool,
}

/// How a sink moves one event. `Err` carries why it failed; the event is retried.
pub(crate) trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Makes one attempt.
    fn deliver<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Result<(), String>>;
}

/// When a failing event is tried again, and when it is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Delay after the first failure.
    pub(crate) initial_backoff_ms: u64,
    /// Longest delay.
    pub(crate) max_backoff_ms: u64,
    /// An event failing this long after its first attempt is dead.
    pub(crate) max_age_ms: u64,
}

impl RetryPolicy {
    /// The delay after the `attempts`th failure: `initial * 2^(attempts-1)`, capped, then drawn
    /// from its upper half with `random` (jitter, so that shops failing together spread out).
    pub(crate) fn delay_ms(&self, attempts: u32, random: u64) -> u64 {
        let doublings = attempts.saturating_sub(1).min(40);
        let full = self
            .initial_backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms);
        let half = full / 2;
        half + random % (full - half + 1)
    }
}

/// A configured sink.
#[derive(Debug)]
pub(crate) struct Sink {
    /// Its name (state keys, metric label).
    pub(crate) name: String,
    /// Only this shop's events, or every shop's.
    pub(crate) shop: Option<ShopId>,
    /// Only these types (bounded by the number of event types), or all.
    pub(crate) event_types: Option<HashSet<String>>,
    pub(crate) policy: RetryPolicy,
    /// Shops delivered at once.
    pub(crate) concurrency: usize,
    /// Whether each attempt is recorded durably before it is made (for an exact redelivery
    /// flag), or only its outcome.
    pub(crate) record_attempts: bool,
    pub(crate) transport: Arc<dyn Transport>,
}

/// Starts one dispatcher per sink.
pub(crate) fn start_sinks(
    sinks: Vec<Sink>,
    storage: Arc<dyn Storage>,
    shutdown: watch::Receiver<bool>,
) -> SinksHandle {
    let mut wakers = Vec::with_capacity(sinks.len());
    let mut tasks = Vec::with_capacity(sinks.len());
    for sink in sinks {
        let wake = Arc::new(Notify::new());
        wakers.push(wake.clone());
        let dispatcher = Dispatcher {
            sink: Arc::new(sink),
            storage: storage.clone(),
            wake,
        };
        let span = tracing::info_span!("sink", sink = %dispatcher.sink.name);
        tasks.push(tokio::spawn(tracing::Instrument::instrument(
            dispatcher.run(shutdown.clone()),
            span,
        )));
    }
    SinksHandle {
        wakers: wakers.into(),
        tasks: Arc::new(Mutex::new(tasks)),
    }
}

fn parse_shop(shop: &str) -> anyhow::Result<Option<ShopId>> {
    if shop == "*" {
        return Ok(None);
    }
    shop.parse()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("sink shop {shop:?}: {e}"))
}

/// Where one sink stands with one shop (the `s` row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShopCursor {
    /// The next event to deliver; everything before it is done.
    pub(crate) next: u64,
    /// Attempts made at `next`.
    pub(crate) attempts: u32,
    pub(crate) first_attempt_ms: u64,
    pub(crate) next_at_ms: u64,
    pub(crate) last_error: String,
}

impl ShopCursor {
    /// Nothing attempted at `next` yet.
    fn at(next: u64) -> ShopCursor {
        ShopCursor {
            next,
            attempts: 0,
            first_attempt_ms: 0,
            next_at_ms: 0,
            last_error: String::new(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut value = serde_json::json!({"next": self.next});
        if self.attempts > 0 {
            value["attempts"] = self.attempts.into();
            value["first_attempt_ms"] = self.first_attempt_ms.into();
            value["next_at_ms"] = self.next_at_ms.into();
            value["last_error"] = self.last_error.as_str().into();
        }
        value.to_string().into_bytes()
    }

    fn decode(row: &[u8]) -> Result<ShopCursor, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            table: "sinks",
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(row).map_err(|e| corrupt(e.to_string()))?;
        let number = |key: &str| {
            value
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let next = number("next");
        if next == 0 {
            return Err(corrupt("cursor without next".into()));
        }
        Ok(ShopCursor {
            next,
            attempts: u32::try_from(number("attempts")).unwrap_or(u32::MAX),
            first_attempt_ms: number("first_attempt_ms"),
            next_at_ms: number("next_at_ms"),
            last_error: value
                .get("last_error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    }
}

/// The key of a sink's cursor for a shop.
pub(crate) fn cursor_key(sink: &str, shop: &ShopId) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + sink.len() + shop.as_str().len());
    key.extend_from_slice(b"s\0");
    key.extend_from_slice(sink.as_bytes());
    key.push(0);
    key.extend_from_slice(shop.as_str().as_bytes());
    key
}

/// The key prefix of a sink's dead events of a shop.
pub(crate) fn dead_prefix(sink: &str, shop: &ShopId) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + sink.len() + shop.as_str().len() + 9);
    key.extend_from_slice(b"d\0");
    key.extend_from_slice(sink.as_bytes());
    key.push(0);
    key.extend_from_slice(shop.as_str().as_bytes());
    key.push(0);
    key
}

/// A sink's cursor for a shop (at the first event if it has none).
pub(crate) fn read_cursor(
    storage: &dyn Storage,
    sink: &str,
    shop: &ShopId,
) -> Result<ShopCursor, StorageError> {
    match storage.kv_get(KvTable::Sinks, &cursor_key(sink, shop))? {
        Some(row) => ShopCursor::decode(&row),
        None => Ok(ShopCursor::at(1)),
    }
}

fn cursor_write(sink: &str, shop: &ShopId, cursor: &ShopCursor) -> Write {
    Write::Put {
        table: KvTable::Sinks,
        key: cursor_key(sink, shop),
        value: cursor.encode(),
    }
}

/// Submits `writes` and waits until they are durable.
async fn commit(storage: &dyn Storage, writes: Vec<Write>) -> Result<(), StorageError> {
    let (tx, rx) = oneshot::channel();
    // `submit` calls the callback exactly once, also when it fails to queue (then it also
    // returns the error): the answer always comes through `rx`.
    let _ = storage.submit(
        writes,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    rx.await.map_err(|_| StorageError::Closed)?
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The instant at wall-clock time `at_ms`.
fn instant_at(at_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms()))
}

/// How a job ended.
#[derive(Debug)]
enum JobOutcome {
    /// Nothing left to deliver.
    Idle,
    /// An event failed; the shop is due again then (wall-clock ms).
    RetryAt(u64),
    /// It delivered its share; more may be waiting.
    More,
}

/// One walk over the shops.
#[derive(Debug, Default)]
struct Scan {
    /// Where the walk is (an outbox key to start after), `None` at the start.
    after: Option<Vec<u8>>,
    /// Events not yet done, so far.
    lag: u64,
    /// The earliest retry due among the shops passed, wall-clock ms.
    earliest_due_ms: Option<u64>,
}

/// What one step of a walk found.
enum ScanStep {
    /// The walk is over.
    Done,
    /// A shop with nothing due.
    Nothing,
    /// A shop with an event due.
    Due(ShopId),
}

/// The task delivering one sink's events.
struct Dispatcher {
    sink: Arc<Sink>,
    storage: Arc<dyn Storage>,
    wake: Arc<Notify>,
}

impl Dispatcher {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let sink = self.sink.clone();
        tracing::info!(sink = %sink.name, "event sink started");
        let mut jobs: JoinSet<(ShopId, Result<JobOutcome, StorageError>)> = JoinSet::new();
        // Shops with a job running, and by task (to find the shop of a job that panicked): at
        // most `concurrency`.
        let mut in_flight: HashSet<ShopId> = HashSet::new();
        let mut job_shops: HashMap<tokio::task::Id, ShopId> = HashMap::new();
        // Shops the walk passed while their job ran: looked at again when it ends. A subset of
        // `in_flight`.
        let mut recheck: HashSet<ShopId> = HashSet::new();
        let mut scan: Option<Scan> = None;
        // Walk once at start: rows committed before a crash or while no sink ran.
        let mut rescan = true;
        let mut wake_at = Instant::now() + RESCAN_INTERVAL;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if scan.is_none() && rescan {
                rescan = false;
                scan = Some(Scan::default());
            }
            if let Some(walk) = scan.as_mut() {
                let mut steps = 0;
                while jobs.len() < sink.concurrency && steps < SCAN_STEP_SHOPS {
                    steps += 1;
                    match self.scan_step(walk, &in_flight, &mut recheck) {
                        Ok(ScanStep::Done) => {
                            metrics::gauge!("piazza_sink_lag_events", "sink" => sink.name.clone())
                                .set(walk.lag as f64);
                            // `min`: a job may have asked for an earlier wake-up during the walk.
                            if let Some(due) = walk.earliest_due_ms {
                                wake_at = wake_at.min(instant_at(due));
                            }
                            scan = None;
                            break;
                        }
                        Ok(ScanStep::Nothing) => {}
                        Ok(ScanStep::Due(shop)) => {
                            self.spawn_job(&mut jobs, &mut in_flight, &mut job_shops, shop);
                        }
                        Err(e) => {
                            tracing::warn!(sink = %sink.name, error = %e, "cannot read the outbox; retrying");
                            scan = None;
                            wake_at = wake_at.min(Instant::now() + STORAGE_RETRY);
                            break;
                        }
                    }
                }
            }
            // Continue a walk that stopped only to look around (not because every slot is busy).
            let walking = scan.is_some() && jobs.len() < sink.concurrency;
            // Biased: shutdown first; then finished jobs, which free slots the walk may need.
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(joined) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                    let (shop, outcome) = match joined {
                        Ok((id, (shop, outcome))) => {
                            job_shops.remove(&id);
                            (shop, outcome)
                        }
                        Err(e) => {
                            // A job panicked: its shop is found again by the next walk.
                            tracing::error!(sink = %sink.name, error = %e, "delivery job failed");
                            if let Some(shop) = job_shops.remove(&e.id()) {
                                in_flight.remove(&shop);
                                recheck.remove(&shop);
                            }
                            wake_at = wake_at.min(Instant::now() + STORAGE_RETRY);
                            continue;
                        }
                    };
                    in_flight.remove(&shop);
                    let again = recheck.remove(&shop);
                    match outcome {
                        Ok(JobOutcome::More) => {
                            // Back of the line: the next walk reaches it after the others.
                            rescan = true;
                        }
                        Ok(JobOutcome::Idle) if again => {
                            self.spawn_job(&mut jobs, &mut in_flight, &mut job_shops, shop);
                        }
                        Ok(JobOutcome::Idle) => {}
                        Ok(JobOutcome::RetryAt(at_ms)) => wake_at = wake_at.min(instant_at(at_ms)),
                        Err(e) => {
                            tracing::warn!(sink = %sink.name, error = %e, "delivery state not saved; retrying");
                            wake_at = wake_at.min(Instant::now() + STORAGE_RETRY);
                        }
                    }
                }
                () = self.wake.notified() => rescan = true,
                () = tokio::time::sleep_until(wake_at) => {
                    rescan = true;
                    wake_at = Instant::now() + RESCAN_INTERVAL;
                }
                () = tokio::task::yield_now(), if walking => {}
            }
        }
        // Attempts in flight are abandoned: each was recorded before it was made (or is
        // deduplicated downstream), so the next start sends it again.
        jobs.shutdown().await;
        tracing::info!(sink = %sink.name, "event sink stopped");
    }

    fn spawn_job(
        &self,
        jobs: &mut JoinSet<(ShopId, Result<JobOutcome, StorageError>)>,
        in_flight: &mut HashSet<ShopId>,
        job_shops: &mut HashMap<tokio::task::Id, ShopId>,
        shop: ShopId,
    ) {
        let sink = self.sink.clone();
        let storage = self.storage.clone();
        in_flight.insert(shop.clone());
        let job_shop = shop.clone();
        let handle = jobs.spawn(async move {
            let outcome = deliver_shop(&sink, storage.as_ref(), &job_shop).await;
            (job_shop, outcome)
        });
        job_shops.insert(handle.id(), shop);
    }

    /// Looks at the next shop of the walk.
    fn scan_step(
        &self,
        walk: &mut Scan,
        in_flight: &HashSet<ShopId>,
        recheck: &mut HashSet<ShopId>,
    ) -> Result<ScanStep, StorageError> {
        let storage = self.storage.as_ref();
        let shop = match &self.sink.shop {
            Some(shop) => {
                if walk.after.is_some() {
                    return Ok(ScanStep::Done);
                }
                shop.clone()
            }
            None => {
                let (rows, _) = storage.kv_scan(KvTable::Outbox, b"", walk.after.as_deref(), 1)?;
                let Some((key, _)) = rows.first() else {
                    return Ok(ScanStep::Done);
                };
                outbox::split_key(key)?.0
            }
        };
        walk.after = Some(outbox::past_shop_key(&shop));
        let last = outbox::last_outbox_seq(storage, &shop)?;
        let cursor = read_cursor(storage, &self.sink.name, &shop)?;
        if last < cursor.next {
            return Ok(ScanStep::Nothing);
        }
        walk.lag += last - cursor.next + 1;
        if in_flight.contains(&shop) {
            recheck.insert(shop);
            return Ok(ScanStep::Nothing);
        }
        if cursor.attempts > 0 && cursor.next_at_ms > now_ms() {
            walk.earliest_due_ms = Some(
                walk.earliest_due_ms
                    .map_or(cursor.next_at_ms, |due| due.min(cursor.next_at_ms)),
            );
            return Ok(ScanStep::Nothing);
        }
        Ok(ScanStep::Due(shop))
    }
}

/// Delivers `shop`'s due events in order, until one fails, none are left, or
/// [`JOB_EVENTS_MAX`] were handled.
async fn deliver_shop(
    sink: &Sink,
    storage: &dyn Storage,
    shop: &ShopId,
) -> Result<JobOutcome, StorageError> {
    let name = sink.name.as_str();
    let prefix = outbox::shop_prefix(shop);
    let mut cursor = read_cursor(storage, name, shop)?;
    // Whether `cursor` moved past what is stored.
    let mut unsaved = false;
    let mut handled = 0;
    loop {
        if handled >= JOB_EVENTS_MAX {
            if unsaved {
                commit(storage, vec![cursor_write(name, shop, &cursor)]).await?;
            }
            return Ok(JobOutcome::More);
        }
        let after = (cursor.next > 1).then(|| outbox::outbox_key(shop, cursor.next - 1));
        let (rows, _) = storage.kv_scan(
            KvTable::Outbox,
            &prefix,
            after.as_deref(),
            JOB_EVENTS_MAX - handled,
        )?;
        if rows.is_empty() {
            if unsaved {
                commit(storage, vec![cursor_write(name, shop, &cursor)]).await?;
            }
            return Ok(JobOutcome::Idle);
        }
        for (key, body) in rows {
            handled += 1;
            let (_, seq) = outbox::split_key(&key)?;
            if seq != cursor.next {
                // Seqs are gap-free; should one be missing, deliver what is there.
                cursor = ShopCursor::at(seq);
                unsaved = true;
            }
            let event_type = envelope_type(&body);
            let Some(event_type) = event_type else {
                tracing::error!(sink = name, shop = %shop, seq, "outbox row is not an event envelope; marking it dead");
                let dead = dead_write(
                    sink,
                    shop,
                    seq,
                    "?",
                    &cursor,
                    now_ms(),
                    "corrupt outbox row",
                );
                cursor = ShopCursor::at(seq + 1);
                commit(storage, vec![dead, cursor_write(name, shop, &cursor)]).await?;
                unsaved = false;
                continue;
            };
            if sink
                .event_types
                .as_ref()
                .is_some_and(|types| !types.contains(event_type.as_str()))
            {
                cursor = ShopCursor::at(seq + 1);
                unsaved = true;
                continue;
            }
            if cursor.attempts > 0 && cursor.next_at_ms > now_ms() {
                if unsaved {
                    commit(storage, vec![cursor_write(name, shop, &cursor)]).await?;
                }
                return Ok(JobOutcome::RetryAt(cursor.next_at_ms));
            }
            let attempt = cursor.attempts.saturating_add(1);
            let started_ms = now_ms();
            let mut attempting = ShopCursor {
                next: seq,
                attempts: attempt,
                first_attempt_ms: if cursor.attempts == 0 {
                    started_ms
                } else {
                    cursor.first_attempt_ms
                },
                // If the node stops during the attempt, the next start retries after a backoff.
                next_at_ms: started_ms + sink.policy.delay_ms(attempt, crate::node::random_u64()),
                last_error: cursor.last_error.clone(),
            };
            if sink.record_attempts {
                // Also saves the cursor moves before it (every arm below sets `unsaved`).
                commit(storage, vec![cursor_write(name, shop, &attempting)]).await?;
            }
            let delivery = Delivery {
                shop,
                id: outbox::event_id(shop, seq),
                event_type: &event_type,
                body: &body,
                attempt,
                redelivery: attempt > 1,
            };
            let result = sink.transport.deliver(&delivery).await;
            let now = now_ms();
            match result {
                Ok(()) => {
                    metrics::counter!("piazza_sink_deliveries_total", "sink" => name.to_owned(), "outcome" => "delivered")
                        .increment(1);
                    cursor = ShopCursor::at(seq + 1);
                    if sink.record_attempts {
                        // Saved with the next attempt's record, or when the job ends.
                        unsaved = true;
                    } else {
                        commit(storage, vec![cursor_write(name, shop, &cursor)]).await?;
                        unsaved = false;
                    }
                }
                Err(error)
                    if now.saturating_sub(attempting.first_attempt_ms)
                        >= sink.policy.max_age_ms =>
                {
                    metrics::counter!("piazza_sink_deliveries_total", "sink" => name.to_owned(), "outcome" => "dead")
                        .increment(1);
                    metrics::counter!("piazza_sink_dead_total", "sink" => name.to_owned())
                        .increment(1);
                    tracing::error!(
                        sink = name, shop = %shop, seq, attempts = attempt, %error,
                        "event given up after its maximum age; it is kept as dead in the sinks table"
                    );
                    let dead = dead_write(sink, shop, seq, &event_type, &attempting, now, &error);
                    cursor = ShopCursor::at(seq + 1);
                    commit(storage, vec![dead, cursor_write(name, shop, &cursor)]).await?;
                    unsaved = false;
                }
                Err(error) => {
                    metrics::counter!("piazza_sink_deliveries_total", "sink" => name.to_owned(), "outcome" => "failed")
                        .increment(1);
                    attempting.next_at_ms =
                        now + sink.policy.delay_ms(attempt, crate::node::random_u64());
                    attempting.last_error = truncate(&error, LAST_ERROR_BYTES_MAX);
                    tracing::warn!(
                        sink = name, shop = %shop, seq, attempt, %error,
                        retry_in_ms = attempting.next_at_ms - now, "event delivery failed"
                    );
                    commit(storage, vec![cursor_write(name, shop, &attempting)]).await?;
                    return Ok(JobOutcome::RetryAt(attempting.next_at_ms));
                }
            }
        }
    }
}

/// The `type` of an envelope, if it is one.
fn envelope_type(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(value.get("type")?.as_str()?.to_owned())
}

fn dead_write(
    sink: &Sink,
    shop: &ShopId,
    seq: u64,
    event_type: &str,
    state: &ShopCursor,
    now: u64,
    error: &str,
) -> Write {
    let mut key = dead_prefix(&sink.name, shop);
    key.extend_from_slice(&seq.to_be_bytes());
    let value = serde_json::json!({
        "id": outbox::event_id(shop, seq),
        "type": event_type,
        "attempts": state.attempts,
        "first_attempt_ms": state.first_attempt_ms,
        "dead_ms": now,
        "last_error": truncate(error, LAST_ERROR_BYTES_MAX),
    });
    Write::Put {
        table: KvTable::Sinks,
        key,
        value: value.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests;
