//! The built-in `sandbox` provider: an in-process stand-in for a card processor, with the
//! behaviour of a real one.
//!
//! * **Asynchronous.** [`SandboxProvider::send`] validates and records a request and answers at
//!   once (`Ok(vec![])`); a settlement task applies it `latency_ms` (+ jitter) later and then
//!   delivers the notification into the inbound queue.
//! * **Idempotent.** A request is recorded under its idempotency key; the same key again gets
//!   the first answer and has no second effect, and the same key with different parameters is
//!   refused, like Stripe.
//! * **Honest state.** Each payment attempt (one "payment intent") has a status, the amounts
//!   authorized and captured, its refunds and a `sequence` that grows by one with every change;
//!   notifications carry the sequence of the change they report and
//!   [`SandboxProvider::fetch`] returns the attempt's current state with the current sequence.
//! * **Refusals like a provider's.** Capturing an attempt that is not authorized, voiding a
//!   captured one, refunding more than was captured (counting refunds in flight) or refunding
//!   twice under one refund id is [`ProviderError::Rejected`]; an attempt it never saw is
//!   [`ProviderError::NotFound`].
//! * **Declines.** An authorization of an amount whose minor units end in `02` (10.02 EUR, 302
//!   JPY) is always declined, like a test card; besides, every `decline_every`th authorization
//!   and `decline_per_mille` of them at random.
//! * **Misdelivery.** Seeded: `duplicate_per_mille` of notifications arrive twice (same event
//!   id), `late_per_mille` arrive `late_ms` late, `reorder_per_mille` are held back until the
//!   next notification of the same attempt was delivered (or `late_ms`, if none follows). Every
//!   notification is still delivered at least once.
//!
//! Given a seed and the same requests in the same order, the outcomes are the same. There are
//! no webhooks: notifications go straight into the inbound queue, so [`SandboxProvider`]'s
//! `verify` refuses every delivery.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use axum::http::HeaderMap;
use piazza_protocol::Money;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::{BoxFuture, Inbound, PaymentProvider, PaymentsSection, ProviderError};
use crate::commerce::ids::{PaymentId, ProviderEventId, RefundId, ShopId};
use crate::commerce::payment::{
    Notification, NotificationKind, ProviderRequest, REFUNDS_MAX, RefundSnapshot, RefundStatus,
    RequestKind, Snapshot, SnapshotStatus,
};

/// The sandbox's knobs (see `PaymentsSection`'s `sandbox_*` keys for their meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SandboxConfig {
    /// Seed of every random choice.
    pub(crate) seed: u64,
    /// Delay from a request to its settlement and notification.
    pub(crate) latency_ms: u64,
    /// Up to this much added at random to settlements and deliveries.
    pub(crate) jitter_ms: u64,
    /// Every `n`th authorization is declined (0: never).
    pub(crate) decline_every: u32,
    /// Authorizations declined at random, per mille.
    pub(crate) decline_per_mille: u32,
    /// Notifications delivered twice, per mille.
    pub(crate) duplicate_per_mille: u32,
    /// Notifications held back behind the next one of their attempt, per mille.
    pub(crate) reorder_per_mille: u32,
    /// Notifications delivered late, per mille.
    pub(crate) late_per_mille: u32,
    /// How late a late (or held back) notification is.
    pub(crate) late_ms: u64,
}

impl SandboxConfig {
    /// The sandbox keys of the `[payments]` section.
    pub(crate) fn from_section(section: &PaymentsSection) -> SandboxConfig {
        SandboxConfig {
            seed: section.sandbox_seed,
            latency_ms: section.sandbox_latency_ms,
            jitter_ms: section.sandbox_jitter_ms,
            decline_every: section.sandbox_decline_every,
            decline_per_mille: section.sandbox_decline_per_mille,
            duplicate_per_mille: section.sandbox_duplicate_per_mille,
            reorder_per_mille: section.sandbox_reorder_per_mille,
            late_per_mille: section.sandbox_late_per_mille,
            late_ms: section.sandbox_late_ms,
        }
    }
}

