//! Property tests of the parts on their own, each against a simple model:
//!
//! * stock under interleaved reservations, releases, commits, restores and restocking of many
//!   orders: never negative, never oversold, always what the model's ledger says;
//! * a coupon under many redemptions, releases and settlements: its limits always hold;
//! * promotions under random opt-ins, opt-outs, deliveries and time: never delivered without
//!   consent, beyond the quota or twice;
//! * a payment fed arbitrary notifications and snapshots (duplicated, reordered, contradictory,
//!   malformed): its amounts stay consistent and no transition happens twice.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::super::catalog::{Catalog, Change, Item, ReservationState, Section, Stock, StockKey};
use super::super::coupon::{CouponSpec, Coupons, Discount};
use super::super::error::Error;
use super::super::event::CommerceEvent;
use super::super::ids::{CouponCode, OrderId, PaymentId, PromotionId, RefundId};
use super::super::payment::{
    Handled, Notification, NotificationKind, OrderPayments, Payment, PaymentPlan, PaymentStatus,
    Refund, RefundSnapshot, RefundStatus, RequestKind, Snapshot, SnapshotStatus,
};
use super::super::promo::{Promotion, Promotions, Quota, Refusal, Scope, Segment};
use super::{eur, id, product, proptest_cases, user};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: proptest_cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// --- Stock. ---

const UNITS: usize = 3;
const STOCK_ORDERS: u8 = 12;

#[derive(Clone, Debug)]
enum StockOp {
    Reserve { order: u8, lines: BTreeMap<u8, u8> },
    Release(u8),
    Commit(u8),
    Restore(u8),
    Restock { unit: u8, on_hand: u8 },
}

fn stock_op() -> impl Strategy<Value = StockOp> {
    prop_oneof![
        4 => (0..STOCK_ORDERS, prop::collection::btree_map(0..UNITS as u8, 1..4u8, 1..=UNITS))
            .prop_map(|(order, lines)| StockOp::Reserve { order, lines }),
        2 => (0..STOCK_ORDERS).prop_map(StockOp::Release),
        2 => (0..STOCK_ORDERS).prop_map(StockOp::Commit),
        1 => (0..STOCK_ORDERS).prop_map(StockOp::Restore),
        1 => (0..UNITS as u8, 0..8u8)
            .prop_map(|(unit, on_hand)| StockOp::Restock { unit, on_hand }),
    ]
}

