//! The commerce core: pure domain logic of shops — catalog and stock, carts, the order state
//! machine, payments, coupons, promotions with consent and quotas.
//!
//! **Sans-IO.** Nothing here does I/O, reads a clock, draws a random number or spawns a task.
//! Callers pass the time (`now_ms`) and every id (order ids and command ids come from clients;
//! payment and refund ids are derived from them). Every call is deterministic: the same calls in
//! the same order give the same state and the same effects. The module is tested like a state
//! machine, without a runtime (`tests/`: unit tests per concept, property tests against reference
//! models and a simulated payment provider).
//!
//! **Model.** One [`Shop`] value holds a shop's whole commerce state:
//!
//! * [`catalog`] — catalogs, categories, products and variants, prices with offers and sales
//!   periods, stock with per-order reservations (all-or-nothing, never oversold);
//! * [`cart`] — one server-side cart per customer;
//! * [`order`] — the order state machine, who may issue which command, the per-order command log;
//! * [`payment`] — the payments of an order (in full or in instalments), provider requests with
//!   deterministic idempotency keys, provider notifications and syncs;
//! * [`coupon`] — codes with windows and limits, redeemed atomically per order;
//! * [`promo`] — consent per (customer, scope), segments, rolling quotas, audiences;
//! * [`shop`] — [`Shop`], which applies order commands together with what they imply for
//!   stock, coupons and money;
//! * [`event`] — [`CommerceEvent`] and [`Effects`]; [`actor`] — [`Actor`], roles, permissions;
//!   [`ids`] — typed ids; [`error`] — [`Error`] and its one mapping to the wire's `ErrorCode`.
//!
//! **How the shop actor uses it** (the actor is the next piece of work; nothing calls this yet):
//!
//! 1. On activation, rebuild the [`Shop`] from storage. The state types are deliberately not
//!    `Serialize`: either replay the stored inputs (commands, notifications, syncs, ticks,
//!    catalog edits — each with the `now_ms` it was applied at; determinism makes the replay
//!    exact) or give the state an explicit row encoding in `storage/`.
//! 2. For each request: the session authenticated the user; resolve their staff role into an
//!    [`Actor`], check [`Actor::require`] before catalog, coupon and promotion edits, and call
//!    the core with `now_ms`. A refused call returns an [`Error`] and changed nothing; answer
//!    with `ErrorCode::from(&error)`.
//! 3. On success, persist the new state and the returned [`CommerceEvent`]s in one commit (the
//!    outbox), reply, post the order message update into the customer↔shop conversation, then
//!    hand `Effects::requests` to the payments adapter in a task (never inside `handle`), each
//!    with its idempotency key. Replayed effects (`Effects::replayed`) were already persisted
//!    and sent: just answer with them.
//! 4. Feed verified provider notifications to [`Shop::handle_notification`]; on
//!    [`Notified::NeedsSync`], fetch that payment attempt from the provider and pass it to
//!    [`Shop::apply_snapshot`]. After a restart, resend [`Shop::pending_requests`].
//! 5. Keep a timer at [`Shop::next_deadline_ms`] and call [`Shop::tick`] when it fires (expiry
//!    of unpaid orders, instalments, retries).
//! 6. For a promotion: [`Promotions::audience`] when it starts, then [`Promotions::deliver`]
//!    right before handing it to each customer's conversation — consent and quota are checked
//!    at that moment, so an opt-out stops promotions already on their way.
//! 7. [`Shop::archive`] final orders once stored, to bound memory.
//!
//! [`Shop`]: shop::Shop
//! [`Shop::handle_notification`]: shop::Shop::handle_notification
//! [`Shop::apply_snapshot`]: shop::Shop::apply_snapshot
//! [`Shop::pending_requests`]: shop::Shop::pending_requests
//! [`Shop::next_deadline_ms`]: shop::Shop::next_deadline_ms
//! [`Shop::tick`]: shop::Shop::tick
//! [`Shop::archive`]: shop::Shop::archive
//! [`Notified::NeedsSync`]: shop::Notified::NeedsSync
//! [`CommerceEvent`]: event::CommerceEvent
//! [`Effects`]: event::Effects
//! [`Actor`]: actor::Actor
//! [`Actor::require`]: actor::Actor::require
//! [`Error`]: error::Error
//! [`Promotions::audience`]: promo::Promotions::audience
//! [`Promotions::deliver`]: promo::Promotions::deliver

pub(crate) mod actor;
pub(crate) mod cart;
pub(crate) mod catalog;
pub(crate) mod coupon;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod ids;
pub(crate) mod order;
pub(crate) mod payment;
pub(crate) mod promo;
pub(crate) mod shop;

#[cfg(test)]
mod tests;
