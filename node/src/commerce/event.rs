//! What the core tells its caller: [`CommerceEvent`]s (facts, for the outbox, the event sinks
//! and the order messages both sides see) and [`Effects`] (events plus the requests to send to
//! the payment provider).

use piazza_protocol::{Money, UserId};

use super::actor::Actor;
use super::ids::{CouponCode, OrderId, PaymentId, RefundId};
use super::payment::{PaymentPlan, ProviderRequest};

/// A fact about an order, recorded with the state change that produced it. Each happens at most
/// once per order (per payment, per refund): a repeated command, a duplicate notification or a
/// replayed sync produces none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CommerceEvent {
    /// A customer sent a cart; its stock is reserved and its coupon redeemed.
    OrderPlaced {
        order: OrderId,
        customer: UserId,
        /// Lines in the order.
        lines: u32,
        /// Before the coupon.
        subtotal: Money,
        /// What the coupon took off (zero without one).
        discount: Money,
        /// What the customer pays.
        total: Money,
    },
    /// The order's units were reserved.
    StockReserved { order: OrderId },
    /// The order's reserved units went back to the free stock.
    StockReleased { order: OrderId },
    /// The order's units were sold.
    StockCommitted { order: OrderId },
    /// A paid order was cancelled before shipping: its units are back on hand.
    StockRestored { order: OrderId },
    /// A coupon was redeemed for the order.
    CouponRedeemed {
        order: OrderId,
        code: CouponCode,
        discount: Money,
    },
    /// The order was closed unpaid or cancelled: the coupon's redemption was given back.
    CouponReleased { order: OrderId, code: CouponCode },
    /// Staff accepted the order.
    OrderAccepted { order: OrderId, by: Actor },
    /// Staff rejected the order.
    OrderRejected {
        order: OrderId,
        by: Actor,
        reason: String,
    },
    /// The customer (or staff) chose how to pay; the order awaits payment.
    PaymentRequested {
        order: OrderId,
        plan: PaymentPlan,
        total: Money,
    },
    /// The provider authorized a payment (money held, not taken).
    PaymentAuthorized {
        order: OrderId,
        payment: PaymentId,
        attempt: u32,
        amount: Money,
    },
    /// The provider captured a payment (money taken).
    PaymentSucceeded {
        order: OrderId,
        payment: PaymentId,
        attempt: u32,
        amount: Money,
    },
    /// The provider declined or failed an authorization or capture; nothing is held.
    PaymentFailed {
        order: OrderId,
        payment: PaymentId,
        attempt: u32,
    },
    /// An authorization was released without capture.
    PaymentVoided {
        order: OrderId,
        payment: PaymentId,
        attempt: u32,
    },
    /// The order is paid (in full, or its first instalment): it can be fulfilled.
    OrderPaid { order: OrderId },
    /// Staff shipped (or handed over) the order.
    OrderFulfilled {
        order: OrderId,
        by: Actor,
        tracking: Option<String>,
    },
    /// The order arrived.
    OrderDelivered { order: OrderId, by: Actor },
    /// The order is done.
    OrderCompleted { order: OrderId, by: Actor },
    /// The order was cancelled; held money is released and captured money refunded.
    OrderCancelled {
        order: OrderId,
        by: Actor,
        reason: String,
    },
    /// The order was not paid in time; its stock and coupon were released.
    OrderExpired { order: OrderId },
    /// A refund was asked of the provider.
    RefundRequested {
        order: OrderId,
        payment: PaymentId,
        refund: RefundId,
        amount: Money,
    },
    /// The provider refunded money.
    RefundIssued {
        order: OrderId,
        payment: PaymentId,
        refund: RefundId,
        amount: Money,
    },
    /// The provider could not refund; the amount is refundable again.
    RefundFailed {
        order: OrderId,
        payment: PaymentId,
        refund: RefundId,
        amount: Money,
    },
    /// Everything the customer paid was refunded and nothing more will be charged.
    OrderRefunded { order: OrderId },
}