fn unit(u: usize) -> StockKey {
    StockKey {
        product: id(&format!("p{u}")),
        variant: None,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn stock_is_never_oversold(
        initial in prop::array::uniform3(0..6u32),
        ops in prop::collection::vec(stock_op(), 1..150),
    ) {
        check_stock_is_never_oversold(initial, ops)?;
    }
}

/// The body of [`stock_is_never_oversold`].
fn check_stock_is_never_oversold(
    initial: [u32; 3],
    ops: Vec<StockOp>,
) -> Result<(), TestCaseError> {
    let mut c = Catalog::new();
    c.put_catalog(id("main"), Section { title: "M".into() })
        .unwrap();
    for (u, &n) in initial.iter().enumerate() {
        c.put_product(product(&format!("p{u}"), eur(100))).unwrap();
        c.set_stock(&unit(u), Some(n)).unwrap();
    }
    // The model: units on hand, and each order's lines and state.
    let mut on_hand = initial;
    let mut orders: BTreeMap<u8, (BTreeMap<usize, u32>, ReservationState)> = BTreeMap::new();
    let held = |orders: &BTreeMap<u8, (BTreeMap<usize, u32>, ReservationState)>, u: usize| -> u32 {
        orders
            .values()
            .filter(|(_, s)| *s == ReservationState::Held)
            .filter_map(|(l, _)| l.get(&u))
            .sum()
    };
    for op in ops {
        let oid: OrderId;
        match op {
            StockOp::Reserve { order, lines } => {
                oid = id(&format!("o{order}"));
                let lines: BTreeMap<usize, u32> = lines
                    .into_iter()
                    .map(|(u, q)| (usize::from(u), u32::from(q)))
                    .collect();
                let items: Vec<Item> = lines
                    .iter()
                    .map(|(&u, &q)| Item {
                        key: unit(u),
                        quantity: q,
                    })
                    .collect();
                let fits = lines
                    .iter()
                    .all(|(&u, &q)| on_hand[u] - held(&orders, u) >= q);
                let result = c.reserve(&oid, &items);
                match orders.get(&order) {
                    Some((l, ReservationState::Held)) if *l == lines => {
                        prop_assert_eq!(result, Ok(Change::Unchanged))
                    }
                    Some((_, ReservationState::Held)) => {
                        prop_assert_eq!(result, Err(Error::ReservationMismatch(oid)))
                    }
                    Some(_) => prop_assert_eq!(result, Err(Error::ReservationClosed(oid))),
                    None if fits => {
                        prop_assert_eq!(result, Ok(Change::Applied));
                        orders.insert(order, (lines, ReservationState::Held));
                    }
                    None => prop_assert!(
                        matches!(result, Err(Error::OutOfStock { .. })),
                        "{result:?}"
                    ),
                }
            }
            StockOp::Release(order) | StockOp::Commit(order) | StockOp::Restore(order) => {
                oid = id(&format!("o{order}"));
                let (result, from, to) = match op {
                    StockOp::Release(_) => (
                        c.release(&oid),
                        ReservationState::Held,
                        ReservationState::Released,
                    ),
                    StockOp::Commit(_) => (
                        c.commit(&oid),
                        ReservationState::Held,
                        ReservationState::Committed,
                    ),
                    _ => (
                        c.restore(&oid),
                        ReservationState::Committed,
                        ReservationState::Restored,
                    ),
                };
                match orders.get_mut(&order) {
                    None => prop_assert_eq!(result, Err(Error::UnknownReservation(oid))),
                    Some((_, state)) if *state == to => {
                        prop_assert_eq!(result, Ok(Change::Unchanged))
                    }
                    Some((lines, state)) if *state == from => {
                        prop_assert_eq!(result, Ok(Change::Applied));
                        *state = to;
                        for (&u, &q) in lines.iter() {
                            match to {
                                ReservationState::Committed => on_hand[u] -= q,
                                ReservationState::Restored => on_hand[u] += q,
                                _ => {}
                            }
                        }
                    }
                    Some(_) => prop_assert_eq!(result, Err(Error::ReservationClosed(oid))),
                }
            }
            StockOp::Restock {
                unit: u,
                on_hand: n,
            } => {
                let u = usize::from(u);
                let result = c.set_stock(&unit(u), Some(u32::from(n)));
                if u32::from(n) >= held(&orders, u) {
                    prop_assert_eq!(result, Ok(()));
                    on_hand[u] = u32::from(n);
                } else {
                    prop_assert!(
                        matches!(result, Err(Error::StockBelowReserved { .. })),
                        "{result:?}"
                    );
                }
            }
        }
        for (u, &units) in on_hand.iter().enumerate() {
            let reserved = held(&orders, u);
            prop_assert!(reserved <= units, "oversold");
            prop_assert_eq!(
                c.stock(&unit(u)),
                Some(Stock::Tracked {
                    on_hand: units,
                    reserved
                })
            );
        }
    }
    Ok(())
}

// --- Coupons. ---

#[derive(Clone, Debug)]
enum CouponOp {
    Redeem { customer: u8, order: u8, total: u16 },
    Release(u8),
    Settle(u8),
}

fn coupon_op() -> impl Strategy<Value = CouponOp> {
    prop_oneof![
        5 => (0..5u8, 0..30u8, 0..3000u16)
            .prop_map(|(customer, order, total)| CouponOp::Redeem { customer, order, total }),
        2 => (0..30u8).prop_map(CouponOp::Release),
        1 => (0..30u8).prop_map(CouponOp::Settle),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn coupon_limits_hold(
        total_max in 1..8u32,
        per_customer_max in 1..3u32,
        ops in prop::collection::vec(coupon_op(), 1..200),
    ) {
        check_coupon_limits_hold(total_max, per_customer_max, ops)?;
    }
}

/// The body of [`coupon_limits_hold`].
fn check_coupon_limits_hold(
    total_max: u32,
    per_customer_max: u32,
    ops: Vec<CouponOp>,
) -> Result<(), TestCaseError> {
    let code: CouponCode = id("LIMITED");
    let mut coupons = Coupons::new();
    coupons
        .put(CouponSpec {
            code: code.clone(),
            discount: Discount::Amount(eur(500)),
            starts_ms: 0,
            ends_ms: 1_000,
            total_max: Some(total_max),
            per_customer_max: Some(per_customer_max),
            minimum: Some(eur(1000)),
        })
        .unwrap();
    // The model: open redemptions by order (customer), settled ones per customer.
    let mut open: BTreeMap<u8, u8> = BTreeMap::new();
    let mut settled: BTreeMap<u8, u32> = BTreeMap::new();
    for op in ops {
        let count = |open: &BTreeMap<u8, u8>, settled: &BTreeMap<u8, u32>, c: Option<u8>| -> u32 {
            let o = open.values().filter(|&&x| c.is_none_or(|c| x == c)).count() as u32;
            let s: u32 = settled
                .iter()
                .filter(|&(&x, _)| c.is_none_or(|c| x == c))
                .map(|(_, n)| n)
                .sum();
            o + s
        };
        match op {
            CouponOp::Redeem {
                customer,
                order,
                total,
            } => {
                let result = coupons.redeem(
                    &code,
                    &user(&format!("c{customer}")),
                    &id(&format!("o{order}")),
                    eur(i64::from(total)),
                    500,
                );
                if let Some(&holder) = open.get(&order) {
                    prop_assert_eq!(
                        result.map(|(r, ch)| (r.customer, ch)),
                        Ok((user(&format!("c{holder}")), Change::Unchanged))
                    );
                } else if i64::from(total) < 1000 {
                    prop_assert_eq!(
                        result.map(|_| ()),
                        Err(Error::BelowMinimumOrder { minimum: eur(1000) })
                    );
                } else if count(&open, &settled, None) >= total_max {
                    prop_assert_eq!(
                        result.map(|_| ()),
                        Err(Error::CouponExhausted(code.clone()))
                    );
                } else if count(&open, &settled, Some(customer)) >= per_customer_max {
                    prop_assert_eq!(
                        result.map(|_| ()),
                        Err(Error::CouponCustomerLimit(code.clone()))
                    );
                } else {
                    prop_assert_eq!(
                        result.map(|(r, ch)| (r.discount, ch)),
                        Ok((eur(500), Change::Applied))
                    );
                    open.insert(order, customer);
                }
            }
            CouponOp::Release(order) => {
                let change = coupons.release(&code, &id(&format!("o{order}")));
                prop_assert_eq!(
                    change,
                    if open.remove(&order).is_some() {
                        Change::Applied
                    } else {
                        Change::Unchanged
                    }
                );
            }
            CouponOp::Settle(order) => {
                let change = coupons.settle(&code, &id(&format!("o{order}")));
                match open.remove(&order) {
                    Some(customer) => {
                        prop_assert_eq!(change, Change::Applied);
                        *settled.entry(customer).or_default() += 1;
                    }
                    None => prop_assert_eq!(change, Change::Unchanged),
                }
            }
        }
        let coupon = coupons.coupon(&code).unwrap();
        prop_assert_eq!(coupon.redeemed(), count(&open, &settled, None));
        prop_assert!(coupon.redeemed() <= total_max);
        for c in 0..5u8 {
            let by = coupon.redeemed_by(&user(&format!("c{c}")));
            prop_assert!(by <= per_customer_max);
            prop_assert_eq!(by, count(&open, &settled, Some(c)));
        }
    }
    Ok(())
}

// --- Promotions. ---

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Clone, Debug)]
enum PromoOp {
    OptIn { customer: u8, scope: u8 },
    OptOut { customer: u8, scope: u8 },
    Deliver { customer: u8, promotion: u8 },
    Audience(u8),
    Wait(u64),
}

