//! Payments: plans, requests and keys, notifications, refunds, syncs.

use super::super::error::Error;
use super::super::event::CommerceEvent;
use super::super::ids::{OrderId, PaymentId, RefundId};
use super::super::payment::{
    ATTEMPTS_MAX, Handled, INSTALMENT_INTERVAL_MS_MIN, Notification, NotificationKind,
    OrderPayments, Payment, PaymentOp, PaymentPlan, PaymentStatus, REFUNDS_MAX, RefundSnapshot,
    RefundStatus, RequestKind, Snapshot, SnapshotStatus, idempotency_key,
};
use super::{eur, id, jpy};

const DAY_MS: u64 = INSTALMENT_INTERVAL_MS_MIN;

fn order() -> OrderId {
    id("o-1")
}

fn full(total: i64) -> OrderPayments {
    OrderPayments::new(&order(), eur(total), PaymentPlan::Full, 0).unwrap()
}

fn first(p: &mut OrderPayments) -> &mut Payment {
    p.first_mut().unwrap()
}

/// A notification about payment #1 of o-1; the event id is unique per (attempt, sequence, tag).
fn note(attempt: u32, sequence: u64, kind: NotificationKind) -> Notification {
    let tag = format!("{kind:?}").len();
    Notification {
        event: id(&format!("evt-{attempt}-{sequence}-{tag}")),
        payment: PaymentId::new(&order(), 1),
        attempt,
        sequence,
        kind,
    }
}

fn authorized(amount: i64) -> NotificationKind {
    NotificationKind::Authorized {
        amount: eur(amount),
    }
}

fn captured(amount: i64) -> NotificationKind {
    NotificationKind::Captured {
        amount: eur(amount),
    }
}

fn event_names(handled: &Handled) -> Vec<&'static str> {
    match handled {
        Handled::Applied { events, .. } => events.iter().map(CommerceEvent::name).collect(),
        _ => Vec::new(),
    }
}

/// A payment of 1000 that was authorized and captured.
fn captured_payment() -> OrderPayments {
    let mut p = full(1000);
    first(&mut p).authorize().unwrap();
    first(&mut p).handle(&note(1, 1, authorized(1000)));
    first(&mut p).capture().unwrap();
    first(&mut p).handle(&note(1, 2, captured(1000)));
    assert_eq!(first(&mut p).status(), PaymentStatus::Captured);
    p
}

fn snapshot(status: SnapshotStatus, authorized: i64, captured: i64) -> Snapshot {
    Snapshot {
        payment: PaymentId::new(&order(), 1),
        attempt: 1,
        sequence: 10,
        status,
        authorized: eur(authorized),
        captured: eur(captured),
        refunds: Vec::new(),
    }
}