impl CommerceEvent {
    /// A stable name for metrics, logs and webhook event types (never carries ids).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            CommerceEvent::OrderPlaced { .. } => "OrderPlaced",
            CommerceEvent::StockReserved { .. } => "StockReserved",
            CommerceEvent::StockReleased { .. } => "StockReleased",
            CommerceEvent::StockCommitted { .. } => "StockCommitted",
            CommerceEvent::StockRestored { .. } => "StockRestored",
            CommerceEvent::CouponRedeemed { .. } => "CouponRedeemed",
            CommerceEvent::CouponReleased { .. } => "CouponReleased",
            CommerceEvent::OrderAccepted { .. } => "OrderAccepted",
            CommerceEvent::OrderRejected { .. } => "OrderRejected",
            CommerceEvent::PaymentRequested { .. } => "PaymentRequested",
            CommerceEvent::PaymentAuthorized { .. } => "PaymentAuthorized",
            CommerceEvent::PaymentSucceeded { .. } => "PaymentSucceeded",
            CommerceEvent::PaymentFailed { .. } => "PaymentFailed",
            CommerceEvent::PaymentVoided { .. } => "PaymentVoided",
            CommerceEvent::OrderPaid { .. } => "OrderPaid",
            CommerceEvent::OrderFulfilled { .. } => "OrderFulfilled",
            CommerceEvent::OrderDelivered { .. } => "OrderDelivered",
            CommerceEvent::OrderCompleted { .. } => "OrderCompleted",
            CommerceEvent::OrderCancelled { .. } => "OrderCancelled",
            CommerceEvent::OrderExpired { .. } => "OrderExpired",
            CommerceEvent::RefundRequested { .. } => "RefundRequested",
            CommerceEvent::RefundIssued { .. } => "RefundIssued",
            CommerceEvent::RefundFailed { .. } => "RefundFailed",
            CommerceEvent::OrderRefunded { .. } => "OrderRefunded",
        }
    }

    /// The order the event is about.
    pub(crate) fn order(&self) -> &OrderId {
        match self {
            CommerceEvent::OrderPlaced { order, .. }
            | CommerceEvent::StockReserved { order }
            | CommerceEvent::StockReleased { order }
            | CommerceEvent::StockCommitted { order }
            | CommerceEvent::StockRestored { order }
            | CommerceEvent::CouponRedeemed { order, .. }
            | CommerceEvent::CouponReleased { order, .. }
            | CommerceEvent::OrderAccepted { order, .. }
            | CommerceEvent::OrderRejected { order, .. }
            | CommerceEvent::PaymentRequested { order, .. }
            | CommerceEvent::PaymentAuthorized { order, .. }
            | CommerceEvent::PaymentSucceeded { order, .. }
            | CommerceEvent::PaymentFailed { order, .. }
            | CommerceEvent::PaymentVoided { order, .. }
            | CommerceEvent::OrderPaid { order }
            | CommerceEvent::OrderFulfilled { order, .. }
            | CommerceEvent::OrderDelivered { order, .. }
            | CommerceEvent::OrderCompleted { order, .. }
            | CommerceEvent::OrderCancelled { order, .. }
            | CommerceEvent::OrderExpired { order }
            | CommerceEvent::RefundRequested { order, .. }
            | CommerceEvent::RefundIssued { order, .. }
            | CommerceEvent::RefundFailed { order, .. }
            | CommerceEvent::OrderRefunded { order } => order,
        }
    }
}

/// What one call into the core produced. The caller persists the new state together with
/// `events` (one transaction, into the outbox), then sends `requests` to the payment provider —
/// each carries an idempotency key, so sending one again after a crash is safe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Effects {
    pub(crate) events: Vec<CommerceEvent>,
    pub(crate) requests: Vec<ProviderRequest>,
    /// True when these are the stored effects of an earlier command with the same command id:
    /// nothing changed now, and the events were already recorded (do not record them twice).
    pub(crate) replayed: bool,
}

impl Effects {
    /// No events, no requests.
    pub(crate) fn none() -> Effects {
        Effects::default()
    }

    pub(crate) fn event(&mut self, event: CommerceEvent) {
        self.events.push(event);
    }

    pub(crate) fn request(&mut self, request: ProviderRequest) {
        self.requests.push(request);
    }

    pub(crate) fn extend(&mut self, other: Effects) {
        self.events.extend(other.events);
        self.requests.extend(other.requests);
    }
}