fn promo_op() -> impl Strategy<Value = PromoOp> {
    prop_oneof![
        2 => (0..4u8, 0..3u8).prop_map(|(customer, scope)| PromoOp::OptIn { customer, scope }),
        1 => (0..4u8, 0..3u8).prop_map(|(customer, scope)| PromoOp::OptOut { customer, scope }),
        5 => (0..4u8, 0..8u8)
            .prop_map(|(customer, promotion)| PromoOp::Deliver { customer, promotion }),
        1 => (0..8u8).prop_map(PromoOp::Audience),
        2 => (0..10 * DAY_MS).prop_map(PromoOp::Wait),
    ]
}

fn scope(n: u8) -> Scope {
    [Scope::Offers, Scope::Products, Scope::News][usize::from(n % 3)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn promotions_need_consent_and_respect_the_quota(
        count_max in 1..5u32,
        window_days in 1..40u64,
        ops in prop::collection::vec(promo_op(), 1..200),
    ) {
        check_promotions_need_consent_and_respect_the_quota(count_max, window_days, ops)?;
    }
}

/// The body of [`promotions_need_consent_and_respect_the_quota`].
fn check_promotions_need_consent_and_respect_the_quota(
    count_max: u32,
    window_days: u64,
    ops: Vec<PromoOp>,
) -> Result<(), TestCaseError> {
    let window_ms = window_days * DAY_MS;
    let mut p = Promotions::new();
    p.set_quota(Quota {
        count_max,
        window_ms,
    })
    .unwrap();
    for n in 0..8u8 {
        p.put(Promotion {
            id: id(&format!("p{n}")),
            scope: scope(n),
            segment: Segment::Everyone,
        })
        .unwrap();
    }
    let profiles: BTreeMap<_, _> = (0..4u8)
        .map(|c| (user(&format!("c{c}")), Default::default()))
        .collect();
    let mut now_ms = 0u64;
    let mut consent: BTreeSet<(u8, u8)> = BTreeSet::new();
    // Every delivery made: (customer, promotion, at).
    let mut delivered: Vec<(u8, u8, u64)> = Vec::new();
    for op in ops {
        match op {
            PromoOp::OptIn { customer, scope: s } => {
                p.opt_in(&user(&format!("c{customer}")), scope(s), now_ms);
                consent.insert((customer, s % 3));
            }
            PromoOp::OptOut { customer, scope: s } => {
                p.opt_out(&user(&format!("c{customer}")), scope(s), now_ms);
                consent.remove(&(customer, s % 3));
            }
            PromoOp::Deliver {
                customer,
                promotion,
            } => {
                let promo: PromotionId = id(&format!("p{promotion}"));
                let result = p.deliver(&user(&format!("c{customer}")), &promo, now_ms);
                let in_window = delivered
                    .iter()
                    .filter(|(c, _, at)| *c == customer && now_ms - at < window_ms)
                    .count() as u32;
                let again = delivered.iter().any(|(c, pr, at)| {
                    *c == customer && *pr == promotion && now_ms - at < window_ms
                });
                if !consent.contains(&(customer, promotion % 3)) {
                    prop_assert_eq!(result, Err(Refusal::NoConsent));
                } else if again {
                    prop_assert_eq!(result, Err(Refusal::AlreadyDelivered));
                } else if in_window >= count_max {
                    prop_assert!(
                        matches!(result, Err(Refusal::QuotaReached { .. })),
                        "{result:?}"
                    );
                } else {
                    prop_assert_eq!(result, Ok(()));
                    delivered.push((customer, promotion, now_ms));
                }
            }
            PromoOp::Audience(promotion) => {
                let audience = p
                    .audience(&id(&format!("p{promotion}")), &profiles, now_ms)
                    .unwrap();
                for customer in audience {
                    let c: u8 = customer.as_str()[1..].parse().unwrap();
                    prop_assert!(
                        consent.contains(&(c, promotion % 3)),
                        "audience without consent"
                    );
                    let promo: PromotionId = id(&format!("p{promotion}"));
                    let may = p.may_deliver(&customer, &promo, now_ms);
                    prop_assert!(may.is_ok(), "audience member refused: {may:?}");
                }
            }
            PromoOp::Wait(ms) => {
                now_ms += ms;
                p.prune(now_ms);
            }
        }
        // The quota holds in every window ending now.
        for c in 0..4u8 {
            let recent = delivered
                .iter()
                .filter(|(x, _, at)| *x == c && now_ms - at < window_ms)
                .count() as u32;
            prop_assert!(recent <= count_max);
        }
    }
    Ok(())
}

// --- A payment under arbitrary provider input. ---

/// What a payment is, leaving out its memory of notifications.
fn money(p: &Payment) -> (PaymentStatus, u32, i64, i64, Vec<Refund>) {
    (
        p.status(),
        p.attempt(),
        p.authorized().minor(),
        p.captured().minor(),
        p.refunds().to_vec(),
    )
}

fn any_kind() -> impl Strategy<Value = NotificationKind> {
    let amount = prop_oneof![Just(1000i64), 0..1200i64];
    let refund = (0..4u32).prop_map(|k| -> RefundId {
        if k == 0 {
            id("ext-1")
        } else {
            RefundId::new(&PaymentId::new(&id("o"), 1), k)
        }
    });
    prop_oneof![
        amount
            .clone()
            .prop_map(|a| NotificationKind::Authorized { amount: eur(a) }),
        amount
            .clone()
            .prop_map(|a| NotificationKind::Captured { amount: eur(a) }),
        Just(NotificationKind::Failed),
        Just(NotificationKind::Voided),
        (refund.clone(), 1..600i64).prop_map(|(refund, a)| NotificationKind::Refunded {
            refund,
            amount: eur(a)
        }),
        refund.prop_map(|refund| NotificationKind::RefundFailed { refund }),
    ]
}

#[derive(Clone, Debug)]
enum PayOp {
    Note {
        event: u8,
        attempt: u32,
        sequence: u64,
        kind: NotificationKind,
    },
    Snapshot {
        attempt: u32,
        sequence: u64,
        status: u8,
        authorized: i64,
        captured: i64,
        refunds: Vec<(u8, i64, u8)>,
    },
    Authorize,
    Capture,
    Refund(i64),
    Stop,
}

fn pay_op() -> impl Strategy<Value = PayOp> {
    prop_oneof![
        6 => (0..20u8, 0..4u32, 0..8u64, any_kind())
            .prop_map(|(event, attempt, sequence, kind)| {
                PayOp::Note { event, attempt, sequence, kind }
            }),
        2 => (
            0..4u32,
            0..8u64,
            0..5u8,
            prop_oneof![Just(1000i64), 0..1100i64],
            prop_oneof![Just(1000i64), 0..1100i64],
            prop::collection::vec((0..4u8, 1..700i64, 0..3u8), 0..3),
        )
            .prop_map(|(attempt, sequence, status, authorized, captured, refunds)| PayOp::Snapshot {
                attempt, sequence, status, authorized, captured, refunds,
            }),
        2 => Just(PayOp::Authorize),
        2 => Just(PayOp::Capture),
        1 => (1..700i64).prop_map(PayOp::Refund),
        1 => Just(PayOp::Stop),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_provider_input_breaks_a_payment(ops in prop::collection::vec(pay_op(), 1..100)) {
        check_no_provider_input_breaks_a_payment(ops)?;
    }
}

/// The body of [`no_provider_input_breaks_a_payment`].
fn check_no_provider_input_breaks_a_payment(ops: Vec<PayOp>) -> Result<(), TestCaseError> {
    let order: OrderId = id("o");
    let payment = PaymentId::new(&order, 1);
    let mut p = OrderPayments::new(&order, eur(1000), PaymentPlan::Full, 0).unwrap();
    let mut once: BTreeSet<String> = BTreeSet::new();
    let mut refunds_issued = 0i64;
    let mut captured_events = 0i64;
    for op in ops {
        let part = p.first_mut().unwrap();
        let before = part.clone();
        let handled = match op {
            PayOp::Note {
                event,
                attempt,
                sequence,
                kind,
            } => Some(part.handle(&Notification {
                event: id(&format!("e{event}")),
                payment: payment.clone(),
                attempt,
                sequence,
                kind,
            })),
            PayOp::Snapshot {
                attempt,
                sequence,
                status,
                authorized,
                captured,
                refunds,
            } => {
                let status = [
                    SnapshotStatus::Pending,
                    SnapshotStatus::Authorized,
                    SnapshotStatus::Captured,
                    SnapshotStatus::Voided,
                    SnapshotStatus::Failed,
                ][usize::from(status)];
                let refunds = refunds
                    .into_iter()
                    .map(|(k, a, s)| RefundSnapshot {
                        refund: if k == 0 {
                            id("ext-1")
                        } else {
                            RefundId::new(&payment, u32::from(k))
                        },
                        amount: eur(a),
                        status: [
                            RefundStatus::Requested,
                            RefundStatus::Succeeded,
                            RefundStatus::Failed,
                        ][usize::from(s)],
                    })
                    .collect();
                let result = part.apply_snapshot(&Snapshot {
                    payment: payment.clone(),
                    attempt,
                    sequence,
                    status,
                    authorized: eur(authorized),
                    captured: eur(captured),
                    refunds,
                });
                if result.is_err() {
                    prop_assert_eq!(&*part, &before, "a refused snapshot changed the payment");
                }
                result.ok()
            }
            PayOp::Authorize => {
                let _ = part.authorize();
                None
            }
            PayOp::Capture => {
                // No capture is ever asked without a confirmed authorization.
                if let Some(request) = part.capture() {
                    prop_assert_eq!(before.status(), PaymentStatus::Authorized);
                    prop_assert_eq!(before.authorized().minor(), 1000);
                    prop_assert_eq!(request.kind, RequestKind::Capture { amount: eur(1000) });
                }
                None
            }
            PayOp::Refund(a) => {
                let _ = p.refund(eur(a));
                None
            }
            PayOp::Stop => {
                let _ = p.stop();
                None
            }
        };
        let part = p.first().unwrap();
        match handled {
            Some(Handled::Applied { events, .. }) => {
                for event in events {
                    let key = match &event {
                        CommerceEvent::PaymentSucceeded {
                            attempt, amount, ..
                        } => {
                            captured_events += amount.minor();
                            format!("captured {attempt}")
                        }
                        CommerceEvent::PaymentAuthorized { .. }
                        | CommerceEvent::PaymentFailed { .. }
                        | CommerceEvent::PaymentVoided { .. } => {
                            // These may repeat within an attempt only across a real change
                            // of mind at the provider (failed, then authorized on the same
                            // intent), which only a snapshot can report.
                            continue;
                        }
                        CommerceEvent::RefundIssued { refund, amount, .. } => {
                            refunds_issued += amount.minor();
                            format!("refund {refund}")
                        }
                        CommerceEvent::RefundFailed { refund, .. } => {
                            format!("refund failed {refund}")
                        }
                        other => format!("{other:?}"),
                    };
                    prop_assert!(once.insert(key.clone()), "twice: {key}");
                }
            }
            // Nothing at all changes for a duplicate or a contradiction; a stale or restating
            // notification is remembered (its id, a newer sequence) but moves nothing.
            Some(Handled::Duplicate | Handled::NeedsSync { .. }) => {
                prop_assert_eq!(part, &before, "a refused notification changed the payment");
            }
            Some(Handled::Stale | Handled::Unchanged) => {
                prop_assert_eq!(
                    money(part),
                    money(&before),
                    "an ignored notification moved something"
                );
            }
            None => {}
        }
        // The invariants, whatever the provider said.
        let (a, c) = (part.authorized().minor(), part.captured().minor());
        // Capture is full, of an authorization of the whole amount, and final.
        prop_assert!((0..=1000).contains(&a) && (0..=1000).contains(&c));
        if part.status() == PaymentStatus::Captured {
            prop_assert!(a == 1000 && c == 1000, "{part:?}");
        } else {
            prop_assert_eq!(c, 0, "money captured outside Captured: {:?}", part);
        }
        prop_assert!(
            part.refunded().minor() + part.refunding().minor() <= c,
            "refunds beyond captured: {part:?}"
        );
        prop_assert!(c >= before.captured().minor(), "captured money went back");
        prop_assert!(
            part.refunded().minor() >= before.refunded().minor(),
            "refunded money went back"
        );
        prop_assert_eq!(refunds_issued, part.refunded().minor());
        prop_assert_eq!(captured_events, c);
    }
    Ok::<(), TestCaseError>(())?;
    Ok(())
}