/// The sandbox provider. Dropping it stops its settlement task (timers still pending are
/// dropped with it).
#[derive(Debug)]
pub(crate) struct SandboxProvider {
    shared: Arc<Shared>,
    /// Wakes the settlement task: a timer was added, or the provider is gone.
    wake: Arc<Notify>,
}

impl SandboxProvider {
    /// Starts the sandbox and its settlement task, which delivers notifications into
    /// `inbound`. Fails outside a tokio runtime.
    pub(crate) fn start(
        config: SandboxConfig,
        inbound: mpsc::Sender<Inbound>,
    ) -> anyhow::Result<SandboxProvider> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("start the payment sandbox: {e}"))?;
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::new(config.seed)),
        });
        let wake = Arc::new(Notify::new());
        runtime.spawn(settle_and_deliver(
            Arc::downgrade(&shared),
            wake.clone(),
            inbound,
        ));
        Ok(SandboxProvider { shared, wake })
    }

    fn handle_send(
        &self,
        shop: &ShopId,
        request: &ProviderRequest,
    ) -> Result<Vec<Notification>, ProviderError> {
        let mut state = self.shared.lock();
        if let Some(recorded) = state.keys.get(&request.idempotency_key) {
            if recorded.shop != *shop || recorded.request != *request {
                return Err(ProviderError::Rejected(
                    "idempotency key reused with different parameters".into(),
                ));
            }
            return recorded
                .outcome
                .clone()
                .map(|()| Vec::new())
                .map_err(Refusal::into_error);
        }
        if state.timers.len() >= SANDBOX_TIMERS_MAX {
            // Like a provider's 429: not recorded, so a retry with the same key is applied.
            return Err(ProviderError::Transient(
                "sandbox busy: too many requests in flight".into(),
            ));
        }
        let outcome = state.accept(&self.shared.config, shop, request, Instant::now());
        // An unknown attempt may be one whose authorization is still on its way: like a 404,
        // it is not recorded, so the same key works once the attempt exists. Refusals are
        // final and recorded, like a provider's 400.
        if !matches!(outcome, Err(Refusal::NotFound)) {
            state.record(shop, request, outcome.clone());
        }
        drop(state);
        self.wake.notify_one();
        outcome.map(|()| Vec::new()).map_err(Refusal::into_error)
    }

    fn handle_fetch(
        &self,
        shop: &ShopId,
        payment: &PaymentId,
        attempt: u32,
    ) -> Result<Snapshot, ProviderError> {
        let state = self.shared.lock();
        let found = state
            .attempts
            .get(&(payment.clone(), attempt))
            .filter(|a| a.shop == *shop)
            .ok_or(ProviderError::NotFound)?;
        Ok(Snapshot {
            payment: payment.clone(),
            attempt,
            sequence: found.sequence,
            status: found.status,
            authorized: found.authorized,
            captured: found.captured,
            refunds: found.refunds.clone(),
        })
    }
}

impl Drop for SandboxProvider {
    fn drop(&mut self) {
        // A stored permit: the task wakes even if it is not waiting yet, finds the state gone
        // and ends.
        self.wake.notify_one();
    }
}

impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn send<'a>(
        &'a self,
        shop: &'a ShopId,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<Vec<Notification>, ProviderError>> {
        Box::pin(async move { self.handle_send(shop, request) })
    }

    fn fetch<'a>(
        &'a self,
        shop: &'a ShopId,
        payment: &'a PaymentId,
        attempt: u32,
    ) -> BoxFuture<'a, Result<Snapshot, ProviderError>> {
        Box::pin(async move { self.handle_fetch(shop, payment, attempt) })
    }

    fn verify(
        &self,
        _headers: &HeaderMap,
        _body: &[u8],
        _now_ms: u64,
    ) -> Result<Vec<Inbound>, ProviderError> {
        Err(ProviderError::Malformed(
            "the sandbox sends no webhooks: its notifications are delivered in-process".into(),
        ))
    }
}

