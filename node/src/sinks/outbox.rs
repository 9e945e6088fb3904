//! The commerce event outbox: one row per [`CommerceEvent`], written by the shop actor in the
//! same storage batch as the state change that produced it, and read by the sinks.
//!
//! # Rows
//!
//! Table [`KvTable::Outbox`]; key: the shop id's bytes, a `0x00` byte, then the event's seq
//! (from 1, gap-free per shop) as a big-endian `u64`, so a shop's events sort in seq order and a
//! shop id (which never contains `0x00`) is a key prefix. Value: the event's envelope, a JSON
//! document, exactly the bytes a webhook receives as its body and NATS as its payload.
//!
//! # The envelope
//!
//! ```json
//! {
//!   "id": "shop-1:7",
//!   "type": "OrderPlaced",
//!   "shop": "shop-1",
//!   "seq": 7,
//!   "created_ms": 1767225600000,
//!   "order": "order-42",
//!   "data": {"customer": "alice", "lines": 2, "subtotal": {"minor": 2500, "currency": "EUR"}, …}
//! }
//! ```
//!
//! * `id` — `<shop>:<seq>`: unique per event and stable across redeliveries; receivers
//!   deduplicate with it. (Shop ids may contain `:`, the seq after the last `:` never does.)
//! * `type` — the event type, one of [`EVENT_TYPES`].
//! * `shop`, `seq` — seqs count a shop's events from 1 without gaps, so a receiver can order
//!   them and notice a missing one.
//! * `created_ms` — when the shop recorded the event, milliseconds since the Unix epoch.
//! * `order` — the order the event is about.
//! * `data` — the event's own fields (keys in alphabetical order):
//!
//! | `type` | `data` |
//! |---|---|
//! | `OrderPlaced` | `customer`, `lines`, `subtotal`, `discount`, `total` |
//! | `StockReserved`, `StockReleased`, `StockCommitted`, `StockRestored` | `{}` |
//! | `CouponRedeemed` | `code`, `discount` |
//! | `CouponReleased` | `code` |
//! | `OrderAccepted`, `OrderDelivered`, `OrderCompleted` | `by` |
//! | `OrderRejected`, `OrderCancelled` | `by`, `reason` |
//! | `PaymentRequested` | `plan`, `total` |
//! | `PaymentAuthorized`, `PaymentSucceeded` | `payment`, `attempt`, `amount` |
//! | `PaymentFailed`, `PaymentVoided` | `payment`, `attempt` |
//! | `OrderPaid`, `OrderExpired`, `OrderRefunded` | `{}` |
//! | `OrderFulfilled` | `by`, `tracking` (a string or `null`) |
//! | `RefundRequested`, `RefundIssued`, `RefundFailed` | `payment`, `refund`, `amount` |
//!
//! Value shapes: money is `{"minor": 1999, "currency": "EUR"}` (integer minor units);
//! `by` (who did it) is `{"customer": "<user>"}`, `{"staff": "<user>", "role":
//! "owner"|"manager"|"agent"}` or `"system"`; `plan` is `{"kind": "full"}` or `{"kind":
//! "instalments", "count": 3, "interval_ms": 2592000000}`; `payment` is `<order>#<n>`
//! (instalment `n` from 1), `refund` is `<payment>#r<k>` or a provider's refund id; `attempt`
//! counts authorization attempts of a payment from 1. New fields and new types may be added;
//! receivers should ignore what they do not know.

use piazza_protocol::Money;
use serde::Serialize;

use crate::commerce::actor::{Actor, StaffRole};
use crate::commerce::event::CommerceEvent;
use crate::commerce::ids::ShopId;
use crate::commerce::payment::PaymentPlan;
use crate::storage::{KvTable, Storage, StorageError, Write};

/// The write appending `event` as the `seq`th (from 1) outbox event of `shop`, at `at_ms`.
pub(crate) fn outbox_write(shop: &ShopId, seq: u64, at_ms: u64, event: &CommerceEvent) -> Write {
    Write::Put {
        table: KvTable::Outbox,
        key: outbox_key(shop, seq),
        value: envelope_bytes(shop, seq, at_ms, event),
    }
}

