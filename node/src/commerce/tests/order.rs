//! Orders through the shop: the state machine, authorization, idempotency, expiry, payments
//! and refunds, instalments.

use piazza_protocol::ErrorCode;

use super::super::actor::{Actor, Permission};
use super::super::catalog::{ReservationState, Stock};
use super::super::coupon::{CouponSpec, Discount};
use super::super::error::Error;
use super::super::ids::{CommandId, OrderId, PaymentId};
use super::super::order::{COMMANDS_PER_ORDER_MAX, OrderCommand, OrderStatus};
use super::super::payment::{
    INSTALMENT_INTERVAL_MS_MIN, NotificationKind, PaymentPlan, PaymentStatus, RequestKind,
    Snapshot, SnapshotStatus,
};
use super::super::shop::{
    INSTALMENT_RETRY_MS_DEFAULT, Notified, Shop, UNPAID_ORDER_TTL_MS_DEFAULT,
    UNPAID_ORDERS_PER_CUSTOMER_MAX,
};
use super::{
    agent, alice, applied, bob, command, eur, id, item, key, manager, names, notification, owner,
    place, shop, user,
};

const DAY_MS: u64 = INSTALMENT_INTERVAL_MS_MIN;

fn status(shop: &Shop, order: &str) -> OrderStatus {
    shop.order(&id(order)).unwrap().status()
}

fn tea(shop: &Shop) -> (u32, u32) {
    match shop.catalog().stock(&key("tea", None)) {
        Some(Stock::Tracked { on_hand, reserved }) => (on_hand, reserved),
        other => panic!("{other:?}"),
    }
}

fn pay(plan: PaymentPlan) -> OrderCommand {
    OrderCommand::RequestPayment { plan }
}

fn cancel() -> OrderCommand {
    OrderCommand::Cancel {
        reason: "changed my mind".into(),
    }
}

/// Places o1 (3 tea = 15.00 EUR) for alice and gets it to awaiting payment in full.
fn awaiting(shop: &mut Shop) {
    place(shop, &alice(), "o1", vec![item("tea", None, 3)]);
    command(shop, &agent(), "o1", 1, OrderCommand::Accept).unwrap();
    let e = command(shop, &alice(), "o1", 2, pay(PaymentPlan::Full)).unwrap();
    assert_eq!(e.requests.len(), 1);
    assert_eq!(
        e.requests[0].kind,
        RequestKind::Authorize { amount: eur(1500) }
    );
}

/// The provider authorizes and captures payment `number` of `order` (attempt 1).
fn settle(shop: &mut Shop, order: &str, number: u32, amount: i64) -> Vec<&'static str> {
    let a = applied(
        shop.handle_notification(
            &notification(
                order,
                number,
                1,
                1,
                NotificationKind::Authorized {
                    amount: eur(amount),
                },
            ),
            3_000,
        )
        .unwrap(),
    );
    assert!(
        matches!(a.requests[0].kind, RequestKind::Capture { .. }),
        "captured at once"
    );
    let c = applied(
        shop.handle_notification(
            &notification(
                order,
                number,
                1,
                2,
                NotificationKind::Captured {
                    amount: eur(amount),
                },
            ),
            3_000,
        )
        .unwrap(),
    );
    names(&a).into_iter().chain(names(&c)).collect()
}

#[test]
fn an_order_goes_all_the_way() {
    let mut s = shop();
    let placed = place(&mut s, &alice(), "o1", vec![item("tea", None, 3)]);
    assert_eq!(names(&placed), ["OrderPlaced", "StockReserved"]);
    assert_eq!(tea(&s), (10, 3));
    awaiting_from_placed(&mut s);
    assert_eq!(
        settle(&mut s, "o1", 1, 1500),
        [
            "PaymentAuthorized",
            "PaymentSucceeded",
            "OrderPaid",
            "StockCommitted"
        ]
    );
    assert_eq!(status(&s, "o1"), OrderStatus::Paid);
    assert_eq!(tea(&s), (7, 0));
    assert!(s.profiles()[&user("alice")].purchased.contains(&id("tea")));
    let e = command(
        &mut s,
        &agent(),
        "o1",
        3,
        OrderCommand::Fulfil {
            tracking: Some("DHL 123".into()),
        },
    )
    .unwrap();
    assert_eq!(names(&e), ["OrderFulfilled"]);
    command(&mut s, &alice(), "o1", 4, OrderCommand::MarkDelivered).unwrap();
    let e = command(&mut s, &Actor::System, "o1", 5, OrderCommand::Complete).unwrap();
    assert_eq!(names(&e), ["OrderCompleted"]);
    assert_eq!(status(&s, "o1"), OrderStatus::Completed);
    assert_eq!(s.order(&id("o1")).unwrap().tracking(), Some("DHL 123"));
    s.archive(&id("o1")).unwrap();
    assert!(s.order(&id("o1")).is_none());
    assert_eq!(s.catalog().reservation(&id("o1")), None);
}

