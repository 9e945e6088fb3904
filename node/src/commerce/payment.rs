//! Payments of one order: a plan (in full, or N instalments on a schedule), one tracked
//! [`Payment`] per instalment, the requests to send to the provider, and the application of the
//! provider's answers.
//!
//! **One payment** moves like this (`code` = a local step, which returns a request; plain = the
//! provider's answer, by notification or snapshot):
//!
//! | from | on | to |
//! |---|---|---|
//! | Scheduled, Failed, Voided | `authorize` (a new attempt, if any are left) | Authorizing |
//! | Authorizing | Authorized | Authorized |
//! | Authorized | `capture` (the whole authorization) | Capturing |
//! | Capturing | Captured | Captured |
//! | Authorizing, Capturing, Voiding | Failed | Failed |
//! | Authorizing, Authorized | `stop` | Voiding |
//! | Voiding | Voided | Voided |
//! | Scheduled, Failed | `stop` | Cancelled |
//! | Captured | `refund`, Refunded, RefundFailed | Captured (refund amounts move) |
//!
//! A snapshot may move several steps at once (authorized and captured), or report what the
//! provider did on its own (an authorization that lapsed: Voided; a refund made in its
//! dashboard). A voided payment may be tried again like a declined one while its order is open.
//!
//! Local steps (`authorize`, `capture`, `stop`, `refund`) only *ask*: they return a
//! [`ProviderRequest`] and move to an "-ing" state; money moves in the core's view only when the
//! provider confirms, by a [`Notification`] or by a [`Snapshot`] the caller fetched.
//!
//! **Attempts.** A declined authorization is final for that attempt; trying again is a new
//! attempt with a new idempotency key ([`idempotency_key`]: order, instalment, operation,
//! attempt), so the provider never answers a retry with the old decline, while a resend of the
//! same request (after a crash or a timeout) has the same key and is deduplicated by the provider.
//!
//! **Notifications** are applied only as the next step of the local state. A duplicate (same
//! provider event id) or a stale one (an older provider sequence) changes nothing; one that
//! restates the current state changes nothing; one that contradicts it (a capture that was never
//! asked for, an amount that differs, a refund Piazza does not know) yields
//! [`Handled::NeedsSync`]: the caller asks the provider for the payment's [`Snapshot`] instead of
//! trusting the payload. Signature checks happen in the adapter before anything gets here.
//!
//! **Invariants** (checked by the property tests): `captured <= authorized <= amount`; a capture
//! is only asked for an authorized payment; refunds succeeded plus refunds in flight never exceed
//! `captured`; captured and refunded amounts never decrease; every transition happens at most
//! once.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use piazza_protocol::{Currency, Money};

use super::error::Error;
use super::event::{CommerceEvent, Effects};
use super::ids::{ID_BYTES_MAX, OrderId, PaymentId, ProviderEventId, RefundId};
pub(crate) use piazza_protocol::commerce::PaymentPlan;

/// Most instalments of one order. Buy-now-pay-later plans run 2–12 months.
pub(crate) const INSTALMENTS_MAX: u32 = 12;
/// Shortest time between two instalments (a day); schedules are in days or months.
pub(crate) const INSTALMENT_INTERVAL_MS_MIN: u64 = 24 * 60 * 60 * 1000;
/// Most authorization attempts per payment: a customer whose card is declined five times
/// should talk to the shop, and a provider sees no card-testing loop through us.
pub(crate) const ATTEMPTS_MAX: u32 = 5;
/// Most refunds per payment (Piazza's and ones made at the provider). Each partial refund is a
/// provider call and a line in the order's history; 20 covers returns item by item.
pub(crate) const REFUNDS_MAX: usize = 20;
/// Provider event ids remembered per payment to answer duplicates as [`Handled::Duplicate`].
/// Forgetting an old one is safe: a redelivered notification is then judged against the state
/// (stale, or a restatement), which never applies a transition twice.
pub(crate) const SEEN_EVENTS_MAX: usize = 32;

/// Longest idempotency key: `piazza:` + order id + instalment + operation + refund number +
/// attempt. Stripe accepts 255 characters.
pub(crate) const IDEMPOTENCY_KEY_BYTES_MAX: usize = 7 + ID_BYTES_MAX + 1 + 10 + 1 + 9 + 10 + 1 + 10;
const _: () = assert!(IDEMPOTENCY_KEY_BYTES_MAX <= 255);

/// Where one payment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PaymentStatus {
    /// A later instalment, not yet due (or the plan was just created).
    Scheduled,
    /// Authorization asked for; the provider has not decided.
    Authorizing,
    /// Money held on the customer's means of payment.
    Authorized,
    /// Capture asked for.
    Capturing,
    /// Money taken. Refunds apply from here.
    Captured,
    /// Release of the authorization asked for.
    Voiding,
    /// Authorization released (or the intent cancelled before it was authorized): asked for by
    /// Piazza, or a lapse at the provider. Like a decline, another attempt may follow.
    Voided,
    /// The attempt was declined or failed; nothing is held. Another attempt may follow.
    Failed,
    /// Never charged and never will be: the plan was stopped (order cancelled, fully refunded).
    Cancelled,
}