/// The seq of the shop's newest outbox event (0 if none).
pub(crate) fn last_outbox_seq(storage: &dyn Storage, shop: &ShopId) -> Result<u64, StorageError> {
    match storage.kv_last(KvTable::Outbox, &shop_prefix(shop))? {
        Some((key, _)) => seq_of_key(&key),
        None => Ok(0),
    }
}

/// Every event type, as [`CommerceEvent::name`] spells them (what `event_types` filters may
/// name).
pub(crate) const EVENT_TYPES: [&str; 24] = [
    "OrderPlaced",
    "StockReserved",
    "StockReleased",
    "StockCommitted",
    "StockRestored",
    "CouponRedeemed",
    "CouponReleased",
    "OrderAccepted",
    "OrderRejected",
    "PaymentRequested",
    "PaymentAuthorized",
    "PaymentSucceeded",
    "PaymentFailed",
    "PaymentVoided",
    "OrderPaid",
    "OrderFulfilled",
    "OrderDelivered",
    "OrderCompleted",
    "OrderCancelled",
    "OrderExpired",
    "RefundRequested",
    "RefundIssued",
    "RefundFailed",
    "OrderRefunded",
];

/// The envelope of one event, serialized in the documented field order.
#[derive(Serialize)]
struct Envelope<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    shop: &'a str,
    seq: u64,
    created_ms: u64,
    order: &'a str,
    data: serde_json::Value,
}

/// The envelope JSON of `event` (the outbox row's value).
pub(crate) fn envelope_bytes(
    shop: &ShopId,
    seq: u64,
    at_ms: u64,
    event: &CommerceEvent,
) -> Vec<u8> {
    let envelope = Envelope {
        id: event_id(shop, seq),
        kind: event.name(),
        shop: shop.as_str(),
        seq,
        created_ms: at_ms,
        order: event.order().as_str(),
        data: event_data(event),
    };
    // Serializing strings, integers and a `Value` into a Vec cannot fail (no maps with non-string
    // keys, no I/O); the fallback keeps the row well-formed JSON should that ever change.
    serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{}".to_vec())
}

/// The event's id: `<shop>:<seq>`.
pub(crate) fn event_id(shop: &ShopId, seq: u64) -> String {
    format!("{shop}:{seq}")
}

/// The key prefix of a shop's outbox rows.
pub(crate) fn shop_prefix(shop: &ShopId) -> Vec<u8> {
    let mut key = Vec::with_capacity(shop.as_str().len() + 1 + 8);
    key.extend_from_slice(shop.as_str().as_bytes());
    key.push(0);
    key
}