fn awaiting_from_placed(s: &mut Shop) {
    command(s, &agent(), "o1", 1, OrderCommand::Accept).unwrap();
    let e = command(s, &alice(), "o1", 2, pay(PaymentPlan::Full)).unwrap();
    assert_eq!(names(&e), ["PaymentRequested"]);
}

#[test]
fn who_may_do_what() {
    let mut s = shop();
    place(&mut s, &alice(), "o1", vec![item("tea", None, 1)]);
    let forbidden = |action| Err(Error::Forbidden { action });
    assert_eq!(
        command(&mut s, &alice(), "o1", 1, OrderCommand::Accept).map(|_| ()),
        forbidden("accept")
    );
    assert_eq!(
        command(&mut s, &bob(), "o1", 1, cancel()).map(|_| ()),
        forbidden("act on another customer's order")
    );
    assert_eq!(
        command(&mut s, &Actor::System, "o1", 1, cancel()).map(|_| ()),
        forbidden("cancel")
    );
    assert_eq!(
        command(
            &mut s,
            &agent(),
            "o1",
            1,
            OrderCommand::Refund { amount: eur(1) }
        )
        .map(|_| ()),
        forbidden("refund")
    );
    // The state machine, after the actor's kind: the customer may pay, but not yet.
    assert_eq!(
        command(&mut s, &alice(), "o1", 1, pay(PaymentPlan::Full)).map(|_| ()),
        Err(Error::InvalidTransition {
            status: OrderStatus::Placed,
            command: "request payment for"
        })
    );
    assert_eq!(
        command(
            &mut s,
            &agent(),
            "o1",
            1,
            OrderCommand::Fulfil { tracking: None }
        )
        .map(|_| ()),
        Err(Error::InvalidTransition {
            status: OrderStatus::Placed,
            command: "fulfil"
        })
    );
    command(&mut s, &agent(), "o1", 1, OrderCommand::Accept).unwrap();
    assert_eq!(
        command(&mut s, &owner(), "o1", 2, OrderCommand::Accept).map(|_| ()),
        Err(Error::InvalidTransition {
            status: OrderStatus::Accepted,
            command: "accept"
        })
    );
    // Staff may only act as staff; the permission table for shop-wide actions.
    assert!(agent().require(Permission::LabelCustomers).is_ok());
    assert!(agent().require(Permission::ManageCatalog).is_err());
    assert!(manager().require(Permission::ManageCoupons).is_ok());
    assert!(alice().require(Permission::SendPromotions).is_err());
    assert_eq!(
        ErrorCode::from(&Error::Forbidden { action: "x" }),
        ErrorCode::Forbidden
    );
}

