//! The order state machine: statuses, commands, who may issue them, and the per-order command
//! log that makes every command idempotent. [`super::shop::Shop`] applies commands, because a
//! transition also moves stock, coupons and payments.
//!
//! ```text
//! placed ─accept─► accepted ─request payment─► awaiting payment ─first capture─► paid
//! paid ─fulfil─► fulfilled ─mark delivered─► delivered ─complete─► completed
//! placed ─reject─► rejected
//! placed, accepted, awaiting payment ─cancel─► cancelled     (or, past the deadline, expired)
//! paid ─cancel (owner, manager)─► cancelled
//! paid … completed ─everything refunded, nothing more to charge─► refunded
//! ```
//!
//! Final statuses: rejected, cancelled, expired (the *closed* ones: not served), completed and
//! refunded. A completed order may still be refunded, and a closed one too: money that reaches
//! a closed order is refunded automatically, and staff retry a refund that failed.
//!
//! | command | who | from |
//! |---|---|---|
//! | accept, reject | any staff | placed |
//! | request payment (choose the plan) | the customer, any staff | accepted |
//! | retry payment (declined, lapsed) | the customer, any staff | awaiting payment, paid … completed |
//! | cancel | the customer, any staff | placed, accepted, awaiting payment |
//! | cancel | owner, manager | paid (not yet shipped) |
//! | fulfil | any staff | paid |
//! | mark delivered | the customer, any staff, the system | fulfilled |
//! | complete | the customer, any staff, the system | delivered |
//! | refund (partial or full) | owner, manager | paid … completed, rejected, cancelled, expired |
//!
//! Expiry is not a command: [`super::shop::Shop::tick`] expires unpaid orders past their
//! deadline. Payment and refund confirmations come from the provider, not from commands.
//!
//! **Idempotency.** Each command carries a [`CommandId`]. The order keeps the effects of every
//! command it applied: the same id with the same command (and actor) returns those effects
//! again, marked `replayed`, and changes nothing; the same id with another command is
//! [`Error::CommandIdReused`]. A refused command is not recorded, so it is judged afresh when
//! retried. A different id with a command the order already took is judged by the state machine
//! (accepting an accepted order is [`Error::InvalidTransition`]).

use std::collections::BTreeMap;

use piazza_protocol::{Money, UserId};

use super::actor::{Actor, StaffRole};
use super::catalog::{Item, PricedItem};
use super::error::Error;
use super::event::Effects;
use super::ids::{CommandId, CouponCode, OrderId};
use super::payment::{OrderPayments, PaymentStatus};
pub(crate) use piazza_protocol::commerce::{OrderCommand, OrderStatus};

/// Most commands one order records. The state machine bounds them: one per forward transition,
/// at most [`super::payment::ATTEMPTS_MAX`] retries per instalment and one refund per
/// [`super::payment::REFUNDS_MAX`] refund slot; 64 is above any honest sequence.
pub(crate) const COMMANDS_PER_ORDER_MAX: usize = 64;
/// Longest rejection or cancellation reason in bytes.
pub(crate) const REASON_BYTES_MAX: usize = 500;
/// Longest tracking reference (carrier and number, or a URL) in bytes.
pub(crate) const TRACKING_BYTES_MAX: usize = 300;

/// What a command id was used for: a replay must match it exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fingerprint {
    /// Placement of explicit items.
    Place {
        actor: Actor,
        items: Vec<Item>,
        coupon: Option<CouponCode>,
    },
    /// Placement of the customer's cart.
    Checkout {
        actor: Actor,
        coupon: Option<CouponCode>,
    },
    /// A command on the order.
    Command { actor: Actor, command: OrderCommand },
}

/// One order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Order {
    pub(super) id: OrderId,
    pub(super) customer: UserId,
    pub(super) lines: Vec<PricedItem>,
    pub(super) subtotal: Money,
    pub(super) discount: Money,
    pub(super) total: Money,
    pub(super) coupon: Option<CouponCode>,
    pub(super) status: OrderStatus,
    pub(super) placed_ms: u64,
    /// When an unpaid order expires.
    pub(super) expires_ms: u64,
    pub(super) updated_ms: u64,
    pub(super) tracking: Option<String>,
    /// `None` until a payment plan is chosen (and for orders with nothing to pay).
    pub(super) payments: Option<OrderPayments>,
    pub(super) log: BTreeMap<CommandId, (Fingerprint, Effects)>,
}

impl Order {
    pub(crate) fn id(&self) -> &OrderId {
        &self.id
    }

    pub(crate) fn customer(&self) -> &UserId {
        &self.customer
    }

    pub(crate) fn lines(&self) -> &[PricedItem] {
        &self.lines
    }

    /// Before the coupon.
    pub(crate) fn subtotal(&self) -> Money {
        self.subtotal
    }