/// The key of a shop's `seq`th outbox row.
pub(crate) fn outbox_key(shop: &ShopId, seq: u64) -> Vec<u8> {
    let mut key = shop_prefix(shop);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A key greater than every outbox key of `shop` and smaller than the keys of any other shop
/// that sorts after it (used to skip to the next shop).
pub(crate) fn past_shop_key(shop: &ShopId) -> Vec<u8> {
    let mut key = shop_prefix(shop);
    key.extend_from_slice(&[0xff; 8]);
    key
}

/// The shop and seq of an outbox key.
pub(crate) fn split_key(key: &[u8]) -> Result<(ShopId, u64), StorageError> {
    let corrupt = |reason: &str| StorageError::Corrupt {
        table: "outbox",
        reason: reason.into(),
    };
    if key.len() < 10 || key[key.len() - 9] != 0 {
        return Err(corrupt("key shape"));
    }
    let shop = std::str::from_utf8(&key[..key.len() - 9])
        .map_err(|_| corrupt("shop id utf-8"))?
        .parse::<ShopId>()
        .map_err(|_| corrupt("shop id"))?;
    Ok((shop, seq_of_key(key)?))
}

fn seq_of_key(key: &[u8]) -> Result<u64, StorageError> {
    let tail = key
        .len()
        .checked_sub(8)
        .map(|start| &key[start..])
        .ok_or_else(|| StorageError::Corrupt {
            table: "outbox",
            reason: "short key".into(),
        })?;
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(tail);
    Ok(u64::from_be_bytes(bytes))
}

fn money(amount: Money) -> serde_json::Value {
    serde_json::json!({"minor": amount.minor(), "currency": amount.currency().as_str()})
}

fn actor(by: &Actor) -> serde_json::Value {
    match by {
        Actor::Customer(user) => serde_json::json!({"customer": user.as_str()}),
        Actor::Staff { user, role } => {
            let role = match role {
                StaffRole::Owner => "owner",
                StaffRole::Manager => "manager",
                StaffRole::Agent => "agent",
            };
            serde_json::json!({"staff": user.as_str(), "role": role})
        }
        Actor::System => serde_json::json!("system"),
    }
}

fn plan(plan: &PaymentPlan) -> serde_json::Value {
    match plan {
        PaymentPlan::Full => serde_json::json!({"kind": "full"}),
        PaymentPlan::Instalments { count, interval_ms } => serde_json::json!({
            "kind": "instalments",
            "count": count,
            "interval_ms": interval_ms,
        }),
    }
}

/// The `data` object of an event: its fields except the order.
fn event_data(event: &CommerceEvent) -> serde_json::Value {
    use serde_json::json;
    match event {
        CommerceEvent::OrderPlaced {
            order: _,
            customer,
            lines,
            subtotal,
            discount,
            total,
        } => json!({
            "customer": customer.as_str(),
            "lines": lines,
            "subtotal": money(*subtotal),
            "discount": money(*discount),
            "total": money(*total),
        }),
        CommerceEvent::StockReserved { .. }
        | CommerceEvent::StockReleased { .. }
        | CommerceEvent::StockCommitted { .. }
        | CommerceEvent::StockRestored { .. }
        | CommerceEvent::OrderPaid { .. }
        | CommerceEvent::OrderExpired { .. }
        | CommerceEvent::OrderRefunded { .. } => json!({}),
        CommerceEvent::CouponRedeemed {
            order: _,
            code,
            discount,
        } => json!({"code": code.as_str(), "discount": money(*discount)}),
        CommerceEvent::CouponReleased { order: _, code } => json!({"code": code.as_str()}),
        CommerceEvent::OrderAccepted { order: _, by }
        | CommerceEvent::OrderDelivered { order: _, by }
        | CommerceEvent::OrderCompleted { order: _, by } => json!({"by": actor(by)}),
        CommerceEvent::OrderRejected {
            order: _,
            by,
            reason,
        }
        | CommerceEvent::OrderCancelled {
            order: _,
            by,
            reason,
        } => json!({"by": actor(by), "reason": reason}),
        CommerceEvent::PaymentRequested {
            order: _,
            plan: p,
            total,
        } => json!({"plan": plan(p), "total": money(*total)}),
        CommerceEvent::PaymentAuthorized {
            order: _,
            payment,
            attempt,
            amount,
        }
        | CommerceEvent::PaymentSucceeded {
            order: _,
            payment,
            attempt,
            amount,
        } => json!({"payment": payment.as_str(), "attempt": attempt, "amount": money(*amount)}),
        CommerceEvent::PaymentFailed {
            order: _,
            payment,
            attempt,
        }
        | CommerceEvent::PaymentVoided {
            order: _,
            payment,
            attempt,
        } => json!({"payment": payment.as_str(), "attempt": attempt}),
        CommerceEvent::OrderFulfilled {
            order: _,
            by,
            tracking,
        } => json!({"by": actor(by), "tracking": tracking}),
        CommerceEvent::RefundRequested {
            order: _,
            payment,
            refund,
            amount,
        }
        | CommerceEvent::RefundIssued {
            order: _,
            payment,
            refund,
            amount,
        }
        | CommerceEvent::RefundFailed {
            order: _,
            payment,
            refund,
            amount,
        } => json!({
            "payment": payment.as_str(),
            "refund": refund.as_str(),
            "amount": money(*amount),
        }),
    }
}