#[test]
fn customers_cancel_before_payment_managers_after() {
    let mut s = shop();
    awaiting(&mut s);
    settle(&mut s, "o1", 1, 1500);
    assert_eq!(
        command(&mut s, &alice(), "o1", 3, cancel()).map(|_| ()),
        Err(Error::Forbidden {
            action: "cancel a paid order"
        })
    );
    assert_eq!(
        command(&mut s, &agent(), "o1", 3, cancel()).map(|_| ()),
        Err(Error::Forbidden {
            action: "cancel a paid order"
        })
    );
    let e = command(&mut s, &manager(), "o1", 3, cancel()).unwrap();
    assert_eq!(
        names(&e),
        ["OrderCancelled", "StockRestored", "RefundRequested"]
    );
    assert_eq!(
        e.requests[0].kind,
        RequestKind::Refund {
            refund: id("o1#1#r1"),
            amount: eur(1500)
        }
    );
    assert_eq!(tea(&s), (10, 0), "the goods never left");
    let refund = notification(
        "o1",
        1,
        1,
        3,
        NotificationKind::Refunded {
            refund: id("o1#1#r1"),
            amount: eur(1500),
        },
    );
    assert_eq!(
        names(&applied(s.handle_notification(&refund, 4_000).unwrap())),
        ["RefundIssued"]
    );
    assert_eq!(status(&s, "o1"), OrderStatus::Cancelled);
    // Cancelled after fulfilment is not a thing: refunds are.
    let mut s = shop();
    awaiting(&mut s);
    settle(&mut s, "o1", 1, 1500);
    command(
        &mut s,
        &agent(),
        "o1",
        3,
        OrderCommand::Fulfil { tracking: None },
    )
    .unwrap();
    assert!(matches!(
        command(&mut s, &owner(), "o1", 4, cancel()),
        Err(Error::InvalidTransition {
            status: OrderStatus::Fulfilled,
            ..
        })
    ));
}

#[test]
fn commands_are_idempotent_per_command_id() {
    let mut s = shop();
    let first = place(&mut s, &alice(), "o1", vec![item("tea", None, 3)]);
    let again = place(&mut s, &alice(), "o1", vec![item("tea", None, 3)]);
    assert!(again.replayed);
    assert_eq!(again.events, first.events);
    assert_eq!(tea(&s), (10, 3), "reserved once");
    // The order id with another placement command, or the command id with other items.
    assert_eq!(
        s.place(
            &alice(),
            id("other"),
            id("o1"),
            vec![item("tea", None, 3)],
            None,
            1_000
        )
        .map(|_| ()),
        Err(Error::OrderIdTaken(id("o1")))
    );
    assert_eq!(
        s.place(
            &alice(),
            id("place-o1"),
            id("o1"),
            vec![item("tea", None, 4)],
            None,
            1_000
        )
        .map(|_| ()),
        Err(Error::CommandIdReused(id("place-o1")))
    );

    let accepted = command(&mut s, &agent(), "o1", 1, OrderCommand::Accept).unwrap();
    let before = s.clone();
    let replay = command(&mut s, &agent(), "o1", 1, OrderCommand::Accept).unwrap();
    assert!(replay.replayed && !accepted.replayed);
    assert_eq!(replay.events, accepted.events);
    assert_eq!(s, before, "a replay changes nothing");
    assert_eq!(
        command(
            &mut s,
            &agent(),
            "o1",
            1,
            OrderCommand::Reject {
                reason: String::new()
            }
        )
        .map(|_| ()),
        Err(Error::CommandIdReused(id("o1-1")))
    );
    // Another actor replaying someone's command id learns nothing.
    assert_eq!(
        command(&mut s, &owner(), "o1", 1, OrderCommand::Accept).map(|_| ()),
        Err(Error::CommandIdReused(id("o1-1")))
    );
    // A refused command is not recorded: the same id may succeed later.
    assert!(command(&mut s, &alice(), "o1", 9, OrderCommand::MarkDelivered).is_err());
    let pay_now = command(&mut s, &alice(), "o1", 2, pay(PaymentPlan::Full)).unwrap();
    let pay_again = command(&mut s, &alice(), "o1", 2, pay(PaymentPlan::Full)).unwrap();
    assert_eq!(
        pay_again.requests, pay_now.requests,
        "the same provider requests, same keys"
    );
}

#[test]
fn the_command_log_is_bounded() {
    let mut s = shop();
    awaiting(&mut s);
    settle(&mut s, "o1", 1, 1500);
    // Refused commands do not fill the log; applied ones do. Partial refunds of 1 cent each
    // stop at the refund limit long before the log limit.
    let mut applied_count = 3; // place, accept, request payment
    for n in 0..100u32 {
        if command(
            &mut s,
            &owner(),
            "o1",
            100 + n,
            OrderCommand::Refund { amount: eur(1) },
        )
        .is_ok()
        {
            applied_count += 1;
        }
    }
    assert!(applied_count < COMMANDS_PER_ORDER_MAX);
    assert_eq!(
        s.order(&id("o1")).unwrap().payments().unwrap().refunding(),
        eur(20)
    );
}