#[test]
fn idempotency_keys_are_pure_and_distinct() {
    let o = order();
    assert_eq!(
        idempotency_key(&o, 1, PaymentOp::Authorize, 1),
        "piazza:o-1:1:authorize:1"
    );
    assert_eq!(
        idempotency_key(&o, 2, PaymentOp::Refund(3), 1),
        "piazza:o-1:2:refund-3:1"
    );
    assert_eq!(
        idempotency_key(&o, 1, PaymentOp::Capture, 2),
        idempotency_key(&o, 1, PaymentOp::Capture, 2)
    );
    let keys: std::collections::BTreeSet<String> = [
        idempotency_key(&o, 1, PaymentOp::Authorize, 1),
        idempotency_key(&o, 1, PaymentOp::Authorize, 2),
        idempotency_key(&o, 2, PaymentOp::Authorize, 1),
        idempotency_key(&o, 1, PaymentOp::Capture, 1),
        idempotency_key(&o, 1, PaymentOp::Void, 1),
        idempotency_key(&o, 1, PaymentOp::Refund(1), 1),
        idempotency_key(&id("o-2"), 1, PaymentOp::Authorize, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys.len(), 7);
}

#[test]
fn plans_split_the_total_and_are_validated() {
    let plan = |count, interval_ms| PaymentPlan::Instalments { count, interval_ms };
    let p = OrderPayments::new(&order(), eur(1000), plan(3, DAY_MS), 5).unwrap();
    let amounts: Vec<i64> = p.parts().iter().map(|x| x.amount().minor()).collect();
    assert_eq!(amounts, [334, 333, 333]);
    let dues: Vec<u64> = p.parts().iter().map(Payment::due_ms).collect();
    assert_eq!(dues, [5, 5 + DAY_MS, 5 + 2 * DAY_MS]);
    assert_eq!(p.parts()[2].id().as_str(), "o-1#3");
    for (total, bad) in [
        (1000, plan(1, DAY_MS)),
        (1000, plan(13, DAY_MS)),
        (1000, plan(2, DAY_MS - 1)),
        (2, plan(3, DAY_MS)),
    ] {
        assert!(
            matches!(
                OrderPayments::new(&order(), eur(total), bad, 0),
                Err(Error::InvalidField { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(OrderPayments::new(&order(), eur(0), PaymentPlan::Full, 0).is_err());
    assert!(OrderPayments::new(&order(), eur(12), plan(12, DAY_MS), 0).is_ok());
    assert_eq!(
        OrderPayments::new(&order(), eur(100), plan(2, u64::MAX), 1),
        Err(Error::AmountOverflow)
    );
}

#[test]
fn happy_path_asks_then_applies() {
    let mut p = full(1000);
    let request = first(&mut p).authorize().unwrap();
    assert_eq!(request.kind, RequestKind::Authorize { amount: eur(1000) });
    assert_eq!(request.idempotency_key, "piazza:o-1:1:authorize:1");
    assert_eq!(first(&mut p).authorize(), Err(Error::PaymentInProgress));
    assert_eq!(
        first(&mut p).capture(),
        None,
        "no capture without authorization"
    );

    let h = first(&mut p).handle(&note(1, 1, authorized(1000)));
    assert_eq!(event_names(&h), ["PaymentAuthorized"]);
    let capture = first(&mut p).capture().unwrap();
    assert_eq!(capture.kind, RequestKind::Capture { amount: eur(1000) });
    assert_eq!(first(&mut p).capture(), None, "asked once");
    let h = first(&mut p).handle(&note(1, 2, captured(1000)));
    assert_eq!(event_names(&h), ["PaymentSucceeded"]);
    assert_eq!(p.captured(), eur(1000));
    assert_eq!(first(&mut p).authorize(), Err(Error::NothingToRetry));
}

#[test]
fn duplicates_stale_and_contradictions_change_nothing() {
    let mut p = full(1000);
    first(&mut p).authorize().unwrap();
    // Captured before the authorization was seen: not believed.
    assert_eq!(
        first(&mut p).handle(&note(1, 2, captured(1000))),
        Handled::NeedsSync {
            payment: PaymentId::new(&order(), 1),
            attempt: 1
        }
    );
    // A different amount: not believed.
    assert!(matches!(
        first(&mut p).handle(&note(1, 1, authorized(999))),
        Handled::NeedsSync { .. }
    ));
    // An attempt never started.
    assert!(matches!(
        first(&mut p).handle(&note(2, 1, authorized(1000))),
        Handled::NeedsSync { .. }
    ));
    assert_eq!(first(&mut p).status(), PaymentStatus::Authorizing);

    let auth = note(1, 1, authorized(1000));
    assert!(matches!(
        first(&mut p).handle(&auth),
        Handled::Applied { .. }
    ));
    assert_eq!(first(&mut p).handle(&auth), Handled::Duplicate);
    // The same fact under another event id restates the state.
    let mut restated = auth.clone();
    restated.event = id("evt-other");
    restated.sequence = 3;
    assert_eq!(first(&mut p).handle(&restated), Handled::Unchanged);
    // An older status event (a failure from before the authorization) is stale.
    assert_eq!(
        first(&mut p).handle(&note(1, 0, NotificationKind::Failed)),
        Handled::Stale
    );
    assert_eq!(first(&mut p).status(), PaymentStatus::Authorized);
    // A capture that was never asked for.
    assert!(matches!(
        first(&mut p).handle(&note(1, 4, captured(1000))),
        Handled::NeedsSync { .. }
    ));
    // A void that was never asked for.
    assert!(matches!(
        first(&mut p).handle(&note(1, 4, NotificationKind::Voided)),
        Handled::NeedsSync { .. }
    ));
    assert_eq!(first(&mut p).status(), PaymentStatus::Authorized);
}

#[test]
fn declines_start_new_attempts_with_new_keys() {
    let mut p = full(1000);
    first(&mut p).authorize().unwrap();
    let h = first(&mut p).handle(&note(1, 1, NotificationKind::Failed));
    assert_eq!(event_names(&h), ["PaymentFailed"]);
    let retry = first(&mut p).authorize().unwrap();
    assert_eq!(retry.attempt, 2);
    assert_eq!(retry.idempotency_key, "piazza:o-1:1:authorize:2");
    // Late news about attempt 1: its failure is old; an authorization on it is voided at once.
    assert_eq!(
        first(&mut p).handle(&note(1, 5, NotificationKind::Failed)),
        Handled::Stale
    );
    let h = first(&mut p).handle(&note(1, 6, authorized(1000)));
    let Handled::Applied { events, requests } = h else {
        panic!("{h:?}")
    };
    assert!(events.is_empty());
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].attempt, &requests[0].kind),
        (1, &RequestKind::Void)
    );
    assert_eq!(requests[0].idempotency_key, "piazza:o-1:1:void:1");
    assert!(matches!(
        first(&mut p).handle(&note(1, 7, captured(1000))),
        Handled::NeedsSync { .. }
    ));
    assert_eq!(first(&mut p).status(), PaymentStatus::Authorizing);
    // Attempts are bounded.
    for attempt in 2..=ATTEMPTS_MAX {
        first(&mut p).handle(&note(attempt, 1, NotificationKind::Failed));
        if attempt < ATTEMPTS_MAX {
            first(&mut p).authorize().unwrap();
        }
    }
    assert!(!first(&mut p).can_retry());
    assert_eq!(first(&mut p).authorize(), Err(Error::NothingToRetry));
}

#[test]
fn stop_voids_or_cancels() {
    let mut p = full(1000);
    first(&mut p).authorize().unwrap();
    let stop = p.stop();
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].kind, RequestKind::Void);
    assert!(p.is_stopped() && !p.outstanding());
    // The authorization raced the void: nothing to do, the void settles it.
    assert_eq!(
        first(&mut p).handle(&note(1, 1, authorized(1000))),
        Handled::Unchanged
    );
    let h = first(&mut p).handle(&note(1, 2, NotificationKind::Voided));
    assert_eq!(event_names(&h), ["PaymentVoided"]);

    let plan = PaymentPlan::Instalments {
        count: 2,
        interval_ms: DAY_MS,
    };
    let mut p = OrderPayments::new(&order(), eur(1000), plan, 0).unwrap();
    assert!(p.outstanding());
    assert!(p.stop().is_empty(), "nothing was asked of the provider");
    assert!(
        p.parts()
            .iter()
            .all(|x| x.status() == PaymentStatus::Cancelled)
    );
}

#[test]
fn refunds_never_exceed_what_was_captured() {
    let mut p = captured_payment();
    assert_eq!(
        p.refund(eur(1001)),
        Err(Error::RefundExceedsRefundable {
            requested: eur(1001),
            refundable: eur(1000)
        })
    );
    assert!(matches!(p.refund(eur(0)), Err(Error::InvalidField { .. })));
    assert!(matches!(p.refund(jpy(1)), Err(Error::CurrencyMix { .. })));
    let r1 = p.refund(eur(300)).unwrap();
    assert_eq!(r1.requests[0].idempotency_key, "piazza:o-1:1:refund-1:1");
    let r2 = p.refund(eur(700)).unwrap();
    assert_eq!(p.refundable(), eur(0));
    assert_eq!(p.refunding(), eur(1000));
    assert!(p.refund(eur(1)).is_err(), "refunds in flight count");
    let refund_of = |e: &super::super::event::Effects| match &e.requests[0].kind {
        RequestKind::Refund { refund, .. } => refund.clone(),
        other => panic!("{other:?}"),
    };
    let (id1, id2) = (refund_of(&r1), refund_of(&r2));
    // Refund notifications may arrive in any order; each applies once.
    let done2 = note(
        1,
        4,
        NotificationKind::Refunded {
            refund: id2.clone(),
            amount: eur(700),
        },
    );
    let done1 = note(
        1,
        3,
        NotificationKind::Refunded {
            refund: id1.clone(),
            amount: eur(300),
        },
    );
    assert_eq!(event_names(&first(&mut p).handle(&done2)), ["RefundIssued"]);
    assert_eq!(event_names(&first(&mut p).handle(&done1)), ["RefundIssued"]);
    assert_eq!(first(&mut p).handle(&done1), Handled::Duplicate);
    let mut again = done1.clone();
    again.event = id("evt-again");
    assert_eq!(first(&mut p).handle(&again), Handled::Unchanged);
    assert_eq!(p.refunded(), eur(1000));
    // A refund Piazza does not know, or a wrong amount: ask the provider.
    let unknown = NotificationKind::Refunded {
        refund: id("re_ext"),
        amount: eur(1),
    };
    assert!(matches!(
        first(&mut p).handle(&note(1, 9, unknown)),
        Handled::NeedsSync { .. }
    ));
}

#[test]
fn a_failed_refund_is_refundable_again() {
    let mut p = captured_payment();
    let r = p.refund(eur(400)).unwrap();
    let RequestKind::Refund { refund, .. } = r.requests[0].kind.clone() else {
        panic!()
    };
    let h = first(&mut p).handle(&note(
        1,
        3,
        NotificationKind::RefundFailed {
            refund: refund.clone(),
        },
    ));
    assert_eq!(event_names(&h), ["RefundFailed"]);
    assert_eq!(p.refundable(), eur(1000));
    // Succeeding after failing is a contradiction.
    let late = NotificationKind::Refunded {
        refund,
        amount: eur(400),
    };
    assert!(matches!(
        first(&mut p).handle(&note(1, 4, late)),
        Handled::NeedsSync { .. }
    ));
}

#[test]
fn refunds_per_payment_are_bounded() {
    let mut p = captured_payment();
    for _ in 0..REFUNDS_MAX {
        p.refund(eur(1)).unwrap();
    }
    assert_eq!(
        p.refund(eur(1)),
        Err(Error::TooMany {
            what: "refunds of a payment",
            max: REFUNDS_MAX
        })
    );
}

#[test]
fn refunds_take_from_the_newest_instalments_first() {
    let plan = PaymentPlan::Instalments {
        count: 2,
        interval_ms: DAY_MS,
    };
    let mut p = OrderPayments::new(&order(), eur(1000), plan, 0).unwrap();
    for (i, n) in [(0usize, 1u32), (1, 2)] {
        let id = PaymentId::new(&order(), n);
        let part = p.part_mut(&id).unwrap();
        part.authorize().unwrap();
        let mut a = note(1, 1, authorized(500));
        a.payment = id.clone();
        part.handle(&a);
        part.capture().unwrap();
        let mut c = note(1, 2, captured(500));
        c.payment = id;
        c.event = id_event(i);
        part.handle(&c);
    }
    let out = p.refund(eur(700)).unwrap();
    let split: Vec<(String, i64)> = out
        .requests
        .iter()
        .map(|r| match &r.kind {
            RequestKind::Refund { amount, .. } => (r.payment.to_string(), amount.minor()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        split,
        [("o-1#2".to_owned(), 500), ("o-1#1".to_owned(), 200)]
    );
}

fn id_event(i: usize) -> super::super::ids::ProviderEventId {
    id(&format!("evt-capture-{i}"))
}

#[test]
fn snapshots_apply_every_step_once() {
    let mut p = full(1000);
    first(&mut p).authorize().unwrap();
    // The provider authorized and captured (say it was configured to capture at once).
    let h = first(&mut p)
        .apply_snapshot(&snapshot(SnapshotStatus::Captured, 1000, 1000))
        .unwrap();
    assert_eq!(event_names(&h), ["PaymentAuthorized", "PaymentSucceeded"]);
    // The same snapshot again, or an older one: nothing.
    assert_eq!(
        event_names(
            &first(&mut p)
                .apply_snapshot(&snapshot(SnapshotStatus::Captured, 1000, 1000))
                .unwrap()
        ),
        Vec::<&str>::new()
    );
    let mut old = snapshot(SnapshotStatus::Authorized, 1000, 0);
    old.sequence = 9;
    assert_eq!(first(&mut p).apply_snapshot(&old).unwrap(), Handled::Stale);
    // A newer one saying less was captured is refused whole.
    assert!(matches!(
        first(&mut p).apply_snapshot(&snapshot(SnapshotStatus::Authorized, 1000, 0)),
        Err(Error::ProviderInconsistent {
            reason: "status went backwards",
            ..
        })
    ));
    assert_eq!(p.captured(), eur(1000));
}

#[test]
fn inconsistent_snapshots_are_refused() {
    let mut p = full(1000);
    first(&mut p).authorize().unwrap();
    let bad = [
        snapshot(SnapshotStatus::Captured, 1000, 500),
        snapshot(SnapshotStatus::Authorized, 1000, 1000),
        snapshot(SnapshotStatus::Authorized, 2000, 0),
        snapshot(SnapshotStatus::Failed, 1000, 1000),
        Snapshot {
            attempt: 2,
            ..snapshot(SnapshotStatus::Failed, 0, 0)
        },
        Snapshot {
            payment: PaymentId::new(&order(), 2),
            ..snapshot(SnapshotStatus::Failed, 0, 0)
        },
        Snapshot {
            authorized: jpy(1000),
            ..snapshot(SnapshotStatus::Authorized, 1000, 0)
        },
        Snapshot {
            refunds: vec![RefundSnapshot {
                refund: id("re_1"),
                amount: eur(1),
                status: RefundStatus::Succeeded,
            }],
            ..snapshot(SnapshotStatus::Authorized, 1000, 0)
        },
        Snapshot {
            refunds: vec![RefundSnapshot {
                refund: id("re_1"),
                amount: eur(1001),
                status: RefundStatus::Succeeded,
            }],
            ..snapshot(SnapshotStatus::Captured, 1000, 1000)
        },
    ];
    for s in bad {
        assert!(
            matches!(
                first(&mut p).apply_snapshot(&s),
                Err(Error::ProviderInconsistent { .. })
            ),
            "{s:?}"
        );
    }
    assert_eq!(first(&mut p).status(), PaymentStatus::Authorizing);
    assert_eq!(p.captured(), eur(0));
}

#[test]
fn snapshots_import_refunds_made_at_the_provider() {
    let mut p = captured_payment();
    let ours = p.refund(eur(600)).unwrap();
    let RequestKind::Refund { refund: our_id, .. } = ours.requests[0].kind.clone() else {
        panic!()
    };
    // In the dashboard someone refunded 700 before our request reached the provider: ours can
    // no longer fit and is failed locally, so refunded + refunding stays within captured.
    let mut s = snapshot(SnapshotStatus::Captured, 1000, 1000);
    s.refunds = vec![RefundSnapshot {
        refund: id("ext-re_9"),
        amount: eur(700),
        status: RefundStatus::Succeeded,
    }];
    let h = first(&mut p).apply_snapshot(&s).unwrap();
    assert_eq!(event_names(&h), ["RefundIssued", "RefundFailed"]);
    assert_eq!(
        (p.refunded(), p.refunding(), p.refundable()),
        (eur(700), eur(0), eur(300))
    );
    assert!(
        first(&mut p)
            .refunds()
            .iter()
            .any(|r| r.id == our_id && r.status == RefundStatus::Failed)
    );
    assert!(p.pending_requests().is_empty());
    let external: RefundId = id("ext-re_9");
    assert!(
        first(&mut p)
            .refunds()
            .iter()
            .any(|r| r.id == external && r.number.is_none())
    );
}

#[test]
fn pending_requests_are_resent_with_the_same_keys() {
    let mut p = captured_payment();
    let refund = p.refund(eur(100)).unwrap();
    assert_eq!(p.pending_requests(), refund.requests);
    let mut q = full(50);
    let auth = first(&mut q).authorize().unwrap();
    assert_eq!(q.pending_requests(), vec![auth]);
}