/// Where one refund is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum RefundStatus {
    /// Asked for (or reported pending by the provider).
    Requested,
    /// Money returned.
    Succeeded,
    /// The provider could not refund; the amount is refundable again.
    Failed,
}

/// One refund of a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refund {
    pub(crate) id: RefundId,
    /// The number Piazza gave its own refund (its id is `<payment>#r<n>`); `None` for a refund
    /// made at the provider, which Piazza never sends.
    pub(crate) number: Option<u32>,
    pub(crate) amount: Money,
    pub(crate) status: RefundStatus,
}

/// An operation on a payment, as named in its idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PaymentOp {
    Authorize,
    Capture,
    Void,
    /// The `n`th refund Piazza asks for on this payment (from 1).
    Refund(u32),
}

impl fmt::Display for PaymentOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaymentOp::Authorize => f.write_str("authorize"),
            PaymentOp::Capture => f.write_str("capture"),
            PaymentOp::Void => f.write_str("void"),
            PaymentOp::Refund(n) => write!(f, "refund-{n}"),
        }
    }
}

/// The idempotency key of one provider request: a pure function of the order, the instalment
/// (from 1), the operation and the attempt, so a resend after a crash carries the same key and
/// a new attempt a new one. Example: `piazza:o-17:1:authorize:2`.
pub(crate) fn idempotency_key(
    order: &OrderId,
    instalment: u32,
    op: PaymentOp,
    attempt: u32,
) -> String {
    format!("piazza:{order}:{instalment}:{op}:{attempt}")
}

/// What to ask the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Create (or confirm) a payment intent for `amount`, to be authorized.
    Authorize { amount: Money },
    /// Capture the whole authorized amount.
    Capture { amount: Money },
    /// Release the authorization, or cancel the intent before it is authorized.
    Void,
    /// Refund `amount` of the captured money under `refund`'s id.
    Refund { refund: RefundId, amount: Money },
}

/// A request for the payment provider. The adapter sends it with `idempotency_key` and feeds the
/// provider's answer back as a [`Notification`] (or asks for a [`Snapshot`] when unsure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProviderRequest {
    pub(crate) order: OrderId,
    pub(crate) payment: PaymentId,
    pub(crate) attempt: u32,
    pub(crate) kind: RequestKind,
    pub(crate) idempotency_key: String,
}

/// A verified notification from the provider about one attempt of one payment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Notification {
    /// The provider's id of this notification.
    pub(crate) event: ProviderEventId,
    pub(crate) payment: PaymentId,
    pub(crate) attempt: u32,
    /// The provider's order of events for this attempt (a sequence number, or a timestamp in
    /// ms): an event older than one already applied is stale.
    pub(crate) sequence: u64,
    pub(crate) kind: NotificationKind,
}

/// What the provider says happened.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum NotificationKind {
    Authorized {
        amount: Money,
    },
    /// "Succeeded": the money was captured.
    Captured {
        amount: Money,
    },
    Failed,
    Voided,
    Refunded {
        refund: RefundId,
        amount: Money,
    },
    RefundFailed {
        refund: RefundId,
    },
}

/// The provider's whole view of one attempt of one payment, fetched by the caller (a sync).
/// Trusted, since the caller asked the provider itself, but still checked for consistency and
/// against what was already confirmed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) payment: PaymentId,
    pub(crate) attempt: u32,
    pub(crate) sequence: u64,
    pub(crate) status: SnapshotStatus,
    pub(crate) authorized: Money,
    pub(crate) captured: Money,
    pub(crate) refunds: Vec<RefundSnapshot>,
}

/// The provider's status of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum SnapshotStatus {
    /// Created, not decided (waiting for the customer or the bank).
    Pending,
    Authorized,
    Captured,
    Voided,
    Failed,
}

/// One refund as the provider knows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RefundSnapshot {
    /// Piazza's refund id, or the id the adapter gives a refund made at the provider.
    pub(crate) refund: RefundId,
    pub(crate) amount: Money,
    pub(crate) status: RefundStatus,
}

/// How a notification was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Seen before (same provider event id): nothing changed.
    Duplicate,
    /// Older than what was applied, or about an attempt that was already given up: nothing
    /// changed.
    Stale,
    /// Restates the current state: nothing changed.
    Unchanged,
    /// Contradicts the local state: nothing changed; fetch a [`Snapshot`] of this attempt and
    /// apply it.
    NeedsSync { payment: PaymentId, attempt: u32 },
    /// A transition happened: its events, and requests it made necessary.
    Applied {
        events: Vec<CommerceEvent>,
        requests: Vec<ProviderRequest>,
    },
}

/// One tracked payment: the whole order, or one instalment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Payment {
    order: OrderId,
    id: PaymentId,
    /// From 1.
    number: u32,
    amount: Money,
    due_ms: u64,
    status: PaymentStatus,
    /// 0 before the first authorization.
    attempt: u32,
    /// Confirmed by the provider for the current attempt.
    authorized: Money,
    captured: Money,
    refunds: Vec<Refund>,
    /// Refunds Piazza asked for (numbers their ids and keys).
    refunds_asked: u32,
    last_sequence: Option<u64>,
    seen: VecDeque<ProviderEventId>,
    /// When the next automatic attempt is due (later instalments only).
    retry_at_ms: Option<u64>,
}