#[test]
fn checkout_sends_the_cart_once() {
    let mut s = shop();
    let alice_id = user("alice");
    s.cart_add(&alice_id, &key("tea", None), 2, 10).unwrap();
    s.cart_add(&alice_id, &key("shirt", Some("m")), 1, 11)
        .unwrap();
    let e = s.checkout(&alice(), id("c1"), id("o1"), None, 12).unwrap();
    assert_eq!(names(&e), ["OrderPlaced", "StockReserved"]);
    assert_eq!(s.order(&id("o1")).unwrap().total(), eur(2 * 500 + 2200));
    assert!(s.cart(&alice_id).unwrap().is_empty());
    // A retry after the cart was refilled replays and leaves the new cart alone.
    s.cart_add(&alice_id, &key("mug", None), 1, 13).unwrap();
    let again = s.checkout(&alice(), id("c1"), id("o1"), None, 14).unwrap();
    assert!(again.replayed);
    assert_eq!(s.cart(&alice_id).unwrap().items().len(), 1);
    assert_eq!(
        s.checkout(&bob(), id("c9"), id("o9"), None, 15).map(|_| ()),
        Err(Error::EmptyCart)
    );
    assert_eq!(
        s.checkout(&owner(), id("c9"), id("o9"), None, 15)
            .map(|_| ()),
        Err(Error::Forbidden {
            action: "check out another's cart"
        })
    );
    assert_eq!(
        s.cart_set(&alice_id, &key("mug", None), 3, 16)
            .unwrap()
            .items()[0]
            .quantity,
        3
    );
    assert!(
        s.cart_remove(&alice_id, &key("mug", None), 17)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn placement_is_all_or_nothing() {
    let mut s = shop();
    s.coupons_mut()
        .put(CouponSpec {
            code: id("big"),
            discount: Discount::Amount(eur(100)),
            starts_ms: 0,
            ends_ms: u64::MAX,
            total_max: Some(1),
            per_customer_max: None,
            minimum: Some(eur(2000)),
        })
        .unwrap();
    let try_place = |s: &mut Shop, order: &str, items, coupon: Option<&str>| {
        s.place(
            &alice(),
            id(&format!("p-{order}")),
            id(order),
            items,
            coupon.map(id),
            1_000,
        )
    };
    // The coupon's minimum is not met: nothing is reserved.
    assert_eq!(
        try_place(&mut s, "o1", vec![item("tea", None, 3)], Some("big")).map(|_| ()),
        Err(Error::BelowMinimumOrder { minimum: eur(2000) })
    );
    assert_eq!(tea(&s), (10, 0));
    // Out of stock: the coupon is not redeemed.
    assert!(matches!(
        try_place(
            &mut s,
            "o1",
            vec![item("tea", None, 5), item("mug", None, 3)],
            Some("big")
        ),
        Err(Error::OutOfStock { .. })
    ));
    assert_eq!(s.coupons().coupon(&id("big")).unwrap().redeemed(), 0);
    assert_eq!(tea(&s), (10, 0));
    assert!(s.order(&id("o1")).is_none());
    // Bad input.
    assert_eq!(
        try_place(&mut s, "o1", vec![], None).map(|_| ()),
        Err(Error::EmptyCart)
    );
    assert!(matches!(
        try_place(
            &mut s,
            "o1",
            vec![item("tea", None, 1), item("tea", None, 1)],
            None
        ),
        Err(Error::InvalidField {
            field: "order lines",
            ..
        })
    ));
    assert!(matches!(
        try_place(
            &mut s,
            "o1",
            vec![item("tea", None, 1), item("fan", None, 1)],
            None
        ),
        Err(Error::CurrencyMix { .. })
    ));
    assert_eq!(
        try_place(&mut s, "o1", vec![item("old", None, 1)], None).map(|_| ()),
        Err(Error::InactiveProduct(id("old")))
    );
    // Then it works, and the coupon is counted once.
    let e = try_place(
        &mut s,
        "o1",
        vec![item("tea", None, 5), item("mug", None, 2)],
        Some("big"),
    )
    .unwrap();
    assert_eq!(
        names(&e),
        ["OrderPlaced", "StockReserved", "CouponRedeemed"]
    );
    let order = s.order(&id("o1")).unwrap();
    assert_eq!(
        (order.subtotal(), order.discount(), order.total()),
        (eur(4900), eur(100), eur(4800))
    );
    assert_eq!(s.coupons().coupon(&id("big")).unwrap().redeemed(), 1);
}

#[test]
fn rejection_and_cancellation_give_stock_and_coupon_back() {
    let mut s = shop();
    s.coupons_mut()
        .put(CouponSpec {
            code: id("c"),
            discount: Discount::Percent { basis_points: 1000 },
            starts_ms: 0,
            ends_ms: u64::MAX,
            total_max: Some(1),
            per_customer_max: None,
            minimum: None,
        })
        .unwrap();
    s.place(
        &alice(),
        id("p1"),
        id("o1"),
        vec![item("tea", None, 2)],
        Some(id("c")),
        1_000,
    )
    .unwrap();
    let e = command(
        &mut s,
        &agent(),
        "o1",
        1,
        OrderCommand::Reject {
            reason: "closed today".into(),
        },
    )
    .unwrap();
    assert_eq!(
        names(&e),
        ["OrderRejected", "StockReleased", "CouponReleased"]
    );
    assert_eq!(tea(&s), (10, 0));
    assert_eq!(s.coupons().coupon(&id("c")).unwrap().redeemed(), 0);

    s.place(
        &bob(),
        id("p2"),
        id("o2"),
        vec![item("tea", None, 2)],
        Some(id("c")),
        1_000,
    )
    .unwrap();
    command(&mut s, &agent(), "o2", 1, OrderCommand::Accept).unwrap();
    command(&mut s, &bob(), "o2", 2, pay(PaymentPlan::Full)).unwrap();
    let e = command(&mut s, &bob(), "o2", 3, cancel()).unwrap();
    assert_eq!(
        names(&e),
        ["OrderCancelled", "StockReleased", "CouponReleased"]
    );
    assert_eq!(
        e.requests[0].kind,
        RequestKind::Void,
        "the pending authorization is voided"
    );
    // The authorization arrives anyway: nothing is captured, the void stands.
    let late = s
        .handle_notification(
            &notification(
                "o2",
                1,
                1,
                1,
                NotificationKind::Authorized { amount: eur(900) },
            ),
            3_000,
        )
        .unwrap();
    assert_eq!(late, Notified::Unchanged);
    assert_eq!(
        command(&mut s, &bob(), "o2", 4, cancel()).map(|_| ()),
        Err(Error::InvalidTransition {
            status: OrderStatus::Cancelled,
            command: "cancel"
        })
    );
}

#[test]
fn money_reaching_a_closed_order_goes_back() {
    let mut s = shop();
    awaiting(&mut s);
    // The customer cancels; the provider had in fact authorized and (auto-)captured.
    command(&mut s, &alice(), "o1", 3, cancel()).unwrap();
    let captured = notification(
        "o1",
        1,
        1,
        2,
        NotificationKind::Captured { amount: eur(1500) },
    );
    let Notified::NeedsSync { payment, attempt } = s.handle_notification(&captured, 3_000).unwrap()
    else {
        panic!("a capture nobody asked for is not believed");
    };
    let e = s
        .apply_snapshot(
            &Snapshot {
                payment,
                attempt,
                sequence: 2,
                status: SnapshotStatus::Captured,
                authorized: eur(1500),
                captured: eur(1500),
                refunds: Vec::new(),
            },
            3_000,
        )
        .unwrap();
    assert_eq!(
        names(&e),
        ["PaymentAuthorized", "PaymentSucceeded", "RefundRequested"]
    );
    assert_eq!(
        e.requests[0].kind,
        RequestKind::Refund {
            refund: id("o1#1#r1"),
            amount: eur(1500)
        }
    );
    assert_eq!(status(&s, "o1"), OrderStatus::Cancelled);
    assert_eq!(tea(&s), (10, 0));
}

#[test]
fn cancelling_during_capture_waits() {
    let mut s = shop();
    awaiting(&mut s);
    s.handle_notification(
        &notification(
            "o1",
            1,
            1,
            1,
            NotificationKind::Authorized { amount: eur(1500) },
        ),
        3_000,
    )
    .unwrap();
    assert_eq!(
        command(&mut s, &alice(), "o1", 3, cancel()).map(|_| ()),
        Err(Error::PaymentInProgress)
    );
    // Expiry waits too.
    let late = 1_000 + UNPAID_ORDER_TTL_MS_DEFAULT;
    assert!(s.tick(late).events.is_empty());
    assert_eq!(status(&s, "o1"), OrderStatus::AwaitingPayment);
}

#[test]
fn unpaid_orders_expire() {
    let mut s = shop();
    awaiting(&mut s);
    let deadline = 1_000 + UNPAID_ORDER_TTL_MS_DEFAULT;
    assert_eq!(s.next_deadline_ms(), Some(deadline));
    assert!(s.tick(deadline - 1).events.is_empty());
    let e = s.tick(deadline);
    assert_eq!(names(&e), ["OrderExpired", "StockReleased"]);
    assert_eq!(e.requests[0].kind, RequestKind::Void);
    assert_eq!(status(&s, "o1"), OrderStatus::Expired);
    assert_eq!(tea(&s), (10, 0));
    assert_eq!(
        s.catalog().reservation(&id("o1")),
        Some(ReservationState::Released)
    );
    assert!(s.tick(deadline + 1).events.is_empty(), "expires once");
    assert_eq!(s.next_deadline_ms(), None);
    // A declined attempt cannot be retried on an expired order.
    assert!(matches!(
        command(&mut s, &alice(), "o1", 3, OrderCommand::RetryPayment),
        Err(Error::InvalidTransition { .. })
    ));
}

#[test]
fn declined_payments_are_retried_by_the_customer() {
    let mut s = shop();
    awaiting(&mut s);
    assert_eq!(
        command(&mut s, &alice(), "o1", 3, OrderCommand::RetryPayment).map(|_| ()),
        Err(Error::NothingToRetry)
    );
    let e = applied(
        s.handle_notification(
            &notification("o1", 1, 1, 1, NotificationKind::Failed),
            3_000,
        )
        .unwrap(),
    );
    assert_eq!(names(&e), ["PaymentFailed"]);
    let retry = command(&mut s, &alice(), "o1", 4, OrderCommand::RetryPayment).unwrap();
    assert_eq!(retry.requests[0].idempotency_key, "piazza:o1:1:authorize:2");
    let a = s
        .handle_notification(
            &notification(
                "o1",
                1,
                2,
                1,
                NotificationKind::Authorized { amount: eur(1500) },
            ),
            3_000,
        )
        .unwrap();
    assert!(matches!(a, Notified::Applied(_)));
    let c = applied(
        s.handle_notification(
            &notification(
                "o1",
                1,
                2,
                2,
                NotificationKind::Captured { amount: eur(1500) },
            ),
            3_000,
        )
        .unwrap(),
    );
    assert_eq!(
        names(&c),
        ["PaymentSucceeded", "OrderPaid", "StockCommitted"]
    );
}

#[test]
fn notifications_for_unknown_payments_are_refused() {
    let mut s = shop();
    let n = notification("nope", 1, 1, 1, NotificationKind::Failed);
    assert_eq!(
        s.handle_notification(&n, 0),
        Err(Error::UnknownPayment(PaymentId::new(&id("nope"), 1)))
    );
    assert_eq!(
        ErrorCode::from(Error::UnknownPayment(n.payment.clone())),
        ErrorCode::NotFound
    );
}

#[test]
fn refunds_partial_then_full() {
    let mut s = shop();
    awaiting(&mut s);
    settle(&mut s, "o1", 1, 1500);
    command(
        &mut s,
        &agent(),
        "o1",
        3,
        OrderCommand::Fulfil { tracking: None },
    )
    .unwrap();
    assert_eq!(
        command(
            &mut s,
            &owner(),
            "o1",
            4,
            OrderCommand::Refund { amount: eur(1501) }
        )
        .map(|_| ()),
        Err(Error::RefundExceedsRefundable {
            requested: eur(1501),
            refundable: eur(1500)
        })
    );
    let e = command(
        &mut s,
        &owner(),
        "o1",
        4,
        OrderCommand::Refund { amount: eur(500) },
    )
    .unwrap();
    assert_eq!(names(&e), ["RefundRequested"]);
    let done = |s: &mut Shop, k: u32, amount: i64| {
        applied(
            s.handle_notification(
                &notification(
                    "o1",
                    1,
                    1,
                    2 + u64::from(k),
                    NotificationKind::Refunded {
                        refund: id(&format!("o1#1#r{k}")),
                        amount: eur(amount),
                    },
                ),
                4_000,
            )
            .unwrap(),
        )
    };
    assert_eq!(names(&done(&mut s, 1, 500)), ["RefundIssued"]);
    assert_eq!(status(&s, "o1"), OrderStatus::Fulfilled, "partly refunded");
    command(
        &mut s,
        &manager(),
        "o1",
        5,
        OrderCommand::Refund { amount: eur(1000) },
    )
    .unwrap();
    assert_eq!(
        names(&done(&mut s, 2, 1000)),
        ["RefundIssued", "OrderRefunded"]
    );
    assert_eq!(status(&s, "o1"), OrderStatus::Refunded);
    assert!(matches!(
        command(
            &mut s,
            &owner(),
            "o1",
            6,
            OrderCommand::Refund { amount: eur(1) }
        ),
        Err(Error::InvalidTransition {
            status: OrderStatus::Refunded,
            ..
        })
    ));
    s.archive(&id("o1")).unwrap();
}

#[test]
fn nothing_to_pay_is_paid_at_once() {
    let mut s = shop();
    s.coupons_mut()
        .put(CouponSpec {
            code: id("free"),
            discount: Discount::Percent {
                basis_points: 10_000,
            },
            starts_ms: 0,
            ends_ms: u64::MAX,
            total_max: None,
            per_customer_max: None,
            minimum: None,
        })
        .unwrap();
    s.place(
        &alice(),
        id("p1"),
        id("o1"),
        vec![item("tea", None, 1)],
        Some(id("free")),
        1_000,
    )
    .unwrap();
    command(&mut s, &agent(), "o1", 1, OrderCommand::Accept).unwrap();
    let e = command(&mut s, &alice(), "o1", 2, pay(PaymentPlan::Full)).unwrap();
    assert_eq!(
        names(&e),
        ["PaymentRequested", "OrderPaid", "StockCommitted"]
    );
    assert!(e.requests.is_empty());
    assert_eq!(
        command(
            &mut s,
            &owner(),
            "o1",
            3,
            OrderCommand::Refund { amount: eur(1) }
        )
        .map(|_| ()),
        Err(Error::RefundExceedsRefundable {
            requested: eur(1),
            refundable: eur(0)
        })
    );
}

#[test]
fn instalments_are_charged_on_schedule_and_retried() {
    let mut s = shop();
    place(&mut s, &alice(), "o1", vec![item("shirt", Some("m"), 1)]); // 22.00
    command(&mut s, &agent(), "o1", 1, OrderCommand::Accept).unwrap();
    let plan = PaymentPlan::Instalments {
        count: 3,
        interval_ms: 30 * DAY_MS,
    };
    let e = command(&mut s, &alice(), "o1", 2, pay(plan)).unwrap();
    assert_eq!(
        e.requests[0].kind,
        RequestKind::Authorize { amount: eur(734) }
    );
    assert_eq!(
        settle(&mut s, "o1", 1, 734),
        [
            "PaymentAuthorized",
            "PaymentSucceeded",
            "OrderPaid",
            "StockCommitted"
        ]
    );
    let second_due = 2_000 + 30 * DAY_MS;
    assert_eq!(s.next_deadline_ms(), Some(second_due));
    assert!(s.tick(second_due - 1).requests.is_empty());
    let e = s.tick(second_due);
    assert_eq!(e.requests.len(), 1);
    assert_eq!(e.requests[0].payment, PaymentId::new(&id("o1"), 2));
    assert_eq!(
        e.requests[0].kind,
        RequestKind::Authorize { amount: eur(733) }
    );
    assert!(s.tick(second_due).requests.is_empty(), "asked once");
    // Declined: retried automatically a day later with a new attempt.
    s.handle_notification(
        &notification("o1", 2, 1, 1, NotificationKind::Failed),
        second_due + 5,
    )
    .unwrap();
    let retry_at = second_due + 5 + INSTALMENT_RETRY_MS_DEFAULT;
    assert_eq!(s.next_deadline_ms(), Some(retry_at));
    let e = s.tick(retry_at);
    assert_eq!(
        (
            e.requests[0].attempt,
            e.requests[0].idempotency_key.as_str()
        ),
        (2, "piazza:o1:2:authorize:2")
    );
    assert_eq!(
        status(&s, "o1"),
        OrderStatus::Paid,
        "a late instalment does not unpay the order"
    );
}

#[test]
fn a_full_refund_stops_the_instalments() {
    let mut s = shop();
    place(&mut s, &alice(), "o1", vec![item("tea", None, 2)]); // 10.00
    command(&mut s, &agent(), "o1", 1, OrderCommand::Accept).unwrap();
    let plan = PaymentPlan::Instalments {
        count: 2,
        interval_ms: DAY_MS,
    };
    command(&mut s, &alice(), "o1", 2, pay(plan)).unwrap();
    settle(&mut s, "o1", 1, 500);
    let e = command(
        &mut s,
        &owner(),
        "o1",
        3,
        OrderCommand::Refund { amount: eur(500) },
    )
    .unwrap();
    assert_eq!(names(&e), ["RefundRequested"]);
    let payments = s.order(&id("o1")).unwrap().payments().unwrap();
    assert!(payments.is_stopped());
    assert_eq!(payments.parts()[1].status(), PaymentStatus::Cancelled);
    assert!(
        s.tick(2_000 + DAY_MS).requests.is_empty(),
        "the second instalment is never charged"
    );
    let e = applied(
        s.handle_notification(
            &notification(
                "o1",
                1,
                1,
                3,
                NotificationKind::Refunded {
                    refund: id("o1#1#r1"),
                    amount: eur(500),
                },
            ),
            5_000,
        )
        .unwrap(),
    );
    assert_eq!(names(&e), ["RefundIssued", "OrderRefunded"]);
}

#[test]
fn customers_have_few_unpaid_orders() {
    let mut s = shop();
    s.catalog_mut()
        .set_stock(&key("tea", None), Some(1000))
        .unwrap();
    for i in 0..UNPAID_ORDERS_PER_CUSTOMER_MAX {
        place(
            &mut s,
            &alice(),
            &format!("o{i}"),
            vec![item("tea", None, 1)],
        );
    }
    assert!(matches!(
        s.place(
            &alice(),
            id("x"),
            id("x"),
            vec![item("tea", None, 1)],
            None,
            1_000
        ),
        Err(Error::TooMany {
            what: "unpaid orders of a customer",
            ..
        })
    ));
    place(&mut s, &bob(), "b1", vec![item("tea", None, 1)]);
}

#[test]
fn archive_waits_for_final_settled_orders() {
    let mut s = shop();
    awaiting(&mut s);
    assert_eq!(s.archive(&id("o1")), Err(Error::InUse { what: "order" }));
    command(&mut s, &alice(), "o1", 3, cancel()).unwrap();
    assert_eq!(
        s.archive(&id("o1")),
        Err(Error::InUse { what: "order" }),
        "the void is in flight"
    );
    s.handle_notification(
        &notification("o1", 1, 1, 1, NotificationKind::Voided),
        3_000,
    )
    .unwrap();
    s.archive(&id("o1")).unwrap();
    assert_eq!(s.archive(&id("o1")), Err(Error::UnknownOrder(id("o1"))));
    let pending = s.pending_requests();
    assert!(pending.is_empty());
    let unknown: OrderId = id("zz");
    let c: CommandId = id("c");
    assert_eq!(
        s.handle(&alice(), c, &unknown, OrderCommand::Accept, 0)
            .map(|_| ()),
        Err(Error::UnknownOrder(unknown))
    );
}
