//! The commerce core: pure domain logic of shops — catalog and stock, carts, the order state
//! machine, payments, coupons, promotions with consent and quotas.
//!
//! **Sans-IO.** Nothing here does I/O, reads a clock, draws a random number or spawns a task.
//! Callers pass the time (`now_ms`) and every id (order ids and command ids come from clients;
//! payment and refund ids are derived from them). Every call is deterministic: the same calls in
//! the same order give the same state and the same [`Effects`](event::Effects). The module is tested like a
//! state machine, without a runtime (`tests/`).
//!
//! **Model.** One [`Shop`](shop::Shop) value holds a shop's whole commerce state:
//!
//! * [`catalog`] — catalogs, categories, products and variants, prices with offers and sales
//!   periods, stock with per-order reservations (all-or-nothing, never oversold);
//! * [`cart`] — one server-side cart per customer;
//! * [`order`] — the order state machine, who may issue which command, per-order command log;
//! * [`payment`] — the payments of an order (in full or in instalments), provider requests with
//!   deterministic idempotency keys, provider notifications and syncs;
//! * [`coupon`] — codes with windows and limits, redeemed atomically per order;
//! * [`promo`] — consent per (customer, scope), segments, rolling quotas, audiences;
//! * [`shop`] — [`Shop`](shop::Shop), which applies order commands together with what they imply for stock,
//!   coupons and money;
//! * [`event`] — [`CommerceEvent`](event::CommerceEvent) and [`Effects`](event::Effects); [`actor`] — [`Actor`](actor::Actor), roles, permissions;
//!   [`ids`] — typed ids; [`error`] — [`Error`](error::Error) and its mapping to the wire's `ErrorCode`.
//!
//! **How the shop actor uses it** (the actor is the next piece of work; nothing calls this yet):
//!
//! 1. On activation, rebuild the [`Shop`](shop::Shop) from storage. The state types are deliberately not
//!    `Serialize`: either replay the stored inputs (commands, notifications, syncs, ticks,
//!    catalog edits — each with the `now_ms` it was applied at; determinism makes the replay
//!    exact) or give the state an explicit row encoding in `storage/`.
//! 2. For each request, authenticate (the session did), resolve the caller's staff role into an
//!    [`Actor`](actor::Actor), check [`Actor::require`](actor::Actor::require) for catalog, coupon and promotion edits, and call the
//!    core with `now_ms`. A refused call returns an [`Error`](error::Error) and changed nothing; map it with
//!    `ErrorCode::from(&error)`.
//! 3. On success, persist the new state and the returned [`CommerceEvent`](event::CommerceEvent)s in one commit (the
//!    outbox), reply, post the order message update into the customer↔shop conversation, then
//!    send `Effects::requests` to the payments adapter from a task (never inside `handle`), each
//!    with its idempotency key. Replayed effects (`Effects::replayed`) were already persisted and
//!    sent: just answer with them.
//! 4. Feed verified provider notifications to [`Shop::handle_notification`](shop::Shop::handle_notification); on
//!    [`Notified::NeedsSync`](shop::Notified::NeedsSync), fetch the payment attempt from the provider and pass it to
//!    [`Shop::apply_snapshot`](shop::Shop::apply_snapshot). After a restart, resend [`Shop::pending_requests`](shop::Shop::pending_requests).
//! 5. Keep a timer at [`Shop::next_deadline_ms`](shop::Shop::next_deadline_ms) and call [`Shop::tick`](shop::Shop::tick) when it fires (expiry of
//!    unpaid orders, instalments, retries).
//! 6. For a promotion: [`Promotions::audience`](promo::Promotions::audience) when it starts, then [`Promotions::deliver`](promo::Promotions::deliver)
//!    right before handing it to each customer's conversation — consent and quota are checked
//!    at that moment, so an opt-out stops promotions already on their way.
//! 7. [`Shop::archive`](shop::Shop::archive) final orders once stored, to bound memory.

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
