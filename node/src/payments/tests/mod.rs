//! Tests of the payment adapters: signatures, the sandbox (alone and driving the commerce core
//! through whole orders), and the HTTP adapter against a local Stripe-style provider
//! (`server.rs`) with real sockets on 127.0.0.1. Waits are bounded by [`WAIT`], generous because
//! the machine is small and busy; nothing asserts on timing.

use std::fmt::Debug;
use std::str::FromStr;
use std::time::Duration;

use piazza_protocol::{Currency, Money};
use tokio::sync::mpsc;

use super::Inbound;
use crate::commerce::ids::{OrderId, PaymentId, RefundId, ShopId};
use crate::commerce::payment::{PaymentOp, ProviderRequest, RequestKind, idempotency_key};

mod config;
mod http;
mod sandbox;
mod server;
mod shop;
mod signature;

/// Longest wait for anything asynchronous.
const WAIT: Duration = Duration::from_secs(10);

/// Parses any id (test input is known good).
fn id<T: FromStr>(s: &str) -> T
where
    T::Err: Debug,
{
    s.parse().unwrap()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse::<Currency>().unwrap())
}

fn shop_id() -> ShopId {
    id("corner")
}

/// A request about attempt `attempt` of payment `<order>#1`, keyed like the core keys it.
fn request(order: &str, attempt: u32, kind: RequestKind) -> ProviderRequest {
    let order: OrderId = id(order);
    let op = match &kind {
        RequestKind::Authorize { .. } => PaymentOp::Authorize,
        RequestKind::Capture { .. } => PaymentOp::Capture,
        RequestKind::Void => PaymentOp::Void,
        RequestKind::Refund { refund, .. } => {
            let n = refund
                .as_str()
                .rsplit("#r")
                .next()
                .unwrap()
                .parse()
                .unwrap();
            PaymentOp::Refund(n)
        }
    };
    ProviderRequest {
        payment: PaymentId::new(&order, 1),
        attempt,
        idempotency_key: idempotency_key(&order, 1, op, attempt),
        kind,
        order,
    }
}

fn authorize(order: &str, attempt: u32, amount: Money) -> ProviderRequest {
    request(order, attempt, RequestKind::Authorize { amount })
}

fn capture(order: &str, attempt: u32, amount: Money) -> ProviderRequest {
    request(order, attempt, RequestKind::Capture { amount })
}

fn void(order: &str, attempt: u32) -> ProviderRequest {
    request(order, attempt, RequestKind::Void)
}

/// Refund number `n` of `<order>#1`.
fn refund(order: &str, attempt: u32, n: u32, amount: Money) -> ProviderRequest {
    let payment = PaymentId::new(&id::<OrderId>(order), 1);
    request(
        order,
        attempt,
        RequestKind::Refund {
            refund: RefundId::new(&payment, n),
            amount,
        },
    )
}

fn payment(order: &str) -> PaymentId {
    PaymentId::new(&id::<OrderId>(order), 1)
}

/// The next inbound notification, within [`WAIT`].
async fn next(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a notification within the wait")
        .expect("the inbound queue is open")
}