impl Payment {
    fn new(order: &OrderId, number: u32, amount: Money, due_ms: u64) -> Payment {
        let zero = Money::new(0, amount.currency());
        Payment {
            order: order.clone(),
            id: PaymentId::new(order, number),
            number,
            amount,
            due_ms,
            status: PaymentStatus::Scheduled,
            attempt: 0,
            authorized: zero,
            captured: zero,
            refunds: Vec::new(),
            refunds_asked: 0,
            last_sequence: None,
            seen: VecDeque::new(),
            retry_at_ms: None,
        }
    }

    pub(crate) fn id(&self) -> &PaymentId {
        &self.id
    }

    /// From 1.
    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    pub(crate) fn amount(&self) -> Money {
        self.amount
    }

    pub(crate) fn due_ms(&self) -> u64 {
        self.due_ms
    }

    pub(crate) fn status(&self) -> PaymentStatus {
        self.status
    }

    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn authorized(&self) -> Money {
        self.authorized
    }

    pub(crate) fn captured(&self) -> Money {
        self.captured
    }

    pub(crate) fn refunds(&self) -> &[Refund] {
        &self.refunds
    }

    pub(crate) fn retry_at_ms(&self) -> Option<u64> {
        self.retry_at_ms
    }

    /// Refunds confirmed by the provider.
    pub(crate) fn refunded(&self) -> Money {
        self.refund_sum(RefundStatus::Succeeded)
    }

    /// Refunds asked for and not yet confirmed.
    pub(crate) fn refunding(&self) -> Money {
        self.refund_sum(RefundStatus::Requested)
    }

    /// What may still be refunded: captured minus refunded minus refunds in flight.
    pub(crate) fn refundable(&self) -> Money {
        let minor = self.captured.minor() - self.refunded().minor() - self.refunding().minor();
        Money::new(minor.max(0), self.amount.currency())
    }

    /// Sets when the next automatic attempt of a declined instalment is due.
    pub(crate) fn schedule_retry(&mut self, at_ms: u64) {
        self.retry_at_ms = Some(at_ms);
    }

    /// Whether another attempt may be made: the last one was declined, or its authorization
    /// was released (a lapsed authorization, or a void) before capture, and attempts are left.
    pub(crate) fn can_retry(&self) -> bool {
        matches!(self.status, PaymentStatus::Failed | PaymentStatus::Voided)
            && self.attempt < ATTEMPTS_MAX
    }

    fn currency(&self) -> Currency {
        self.amount.currency()
    }

    fn zero(&self) -> Money {
        Money::new(0, self.currency())
    }