/// Payment attempts the sandbox remembers; beyond it the oldest is forgotten (a fetch of it is
/// then `NotFound`). Each is a few hundred bytes; 65,536 covers days of a busy demo.
pub(crate) const SANDBOX_ATTEMPTS_MAX: usize = 65_536;
/// Idempotency keys remembered, oldest forgotten first. A payment uses a handful of keys, so
/// this covers at least the attempts remembered.
pub(crate) const SANDBOX_KEYS_MAX: usize = 4 * SANDBOX_ATTEMPTS_MAX;
/// Settlements and deliveries pending at once. A request is refused as `Transient` when this
/// many are pending; each settlement becomes at most two deliveries (one and a duplicate), so
/// the timer heap never holds more than twice this.
pub(crate) const SANDBOX_TIMERS_MAX: usize = 16_384;
/// Timers handled per turn of the settlement task before it yields, so one burst cannot starve
/// the runtime's other tasks.
const DRAIN_BATCH_MAX: usize = 256;

const _: () = assert!(SANDBOX_KEYS_MAX >= SANDBOX_ATTEMPTS_MAX);

/// What the provider and its settlement task share.
#[derive(Debug)]
struct Shared {
    config: SandboxConfig,
    /// Never held across an `.await`: every use is a short synchronous section.
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a bug) leaves state that is still well formed: every
        // section updates it in steps that are each complete. Keep going rather than poison
        // every later payment call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One payment attempt, as the provider knows it.
#[derive(Debug)]
struct Attempt {
    shop: ShopId,
    /// The amount asked for at authorization.
    amount: Money,
    status: SnapshotStatus,
    authorized: Money,
    captured: Money,
    refunds: Vec<RefundSnapshot>,
    /// Grows by one with every change; 0 when created.
    sequence: u64,
    /// A capture or a void accepted but not yet settled.
    in_flight: Option<Step>,
}

type AttemptKey = (PaymentId, u32);

/// Why a request was refused, as recorded under its idempotency key.
#[derive(Clone, Debug)]
enum Refusal {
    NotFound,
    Rejected(String),
}

impl Refusal {
    fn into_error(self) -> ProviderError {
        match self {
            Refusal::NotFound => ProviderError::NotFound,
            Refusal::Rejected(reason) => ProviderError::Rejected(reason),
        }
    }
}

/// A request seen under an idempotency key, and the answer it got.
#[derive(Debug)]
struct Recorded {
    shop: ShopId,
    request: ProviderRequest,
    outcome: Result<(), Refusal>,
}

/// A state change to apply when its settlement is due.
#[derive(Clone, Debug)]
enum Step {
    Authorize { decline: bool },
    Capture { amount: Money },
    Void,
    Refund { refund: RefundId },
}

#[derive(Debug)]
enum Action {
    Settle {
        key: AttemptKey,
        step: Step,
    },
    /// Deliver a notification. A `held` one waits for the next delivery of its attempt (its
    /// timer is the fallback).
    Deliver {
        inbound: Inbound,
        attempt: u32,
        held: bool,
    },
}

#[derive(Debug)]
struct Timer {
    at: Instant,
    /// Breaks ties in creation order, so equal deadlines fire deterministically.
    id: u64,
    action: Action,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Timer) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Timer) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest timer first.
    fn cmp(&self, other: &Timer) -> Ordering {
        (other.at, other.id).cmp(&(self.at, self.id))
    }
}

#[derive(Debug)]
struct State {
    attempts: HashMap<AttemptKey, Attempt>,
    /// Creation order of `attempts`, to forget the oldest.
    attempt_order: VecDeque<AttemptKey>,
    keys: HashMap<String, Recorded>,
    /// Creation order of `keys`.
    key_order: VecDeque<String>,
    timers: BinaryHeap<Timer>,
    rng: SplitMix64,
    /// Numbers timers and events.
    next_id: u64,
    /// Authorizations accepted, for `decline_every`.
    authorizations: u64,
}