    pub(crate) fn discount(&self) -> Money {
        self.discount
    }

    /// What the customer pays.
    pub(crate) fn total(&self) -> Money {
        self.total
    }

    pub(crate) fn coupon(&self) -> Option<&CouponCode> {
        self.coupon.as_ref()
    }

    pub(crate) fn status(&self) -> OrderStatus {
        self.status
    }

    pub(crate) fn placed_ms(&self) -> u64 {
        self.placed_ms
    }

    pub(crate) fn expires_ms(&self) -> u64 {
        self.expires_ms
    }

    pub(crate) fn updated_ms(&self) -> u64 {
        self.updated_ms
    }

    pub(crate) fn tracking(&self) -> Option<&str> {
        self.tracking.as_deref()
    }

    pub(crate) fn payments(&self) -> Option<&OrderPayments> {
        self.payments.as_ref()
    }

    /// Whether the first payment's capture is with the provider right now.
    pub(crate) fn capture_in_flight(&self) -> bool {
        self.payments
            .as_ref()
            .and_then(OrderPayments::first)
            .is_some_and(|p| p.status() == PaymentStatus::Capturing)
    }

    /// The stored effects of `command_id` if it was used with `fingerprint`; an error if it was
    /// used for something else; `None` if it is new.
    pub(super) fn replay(
        &self,
        command_id: &CommandId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Effects>, Error> {
        match self.log.get(command_id) {
            Some((logged, effects)) if logged == fingerprint => Ok(Some(Effects {
                replayed: true,
                ..effects.clone()
            })),
            Some(_) => Err(Error::CommandIdReused(command_id.clone())),
            None => Ok(None),
        }
    }

    /// Records a command's effects under its id.
    pub(super) fn record(
        &mut self,
        command_id: CommandId,
        fingerprint: Fingerprint,
        effects: &Effects,
    ) {
        self.log.insert(command_id, (fingerprint, effects.clone()));
    }

    /// Refuses a new command once the log is full.
    pub(super) fn check_log_room(&self) -> Result<(), Error> {
        if self.log.len() >= COMMANDS_PER_ORDER_MAX {
            return Err(Error::TooMany {
                what: "commands on an order",
                max: COMMANDS_PER_ORDER_MAX,
            });
        }
        Ok(())
    }
}

/// Whether `actor` may issue `command` on `order`, and whether the order's status allows it.
/// Checks, in order: a customer acts only on their own orders; the actor's kind may issue this
/// command at all ([`Error::Forbidden`]); the status allows it ([`Error::InvalidTransition`]);
/// the status allows it *for this actor* (only owners and managers cancel a paid order).
pub(crate) fn authorize(actor: &Actor, order: &Order, command: &OrderCommand) -> Result<(), Error> {
    use OrderCommand as C;
    if let Actor::Customer(user) = actor
        && user != &order.customer
    {
        return Err(Error::Forbidden {
            action: "act on another customer's order",
        });
    }
    let managers = [StaffRole::Owner, StaffRole::Manager];
    let may_issue = match command {
        C::Accept | C::Reject { .. } | C::Fulfil { .. } => actor.is_staff(),
        C::RequestPayment { .. } | C::RetryPayment | C::Cancel { .. } => {
            !matches!(actor, Actor::System)
        }
        C::MarkDelivered | C::Complete => true,
        C::Refund { .. } => actor.is_staff_in(&managers),
    };
    if !may_issue {
        return Err(Error::Forbidden {
            action: command.name(),
        });
    }
    check_transition(order.status, command)?;
    if matches!(command, C::Cancel { .. })
        && !order.status.is_unpaid()
        && !actor.is_staff_in(&managers)
    {
        return Err(Error::Forbidden {
            action: "cancel a paid order",
        });
    }
    Ok(())
}

/// Whether the state machine allows `command` in `status` (see the module table).
pub(crate) fn check_transition(status: OrderStatus, command: &OrderCommand) -> Result<(), Error> {
    use OrderCommand as C;
    use OrderStatus as S;
    let allowed = match command {
        C::Accept | C::Reject { .. } => status == S::Placed,
        C::RequestPayment { .. } => status == S::Accepted,
        C::RetryPayment => status == S::AwaitingPayment || status.is_paid(),
        C::Cancel { .. } => status.is_unpaid() || status == S::Paid,
        C::Fulfil { .. } => status == S::Paid,
        C::MarkDelivered => status == S::Fulfilled,
        C::Complete => status == S::Delivered,
        // Closed orders too: money that reached them is refunded automatically, and if that
        // refund fails staff must be able to try again.
        C::Refund { .. } => status.is_paid() || status.is_closed(),
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::InvalidTransition {
            status,
            command: command.name(),
        })
    }
}