    fn refund_sum(&self, status: RefundStatus) -> Money {
        let minor = self
            .refunds
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.amount.minor())
            .sum();
        Money::new(minor, self.currency())
    }

    fn request(&self, op: PaymentOp, kind: RequestKind) -> ProviderRequest {
        ProviderRequest {
            order: self.order.clone(),
            payment: self.id.clone(),
            attempt: self.attempt,
            kind,
            idempotency_key: idempotency_key(&self.order, self.number, op, self.attempt),
        }
    }

    /// Starts the first or the next attempt.
    pub(crate) fn authorize(&mut self) -> Result<ProviderRequest, Error> {
        match self.status {
            PaymentStatus::Scheduled => {}
            PaymentStatus::Failed | PaymentStatus::Voided if self.attempt < ATTEMPTS_MAX => {}
            PaymentStatus::Authorizing
            | PaymentStatus::Authorized
            | PaymentStatus::Capturing
            | PaymentStatus::Voiding => return Err(Error::PaymentInProgress),
            PaymentStatus::Failed
            | PaymentStatus::Captured
            | PaymentStatus::Voided
            | PaymentStatus::Cancelled => return Err(Error::NothingToRetry),
        }
        self.attempt += 1;
        self.status = PaymentStatus::Authorizing;
        self.authorized = self.zero();
        self.last_sequence = None;
        self.retry_at_ms = None;
        Ok(self.request(
            PaymentOp::Authorize,
            RequestKind::Authorize {
                amount: self.amount,
            },
        ))
    }

    /// Asks to capture the whole authorization. Only an authorized payment is captured: in any
    /// other status (a capture already asked for included) nothing happens and `None` is
    /// returned, so a capture without authorization cannot be asked for.
    pub(crate) fn capture(&mut self) -> Option<ProviderRequest> {
        if self.status != PaymentStatus::Authorized {
            return None;
        }
        self.status = PaymentStatus::Capturing;
        Some(self.request(
            PaymentOp::Capture,
            RequestKind::Capture {
                amount: self.authorized,
            },
        ))
    }

    /// Stops the payment: an authorization (asked for or granted) is voided, a payment not
    /// started or failed is cancelled. A capture in flight or done is left alone (the caller
    /// refunds captured money). Returns the request to send, if any.
    pub(crate) fn stop(&mut self) -> Option<ProviderRequest> {
        match self.status {
            PaymentStatus::Authorizing | PaymentStatus::Authorized => {
                self.status = PaymentStatus::Voiding;
                Some(self.request(PaymentOp::Void, RequestKind::Void))
            }
            PaymentStatus::Scheduled | PaymentStatus::Failed => {
                self.status = PaymentStatus::Cancelled;
                self.retry_at_ms = None;
                None
            }
            PaymentStatus::Capturing
            | PaymentStatus::Captured
            | PaymentStatus::Voiding
            | PaymentStatus::Voided
            | PaymentStatus::Cancelled => None,
        }
    }

    /// Asks to refund `amount` (at most [`Payment::refundable`]).
    pub(crate) fn refund(&mut self, amount: Money) -> Result<(ProviderRequest, RefundId), Error> {
        if amount.currency() != self.currency() {
            return Err(Error::CurrencyMix {
                expected: self.currency(),
                found: amount.currency(),
            });
        }
        if amount.minor() <= 0 {
            return Err(Error::InvalidField {
                field: "refund amount",
                reason: "must be positive",
            });
        }
        if self.status != PaymentStatus::Captured || amount.minor() > self.refundable().minor() {
            return Err(Error::RefundExceedsRefundable {
                requested: amount,
                refundable: self.refundable(),
            });
        }
        if self.refunds.len() >= REFUNDS_MAX {
            return Err(Error::TooMany {
                what: "refunds of a payment",
                max: REFUNDS_MAX,
            });
        }
        self.refunds_asked += 1;
        let id = RefundId::new(&self.id, self.refunds_asked);
        self.refunds.push(Refund {
            id: id.clone(),
            number: Some(self.refunds_asked),
            amount,
            status: RefundStatus::Requested,
        });
        let request = self.request(
            PaymentOp::Refund(self.refunds_asked),
            RequestKind::Refund {
                refund: id.clone(),
                amount,
            },
        );
        Ok((request, id))
    }

    /// Requests still waiting for the provider's answer, to send again after a restart (same
    /// idempotency keys).
    pub(crate) fn pending_requests(&self) -> Vec<ProviderRequest> {
        let mut requests = Vec::new();
        match self.status {
            PaymentStatus::Authorizing => requests.push(self.request(
                PaymentOp::Authorize,
                RequestKind::Authorize {
                    amount: self.amount,
                },
            )),
            PaymentStatus::Capturing => requests.push(self.request(
                PaymentOp::Capture,
                RequestKind::Capture {
                    amount: self.authorized,
                },
            )),
            PaymentStatus::Voiding => {
                requests.push(self.request(PaymentOp::Void, RequestKind::Void));
            }
            _ => {}
        }
        for refund in &self.refunds {
            if refund.status == RefundStatus::Requested
                && let Some(number) = refund.number
            {
                requests.push(self.request(
                    PaymentOp::Refund(number),
                    RequestKind::Refund {
                        refund: refund.id.clone(),
                        amount: refund.amount,
                    },
                ));
            }
        }
        requests
    }

    fn seen(&self, event: &ProviderEventId) -> bool {
        self.seen.contains(event)
    }

    /// Remembers an applied (or restating) notification: its id, and for a status notification
    /// its sequence. Refund notifications do not move the sequence: each names its refund, so
    /// the refund's own status keeps them from applying twice, and two refunds may well be
    /// reported out of order.
    fn remember(&mut self, n: &Notification, is_refund: bool) {
        self.remember_event_only(n);
        if !is_refund {
            self.last_sequence = Some(self.last_sequence.map_or(n.sequence, |s| s.max(n.sequence)));
        }
    }

    fn event_authorized(&self) -> CommerceEvent {
        CommerceEvent::PaymentAuthorized {
            order: self.order.clone(),
            payment: self.id.clone(),
            attempt: self.attempt,
            amount: self.authorized,
        }
    }

    fn event_captured(&self) -> CommerceEvent {
        CommerceEvent::PaymentSucceeded {
            order: self.order.clone(),
            payment: self.id.clone(),
            attempt: self.attempt,
            amount: self.captured,
        }
    }

    fn event_failed(&self) -> CommerceEvent {
        CommerceEvent::PaymentFailed {
            order: self.order.clone(),
            payment: self.id.clone(),
            attempt: self.attempt,
        }
    }

    fn event_voided(&self) -> CommerceEvent {
        CommerceEvent::PaymentVoided {
            order: self.order.clone(),
            payment: self.id.clone(),
            attempt: self.attempt,
        }
    }

    fn event_refund(&self, refund: &Refund) -> CommerceEvent {
        match refund.status {
            RefundStatus::Succeeded => CommerceEvent::RefundIssued {
                order: self.order.clone(),
                payment: self.id.clone(),
                refund: refund.id.clone(),
                amount: refund.amount,
            },
            RefundStatus::Failed => CommerceEvent::RefundFailed {
                order: self.order.clone(),
                payment: self.id.clone(),
                refund: refund.id.clone(),
                amount: refund.amount,
            },
            RefundStatus::Requested => CommerceEvent::RefundRequested {
                order: self.order.clone(),
                payment: self.id.clone(),
                refund: refund.id.clone(),
                amount: refund.amount,
            },
        }
    }

    /// Applies a verified notification about this payment (see the module docs).
    pub(crate) fn handle(&mut self, n: &Notification) -> Handled {
        if self.seen(&n.event) {
            return Handled::Duplicate;
        }
        let needs_sync = Handled::NeedsSync {
            payment: self.id.clone(),
            attempt: n.attempt,
        };
        let is_refund = matches!(
            n.kind,
            NotificationKind::Refunded { .. } | NotificationKind::RefundFailed { .. }
        );
        if n.attempt > self.attempt || n.attempt == 0 {
            // An attempt Piazza never started.
            return needs_sync;
        }
        if n.attempt < self.attempt && !is_refund {
            // A superseded attempt: Piazza moved on because it failed. Its failure or voiding is
            // old news; money held on it is released at once; money taken on it is for a human.
            return match n.kind {
                NotificationKind::Authorized { .. } => {
                    let old = ProviderRequest {
                        order: self.order.clone(),
                        payment: self.id.clone(),
                        attempt: n.attempt,
                        kind: RequestKind::Void,
                        idempotency_key: idempotency_key(
                            &self.order,
                            self.number,
                            PaymentOp::Void,
                            n.attempt,
                        ),
                    };
                    self.remember_event_only(n);
                    Handled::Applied {
                        events: Vec::new(),
                        requests: vec![old],
                    }
                }
                NotificationKind::Captured { .. } => needs_sync,
                _ => {
                    self.remember_event_only(n);
                    Handled::Stale
                }
            };
        }
        if !is_refund
            && let Some(last) = self.last_sequence
            && n.sequence < last
        {
            self.remember_event_only(n);
            return Handled::Stale;
        }
        let outcome = self.transition(&n.kind);
        match &outcome {
            Handled::Applied { .. } | Handled::Unchanged => self.remember(n, is_refund),
            _ => {}
        }
        outcome
    }

    fn remember_event_only(&mut self, n: &Notification) {
        if self.seen.len() >= SEEN_EVENTS_MAX {
            self.seen.pop_front();
        }
        self.seen.push_back(n.event.clone());
    }

    fn transition(&mut self, kind: &NotificationKind) -> Handled {
        use PaymentStatus as S;
        let needs_sync = Handled::NeedsSync {
            payment: self.id.clone(),
            attempt: self.attempt,
        };
        let applied = |events| Handled::Applied {
            events,
            requests: Vec::new(),
        };
        match kind {
            NotificationKind::Authorized { amount } => match self.status {
                S::Authorizing if *amount == self.amount => {
                    self.status = S::Authorized;
                    self.authorized = *amount;
                    applied(vec![self.event_authorized()])
                }
                S::Authorized | S::Capturing | S::Captured if *amount == self.authorized => {
                    Handled::Unchanged
                }
                // The authorization raced the void; the void settles it.
                S::Voiding | S::Voided if *amount == self.amount => Handled::Unchanged,
                _ => needs_sync,
            },
            NotificationKind::Captured { amount } => match self.status {
                S::Capturing if *amount == self.authorized => {
                    self.status = S::Captured;
                    self.captured = *amount;
                    applied(vec![self.event_captured()])
                }
                S::Captured if *amount == self.captured => Handled::Unchanged,
                // Before the authorization was seen, never asked for, or after a void or a
                // failure: the payload alone is not enough to believe money moved.
                _ => needs_sync,
            },
            NotificationKind::Failed => match self.status {
                S::Authorizing | S::Capturing | S::Voiding => {
                    self.status = S::Failed;
                    self.authorized = self.zero();
                    applied(vec![self.event_failed()])
                }
                // Failed and voided both mean nothing is held.
                S::Failed | S::Voided | S::Cancelled => Handled::Unchanged,
                _ => needs_sync,
            },
            NotificationKind::Voided => match self.status {
                S::Voiding => {
                    self.status = S::Voided;
                    self.authorized = self.zero();
                    applied(vec![self.event_voided()])
                }
                S::Voided | S::Failed | S::Cancelled => Handled::Unchanged,
                // A void Piazza did not ask for (the authorization lapsed?): ask.
                _ => needs_sync,
            },
            NotificationKind::Refunded { refund, amount } => {
                let Some(index) = self.refunds.iter().position(|r| &r.id == refund) else {
                    // A refund made at the provider: the sync will add it.
                    return needs_sync;
                };
                let known = &self.refunds[index];
                if known.amount != *amount {
                    return needs_sync;
                }
                match known.status {
                    RefundStatus::Requested => {
                        self.refunds[index].status = RefundStatus::Succeeded;
                        applied(vec![self.event_refund(&self.refunds[index])])
                    }
                    RefundStatus::Succeeded => Handled::Unchanged,
                    RefundStatus::Failed => needs_sync,
                }
            }
            NotificationKind::RefundFailed { refund } => {
                let Some(index) = self.refunds.iter().position(|r| &r.id == refund) else {
                    return needs_sync;
                };
                match self.refunds[index].status {
                    RefundStatus::Requested => {
                        self.refunds[index].status = RefundStatus::Failed;
                        applied(vec![self.event_refund(&self.refunds[index])])
                    }
                    RefundStatus::Failed => Handled::Unchanged,
                    RefundStatus::Succeeded => needs_sync,
                }
            }
        }
    }

    /// Applies the provider's view of this payment. Returns the events of every step it implies
    /// (an authorization and a capture seen at once give both events), or nothing for a stale
    /// snapshot. A snapshot inconsistent in itself or moving confirmed money backwards is refused
    /// whole ([`Error::ProviderInconsistent`]).
    pub(crate) fn apply_snapshot(&mut self, s: &Snapshot) -> Result<Handled, Error> {
        let inconsistent = |reason| Error::ProviderInconsistent {
            payment: self.id.clone(),
            reason,
        };
        if s.payment != self.id {
            return Err(inconsistent("snapshot of another payment"));
        }
        if s.attempt > self.attempt || s.attempt == 0 {
            return Err(inconsistent("snapshot of an attempt never started"));
        }
        self.check_snapshot(s)?;
        if s.attempt < self.attempt {
            // A superseded attempt: release what is held on it; taken money needs a human.
            return match s.status {
                SnapshotStatus::Authorized => Ok(Handled::Applied {
                    events: Vec::new(),
                    requests: vec![ProviderRequest {
                        order: self.order.clone(),
                        payment: self.id.clone(),
                        attempt: s.attempt,
                        kind: RequestKind::Void,
                        idempotency_key: idempotency_key(
                            &self.order,
                            self.number,
                            PaymentOp::Void,
                            s.attempt,
                        ),
                    }],
                }),
                SnapshotStatus::Captured => {
                    Err(inconsistent("money captured on a superseded attempt"))
                }
                _ => Ok(Handled::Stale),
            };
        }
        if let Some(last) = self.last_sequence
            && s.sequence < last
        {
            return Ok(Handled::Stale);
        }
        // Confirmed money never goes back.
        let regressed = match s.status {
            SnapshotStatus::Captured => false,
            _ => self.status == PaymentStatus::Captured,
        } || (self.status == PaymentStatus::Voided
            && matches!(
                s.status,
                SnapshotStatus::Authorized | SnapshotStatus::Captured
            ))
            || (matches!(
                self.status,
                PaymentStatus::Authorized | PaymentStatus::Capturing
            ) && s.status == SnapshotStatus::Pending);
        if regressed {
            return Err(inconsistent("status went backwards"));
        }
        for local in &self.refunds {
            let remote = s.refunds.iter().find(|r| r.refund == local.id);
            let backwards = match (local.status, remote.map(|r| r.status)) {
                (RefundStatus::Succeeded, Some(RefundStatus::Succeeded)) => false,
                (RefundStatus::Succeeded, _) => true,
                (RefundStatus::Failed, Some(RefundStatus::Succeeded)) => true,
                _ => false,
            };
            if backwards || remote.is_some_and(|r| r.amount != local.amount) {
                return Err(inconsistent("a confirmed refund changed"));
            }
        }

        let mut events = Vec::new();
        use PaymentStatus as S;
        match (self.status, s.status) {
            (S::Scheduled, _) => return Err(inconsistent("snapshot of a payment never started")),
            (_, SnapshotStatus::Pending) => {}
            (S::Authorizing | S::Failed | S::Cancelled, SnapshotStatus::Authorized) => {
                self.status = S::Authorized;
                self.authorized = s.authorized;
                events.push(self.event_authorized());
            }
            (_, SnapshotStatus::Authorized) => {}
            (S::Captured, SnapshotStatus::Captured) => {}
            (_, SnapshotStatus::Captured) => {
                // The authorization may not have been seen yet (authorizing, or a void that
                // lost the race against the capture).
                if self.authorized.minor() == 0 {
                    self.authorized = s.authorized;
                    events.push(self.event_authorized());
                }
                self.status = S::Captured;
                self.authorized = s.authorized;
                self.captured = s.captured;
                events.push(self.event_captured());
            }
            (S::Voided | S::Failed | S::Cancelled, SnapshotStatus::Voided) => {}
            (_, SnapshotStatus::Voided) => {
                self.status = S::Voided;
                self.authorized = self.zero();
                events.push(self.event_voided());
            }
            (S::Voided | S::Failed | S::Cancelled, SnapshotStatus::Failed) => {}
            (_, SnapshotStatus::Failed) => {
                self.status = S::Failed;
                self.authorized = self.zero();
                events.push(self.event_failed());
            }
        }

        for remote in &s.refunds {
            match self.refunds.iter().position(|r| r.id == remote.refund) {
                Some(i) => {
                    if self.refunds[i].status == RefundStatus::Requested
                        && remote.status != RefundStatus::Requested
                    {
                        self.refunds[i].status = remote.status;
                        events.push(self.event_refund(&self.refunds[i]));
                    }
                }
                None if remote.status == RefundStatus::Failed => {}
                None => {
                    // A refund made at the provider. Room for it was checked with the snapshot.
                    let refund = Refund {
                        id: remote.refund.clone(),
                        number: None,
                        amount: remote.amount,
                        status: remote.status,
                    };
                    if refund.status == RefundStatus::Succeeded {
                        events.push(self.event_refund(&refund));
                    }
                    self.refunds.push(refund);
                }
            }
        }
        // Piazza's own refunds the provider has not heard of yet are resent later; if the
        // provider's refunds leave no room for them, they can never succeed: fail them, newest
        // first, so refunded plus refunding never exceeds captured.
        while self.refunded().minor() + self.refunding().minor() > self.captured.minor() {
            let Some(i) = self.refunds.iter().rposition(|r| {
                r.status == RefundStatus::Requested
                    && !s.refunds.iter().any(|remote| remote.refund == r.id)
            }) else {
                break;
            };
            self.refunds[i].status = RefundStatus::Failed;
            events.push(self.event_refund(&self.refunds[i]));
        }
        self.last_sequence = Some(s.sequence);
        Ok(Handled::Applied {
            events,
            requests: Vec::new(),
        })
    }

    /// Checks a snapshot for consistency in itself.
    fn check_snapshot(&self, s: &Snapshot) -> Result<(), Error> {
        let inconsistent = |reason| Error::ProviderInconsistent {
            payment: self.id.clone(),
            reason,
        };
        let currency = self.currency();
        if s.authorized.currency() != currency
            || s.captured.currency() != currency
            || s.refunds.iter().any(|r| r.amount.currency() != currency)
        {
            return Err(inconsistent("currency differs"));
        }
        let (a, c) = (s.authorized.minor(), s.captured.minor());
        if a < 0 || c < 0 || c > a || a > self.amount.minor() {
            return Err(inconsistent("amounts out of range"));
        }
        let consistent = match s.status {
            SnapshotStatus::Pending | SnapshotStatus::Voided | SnapshotStatus::Failed => c == 0,
            SnapshotStatus::Authorized => a == self.amount.minor() && c == 0,
            SnapshotStatus::Captured => a == self.amount.minor() && c == a,
        };
        if !consistent {
            return Err(inconsistent("status and amounts disagree"));
        }
        if s.status != SnapshotStatus::Captured && !s.refunds.is_empty() {
            return Err(inconsistent("refunds of money not captured"));
        }
        if s.refunds.len() > REFUNDS_MAX {
            return Err(inconsistent("too many refunds"));
        }
        let ids: BTreeSet<&RefundId> = s.refunds.iter().map(|r| &r.refund).collect();
        if ids.len() != s.refunds.len() || s.refunds.iter().any(|r| r.amount.minor() <= 0) {
            return Err(inconsistent("malformed refunds"));
        }
        let outstanding: i64 = s
            .refunds
            .iter()
            .filter(|r| r.status != RefundStatus::Failed)
            .map(|r| r.amount.minor())
            .sum();
        if outstanding > c {
            return Err(inconsistent("refunds exceed the captured amount"));
        }
        Ok(())
    }
}