impl State {
    fn new(seed: u64) -> State {
        State {
            attempts: HashMap::new(),
            attempt_order: VecDeque::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
            timers: BinaryHeap::new(),
            rng: SplitMix64(seed),
            next_id: 0,
            authorizations: 0,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn schedule(&mut self, at: Instant, action: Action) {
        let id = self.next_id();
        self.timers.push(Timer { at, id, action });
    }

    fn jitter(&mut self, config: &SandboxConfig) -> Duration {
        Duration::from_millis(self.rng.below(config.jitter_ms.saturating_add(1)))
    }

    fn record(&mut self, shop: &ShopId, request: &ProviderRequest, outcome: Result<(), Refusal>) {
        if self.keys.len() >= SANDBOX_KEYS_MAX
            && let Some(oldest) = self.key_order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        self.key_order.push_back(request.idempotency_key.clone());
        self.keys.insert(
            request.idempotency_key.clone(),
            Recorded {
                shop: shop.clone(),
                request: request.clone(),
                outcome,
            },
        );
    }

    /// Validates a new request like a provider would and schedules its settlement.
    fn accept(
        &mut self,
        config: &SandboxConfig,
        shop: &ShopId,
        request: &ProviderRequest,
        now: Instant,
    ) -> Result<(), Refusal> {
        let key = (request.payment.clone(), request.attempt);
        let step = match &request.kind {
            RequestKind::Authorize { amount } => {
                if self.attempts.contains_key(&key) {
                    return Err(Refusal::Rejected(
                        "this payment attempt already has a payment intent".into(),
                    ));
                }
                if amount.minor() <= 0 {
                    return Err(Refusal::Rejected("amount must be positive".into()));
                }
                self.authorizations += 1;
                let every = u64::from(config.decline_every);
                let decline = amount.minor().rem_euclid(100) == DECLINED_MINOR_ENDING
                    || (every > 0 && self.authorizations.is_multiple_of(every))
                    || self.rng.chance(config.decline_per_mille);
                if self.attempts.len() >= SANDBOX_ATTEMPTS_MAX
                    && let Some(oldest) = self.attempt_order.pop_front()
                {
                    self.attempts.remove(&oldest);
                }
                let zero = Money::new(0, amount.currency());
                self.attempts.insert(
                    key.clone(),
                    Attempt {
                        shop: shop.clone(),
                        amount: *amount,
                        status: SnapshotStatus::Pending,
                        authorized: zero,
                        captured: zero,
                        refunds: Vec::new(),
                        sequence: 0,
                        in_flight: None,
                    },
                );
                self.attempt_order.push_back(key.clone());
                Step::Authorize { decline }
            }
            RequestKind::Capture { amount } => {
                let attempt = self.attempt_of(shop, &key)?;
                if attempt.status != SnapshotStatus::Authorized || attempt.in_flight.is_some() {
                    return Err(Refusal::Rejected(format!(
                        "cannot capture a payment intent that is {}",
                        describe(attempt)
                    )));
                }
                if amount.currency() != attempt.amount.currency()
                    || amount.minor() <= 0
                    || amount.minor() > attempt.authorized.minor()
                {
                    return Err(Refusal::Rejected(
                        "amount to capture must be positive and at most the amount authorized"
                            .into(),
                    ));
                }
                attempt.in_flight = Some(Step::Capture { amount: *amount });
                Step::Capture { amount: *amount }
            }
            RequestKind::Void => {
                let attempt = self.attempt_of(shop, &key)?;
                let cancellable = matches!(
                    attempt.status,
                    SnapshotStatus::Pending | SnapshotStatus::Authorized
                );
                if !cancellable || attempt.in_flight.is_some() {
                    return Err(Refusal::Rejected(format!(
                        "cannot cancel a payment intent that is {}",
                        describe(attempt)
                    )));
                }
                attempt.in_flight = Some(Step::Void);
                Step::Void
            }
            RequestKind::Refund { refund, amount } => {
                let attempt = self.attempt_of(shop, &key)?;
                if attempt.status != SnapshotStatus::Captured {
                    return Err(Refusal::Rejected(format!(
                        "cannot refund a payment intent that is {}",
                        describe(attempt)
                    )));
                }
                if attempt.refunds.iter().any(|r| r.refund == *refund) {
                    return Err(Refusal::Rejected(
                        "a refund with this id already exists".into(),
                    ));
                }
                if attempt.refunds.len() >= REFUNDS_MAX {
                    return Err(Refusal::Rejected("too many refunds of this payment".into()));
                }
                let outstanding: i64 = attempt
                    .refunds
                    .iter()
                    .filter(|r| r.status != RefundStatus::Failed)
                    .map(|r| r.amount.minor())
                    .sum();
                if amount.currency() != attempt.captured.currency()
                    || amount.minor() <= 0
                    || outstanding.saturating_add(amount.minor()) > attempt.captured.minor()
                {
                    return Err(Refusal::Rejected(
                        "refund amount must be positive and at most what is left to refund".into(),
                    ));
                }
                attempt.refunds.push(RefundSnapshot {
                    refund: refund.clone(),
                    amount: *amount,
                    status: RefundStatus::Requested,
                });
                Step::Refund {
                    refund: refund.clone(),
                }
            }
        };
        let delay = Duration::from_millis(config.latency_ms) + self.jitter(config);
        self.schedule(now + delay, Action::Settle { key, step });
        Ok(())
    }

    fn attempt_of(&mut self, shop: &ShopId, key: &AttemptKey) -> Result<&mut Attempt, Refusal> {
        self.attempts
            .get_mut(key)
            .filter(|a| a.shop == *shop)
            .ok_or(Refusal::NotFound)
    }

    /// Applies a due settlement and schedules the delivery of what it changed.
    fn settle(&mut self, config: &SandboxConfig, key: AttemptKey, step: Step, now: Instant) {
        // A forgotten attempt (evicted) settles to nothing.
        let Some(attempt) = self.attempts.get_mut(&key) else {
            return;
        };
        let zero = Money::new(0, attempt.amount.currency());
        let kind = match step {
            Step::Authorize { decline } => {
                // A void that settled first wins: the intent was cancelled before the bank
                // answered.
                if attempt.status != SnapshotStatus::Pending {
                    return;
                }
                if decline {
                    attempt.status = SnapshotStatus::Failed;
                    NotificationKind::Failed
                } else {
                    attempt.status = SnapshotStatus::Authorized;
                    attempt.authorized = attempt.amount;
                    NotificationKind::Authorized {
                        amount: attempt.amount,
                    }
                }
            }
            Step::Capture { amount } => {
                attempt.in_flight = None;
                if attempt.status != SnapshotStatus::Authorized {
                    return;
                }
                attempt.status = SnapshotStatus::Captured;
                attempt.captured = amount;
                NotificationKind::Captured { amount }
            }
            Step::Void => {
                attempt.in_flight = None;
                if !matches!(
                    attempt.status,
                    SnapshotStatus::Pending | SnapshotStatus::Authorized
                ) {
                    return;
                }
                attempt.status = SnapshotStatus::Voided;
                attempt.authorized = zero;
                NotificationKind::Voided
            }
            Step::Refund { refund } => {
                let Some(r) = attempt
                    .refunds
                    .iter_mut()
                    .find(|r| r.refund == refund && r.status == RefundStatus::Requested)
                else {
                    return;
                };
                r.status = RefundStatus::Succeeded;
                NotificationKind::Refunded {
                    refund,
                    amount: r.amount,
                }
            }
        };
        attempt.sequence += 1;
        let sequence = attempt.sequence;
        let shop = attempt.shop.clone();
        let id = self.next_id();
        let event = match format!("sbx-evt-{id}").parse::<ProviderEventId>() {
            Ok(event) => event,
            Err(e) => {
                // Cannot happen: the id is ASCII letters, digits and dashes.
                tracing::error!(error = %e, "sandbox made an invalid event id");
                return;
            }
        };
        let (payment, attempt_number) = key;
        let inbound = Inbound {
            shop,
            notification: Notification {
                event,
                payment,
                attempt: attempt_number,
                sequence,
                kind,
            },
        };
        self.schedule_delivery(config, inbound, now);
    }

    fn schedule_delivery(&mut self, config: &SandboxConfig, inbound: Inbound, now: Instant) {
        let late = Duration::from_millis(config.late_ms);
        let mut at = now + self.jitter(config);
        if self.rng.chance(config.late_per_mille) {
            at += late;
        }
        let attempt = inbound.notification.attempt;
        if self.rng.chance(config.duplicate_per_mille) {
            let again = at + Duration::from_millis(config.latency_ms) + self.jitter(config);
            self.schedule(
                again,
                Action::Deliver {
                    inbound: inbound.clone(),
                    attempt,
                    held: false,
                },
            );
        }
        let held = self.rng.chance(config.reorder_per_mille);
        if held {
            at = now + late + Duration::from_millis(config.latency_ms);
        }
        self.schedule(
            at,
            Action::Deliver {
                inbound,
                attempt,
                held,
            },
        );
    }

    /// Takes the held deliveries of one attempt out of the timers, to deliver right after a
    /// later notification of that attempt.
    fn release_held(&mut self, payment: &PaymentId, attempt: u32) -> Vec<Inbound> {
        let mut released = Vec::new();
        self.timers.retain(|timer| match &timer.action {
            Action::Deliver {
                inbound,
                attempt: a,
                held: true,
            } if *a == attempt && inbound.notification.payment == *payment => {
                released.push(inbound.clone());
                false
            }
            _ => true,
        });
        released
    }
}

/// Minor units ending this way are always declined (`amount % 100`), like a test card number.
pub(crate) const DECLINED_MINOR_ENDING: i64 = 2;

fn describe(attempt: &Attempt) -> &'static str {
    match (attempt.status, &attempt.in_flight) {
        (_, Some(Step::Capture { .. })) => "being captured",
        (_, Some(Step::Void)) => "being cancelled",
        (SnapshotStatus::Pending, _) => "not authorized yet",
        (SnapshotStatus::Authorized, _) => "authorized",
        (SnapshotStatus::Captured, _) => "captured",
        (SnapshotStatus::Voided, _) => "cancelled",
        (SnapshotStatus::Failed, _) => "declined",
    }
}

/// The settlement task: applies settlements when due and delivers notifications, until the
/// provider is dropped. Holds the state only through a `Weak`, so dropping the provider frees
/// it.
async fn settle_and_deliver(
    shared: Weak<Shared>,
    wake: Arc<Notify>,
    inbound: mpsc::Sender<Inbound>,
) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let (due, next_at) = {
            let config = strong.config;
            let mut state = strong.lock();
            let now = Instant::now();
            let mut due = Vec::new();
            let mut handled = 0;
            while handled < DRAIN_BATCH_MAX && state.timers.peek().is_some_and(|t| t.at <= now) {
                handled += 1;
                let Some(timer) = state.timers.pop() else {
                    break;
                };
                match timer.action {
                    Action::Settle { key, step } => state.settle(&config, key, step, now),
                    Action::Deliver { inbound, held, .. } => due.push((inbound, held)),
                }
            }
            (due, state.timers.peek().map(|t| t.at))
        };
        let busy = !due.is_empty();
        for (item, held) in due {
            let (payment, attempt) = (item.notification.payment.clone(), item.notification.attempt);
            deliver(&inbound, item).await;
            if !held {
                // Notifications held back for reordering go right after this later one.
                let released = strong.lock().release_held(&payment, attempt);
                for item in released {
                    deliver(&inbound, item).await;
                }
            }
        }
        drop(strong);
        if busy {
            // More may be due already (deliveries scheduled by this turn's settlements).
            tokio::task::yield_now().await;
            continue;
        }
        // Sleep until the next timer, or until a new request (or the provider's drop) wakes us.
        match next_at {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

async fn deliver(inbound: &mpsc::Sender<Inbound>, item: Inbound) {
    // A full queue makes the sandbox wait, like a provider whose webhooks are not answered; a
    // closed one means nobody listens any more: settlement goes on so fetches stay honest.
    if inbound.send(item).await.is_err() {
        tracing::debug!("sandbox notification dropped: inbound queue closed");
    }
}

/// SplitMix64: a tiny seeded PRNG, good enough for choosing outcomes and delays (not for
/// secrets).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    /// The next number.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0). The modulo bias is irrelevant at these sizes.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `per_mille / 1000`; draws nothing when it is 0, so a rate left
    /// at 0 does not change the other choices of a seed.
    pub(crate) fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.below(1000) < u64::from(per_mille)
    }
}