/// The payments of one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderPayments {
    plan: PaymentPlan,
    total: Money,
    parts: Vec<Payment>,
    /// Set when the plan is stopped (order closed, or everything refunded): nothing more is
    /// charged, and money that arrives anyway is given back.
    stopped: bool,
}

impl OrderPayments {
    /// The payments of `order` for `total` under `plan`, the first due at `now_ms`.
    pub(crate) fn new(
        order: &OrderId,
        total: Money,
        plan: PaymentPlan,
        now_ms: u64,
    ) -> Result<OrderPayments, Error> {
        if total.minor() <= 0 {
            return Err(Error::InvalidField {
                field: "total",
                reason: "a payment needs a positive amount",
            });
        }
        let parts = match plan {
            PaymentPlan::Full => vec![Payment::new(order, 1, total, now_ms)],
            PaymentPlan::Instalments { count, interval_ms } => {
                if !(2..=INSTALMENTS_MAX).contains(&count) {
                    return Err(Error::InvalidField {
                        field: "instalments",
                        reason: "must be 2..=12",
                    });
                }
                if interval_ms < INSTALMENT_INTERVAL_MS_MIN {
                    return Err(Error::InvalidField {
                        field: "instalment interval",
                        reason: "must be at least a day",
                    });
                }
                let n = i64::from(count);
                if total.minor() < n {
                    return Err(Error::InvalidField {
                        field: "instalments",
                        reason: "more instalments than minor units",
                    });
                }
                let each = total.minor() / n;
                let first = each + total.minor() % n;
                let mut parts = Vec::new();
                for k in 0..count {
                    let amount = if k == 0 { first } else { each };
                    let offset = interval_ms
                        .checked_mul(u64::from(k))
                        .ok_or(Error::AmountOverflow)?;
                    let due = now_ms.checked_add(offset).ok_or(Error::AmountOverflow)?;
                    parts.push(Payment::new(
                        order,
                        k + 1,
                        Money::new(amount, total.currency()),
                        due,
                    ));
                }
                parts
            }
        };
        Ok(OrderPayments {
            plan,
            total,
            parts,
            stopped: false,
        })
    }

    pub(crate) fn plan(&self) -> PaymentPlan {
        self.plan
    }

    pub(crate) fn total(&self) -> Money {
        self.total
    }

    pub(crate) fn parts(&self) -> &[Payment] {
        &self.parts
    }

    pub(crate) fn part(&self, id: &PaymentId) -> Option<&Payment> {
        self.parts.iter().find(|p| &p.id == id)
    }

    pub(crate) fn part_mut(&mut self, id: &PaymentId) -> Option<&mut Payment> {
        self.parts.iter_mut().find(|p| &p.id == id)
    }

    /// The first payment (the whole order, or its first instalment).
    pub(crate) fn first(&self) -> Option<&Payment> {
        self.parts.first()
    }

    pub(crate) fn first_mut(&mut self) -> Option<&mut Payment> {
        self.parts.first_mut()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Sum over the payments.
    fn sum(&self, f: impl Fn(&Payment) -> Money) -> Money {
        let minor = self.parts.iter().map(|p| f(p).minor()).sum();
        Money::new(minor, self.total.currency())
    }

    pub(crate) fn captured(&self) -> Money {
        self.sum(Payment::captured)
    }

    pub(crate) fn refunded(&self) -> Money {
        self.sum(Payment::refunded)
    }

    pub(crate) fn refunding(&self) -> Money {
        self.sum(Payment::refunding)
    }

    pub(crate) fn refundable(&self) -> Money {
        self.sum(Payment::refundable)
    }

    /// Whether some payment may still be charged (not stopped and not captured or cancelled; a
    /// declined or voided one that may be retried counts).
    pub(crate) fn outstanding(&self) -> bool {
        !self.stopped
            && self.parts.iter().any(|p| match p.status {
                PaymentStatus::Scheduled
                | PaymentStatus::Authorizing
                | PaymentStatus::Authorized
                | PaymentStatus::Capturing => true,
                PaymentStatus::Failed | PaymentStatus::Voided => p.can_retry(),
                _ => false,
            })
    }

    /// Whether no money is on its way: no authorization asked for or held, no capture in flight
    /// (a void in flight takes nothing).
    pub(crate) fn at_rest(&self) -> bool {
        self.parts.iter().all(|p| {
            !matches!(
                p.status,
                PaymentStatus::Authorizing | PaymentStatus::Authorized | PaymentStatus::Capturing
            )
        })
    }

    /// Whether everything captured was refunded and nothing more will be taken: the order is
    /// refunded.
    pub(crate) fn fully_refunded(&self) -> bool {
        self.captured().minor() > 0
            && self.refunded() == self.captured()
            && self.refunding().minor() == 0
            && !self.outstanding()
            && self.at_rest()
    }

    /// Stops the plan: voids authorizations, cancels what was not charged. Captures in flight
    /// finish; the caller refunds captured money.
    pub(crate) fn stop(&mut self) -> Vec<ProviderRequest> {
        self.stopped = true;
        self.parts.iter_mut().filter_map(Payment::stop).collect()
    }

    /// Refunds `amount`, taking it from the newest captured payments first (the last
    /// instalments paid are returned first). All or nothing.
    pub(crate) fn refund(&mut self, amount: Money) -> Result<Effects, Error> {
        if amount.currency() != self.total.currency() {
            return Err(Error::CurrencyMix {
                expected: self.total.currency(),
                found: amount.currency(),
            });
        }
        if amount.minor() <= 0 {
            return Err(Error::InvalidField {
                field: "refund amount",
                reason: "must be positive",
            });
        }
        let refundable = self.refundable();
        if amount.minor() > refundable.minor() {
            return Err(Error::RefundExceedsRefundable {
                requested: amount,
                refundable,
            });
        }
        // Plan the split first so that a refund-count limit leaves nothing half done.
        let mut rest = amount.minor();
        let mut split = Vec::new();
        for (i, part) in self.parts.iter().enumerate().rev() {
            if rest == 0 {
                break;
            }
            let take = part.refundable().minor().min(rest);
            if take > 0 {
                if part.refunds.len() >= REFUNDS_MAX {
                    return Err(Error::TooMany {
                        what: "refunds of a payment",
                        max: REFUNDS_MAX,
                    });
                }
                split.push((i, take));
                rest -= take;
            }
        }
        let mut out = Effects::none();
        for (i, take) in split {
            let part = &mut self.parts[i];
            let money = Money::new(take, part.currency());
            let (request, refund) = part.refund(money)?;
            out.events.push(CommerceEvent::RefundRequested {
                order: part.order.clone(),
                payment: part.id.clone(),
                refund,
                amount: money,
            });
            out.requests.push(request);
        }
        Ok(out)
    }

    /// Requests still waiting for the provider, to resend after a restart.
    pub(crate) fn pending_requests(&self) -> Vec<ProviderRequest> {
        self.parts
            .iter()
            .flat_map(Payment::pending_requests)
            .collect()
    }
}
