//! The sandbox provider on its own: lifecycle, idempotency, refusals, declines, and
//! misdelivery that still delivers everything while fetches stay consistent.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;

use super::{authorize, capture, eur, next, payment, refund, shop_id, void};
use crate::commerce::payment::{NotificationKind, ProviderRequest, RefundStatus, SnapshotStatus};
use crate::payments::sandbox::{SandboxConfig, SandboxProvider};
use crate::payments::{INBOUND_QUEUE_MAX, Inbound, PaymentProvider, ProviderError};

/// A well-behaved sandbox: fast, no jitter, no misdelivery.
fn quiet() -> SandboxConfig {
    SandboxConfig {
        seed: 7,
        latency_ms: 5,
        jitter_ms: 0,
        decline_every: 0,
        decline_per_mille: 0,
        duplicate_per_mille: 0,
        reorder_per_mille: 0,
        late_per_mille: 0,
        late_ms: 50,
    }
}

fn start(config: SandboxConfig) -> (SandboxProvider, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE_MAX);
    (SandboxProvider::start(config, tx).unwrap(), rx)
}

#[tokio::test]
async fn authorize_capture_and_refunds_notify_in_order_and_fetch_tells_the_truth() {
    let (sandbox, mut rx) = start(quiet());
    let shop = shop_id();
    let pay = payment("o-1");

    assert!(
        sandbox
            .send(&shop, &authorize("o-1", 1, eur(1000)))
            .await
            .unwrap()
            .is_empty()
    );
    let n = next(&mut rx).await;
    assert_eq!(n.shop, shop);
    assert_eq!(n.notification.payment, pay);
    assert_eq!(n.notification.attempt, 1);
    assert_eq!(n.notification.sequence, 1);
    assert_eq!(
        n.notification.kind,
        NotificationKind::Authorized { amount: eur(1000) }
    );
    let s = sandbox.fetch(&shop, &pay, 1).await.unwrap();
    assert_eq!(
        (s.status, s.authorized, s.captured, s.sequence),
        (SnapshotStatus::Authorized, eur(1000), eur(0), 1)
    );

    sandbox
        .send(&shop, &capture("o-1", 1, eur(1000)))
        .await
        .unwrap();
    let n = next(&mut rx).await;
    assert_eq!(n.notification.sequence, 2);
    assert_eq!(
        n.notification.kind,
        NotificationKind::Captured { amount: eur(1000) }
    );

    sandbox
        .send(&shop, &refund("o-1", 1, 1, eur(300)))
        .await
        .unwrap();
    let n = next(&mut rx).await;
    let NotificationKind::Refunded { refund: r1, amount } = n.notification.kind else {
        panic!("expected a refund, got {n:?}");
    };
    assert_eq!((r1.as_str(), amount), ("o-1#1#r1", eur(300)));
    let s = sandbox.fetch(&shop, &pay, 1).await.unwrap();
    assert_eq!(
        (s.status, s.captured, s.sequence),
        (SnapshotStatus::Captured, eur(1000), 3)
    );
    assert_eq!(s.refunds.len(), 1);
    assert_eq!(s.refunds[0].status, RefundStatus::Succeeded);

    // More than what is left is refused, with the first refund counted.
    let over = sandbox.send(&shop, &refund("o-1", 1, 2, eur(701))).await;
    assert!(matches!(over, Err(ProviderError::Rejected(_))), "{over:?}");
    sandbox
        .send(&shop, &refund("o-1", 1, 3, eur(700)))
        .await
        .unwrap();
    let n = next(&mut rx).await;
    assert!(
        matches!(n.notification.kind, NotificationKind::Refunded { amount, .. } if amount == eur(700))
    );
    let s = sandbox.fetch(&shop, &pay, 1).await.unwrap();
    let refunded: i64 = s
        .refunds
        .iter()
        .filter(|r| r.status == RefundStatus::Succeeded)
        .map(|r| r.amount.minor())
        .sum();
    assert_eq!((refunded, s.sequence), (1000, 4));
    // Nothing is left.
    let empty = sandbox.send(&shop, &refund("o-1", 1, 4, eur(1))).await;
    assert!(
        matches!(empty, Err(ProviderError::Rejected(_))),
        "{empty:?}"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_applies_once() {
    let (sandbox, mut rx) = start(quiet());
    let shop = shop_id();
    let pay = payment("o-2");
    let auth = authorize("o-2", 1, eur(500));
    sandbox.send(&shop, &auth).await.unwrap();
    sandbox.send(&shop, &auth).await.unwrap();
    assert!(matches!(
        next(&mut rx).await.notification.kind,
        NotificationKind::Authorized { .. }
    ));

    // The same key with other parameters is refused, like Stripe does.
    let mut other = auth.clone();
    other.kind = crate::commerce::payment::RequestKind::Authorize { amount: eur(501) };
    assert!(matches!(
        sandbox.send(&shop, &other).await,
        Err(ProviderError::Rejected(_))
    ));

    let cap = capture("o-2", 1, eur(500));
    sandbox.send(&shop, &cap).await.unwrap();
    sandbox.send(&shop, &cap).await.unwrap();
    // The capture's notification comes next: the second authorize changed nothing.
    assert!(matches!(
        next(&mut rx).await.notification.kind,
        NotificationKind::Captured { .. }
    ));
    let r = refund("o-2", 1, 1, eur(100));
    sandbox.send(&shop, &r).await.unwrap();
    sandbox.send(&shop, &r).await.unwrap();
    assert!(matches!(
        next(&mut rx).await.notification.kind,
        NotificationKind::Refunded { .. }
    ));
    // A refund request after it shows nothing else was queued in between.
    sandbox
        .send(&shop, &refund("o-2", 1, 2, eur(400)))
        .await
        .unwrap();
    let n = next(&mut rx).await;
    assert!(
        matches!(n.notification.kind, NotificationKind::Refunded { amount, .. } if amount == eur(400)),
        "{n:?}"
    );

    let s = sandbox.fetch(&shop, &pay, 1).await.unwrap();
    // authorized, captured, two refunds: four changes, each once.
    assert_eq!(s.sequence, 4);
    assert_eq!(s.refunds.len(), 2);
}

#[tokio::test]
async fn amounts_ending_in_02_are_declined_and_cannot_be_captured() {
    let (sandbox, mut rx) = start(quiet());
    let shop = shop_id();
    sandbox
        .send(&shop, &authorize("o-3", 1, eur(1002)))
        .await
        .unwrap();
    let n = next(&mut rx).await;
    assert_eq!(n.notification.kind, NotificationKind::Failed);
    let s = sandbox.fetch(&shop, &payment("o-3"), 1).await.unwrap();
    assert_eq!((s.status, s.authorized), (SnapshotStatus::Failed, eur(0)));
    let cap = sandbox.send(&shop, &capture("o-3", 1, eur(1002))).await;
    assert!(matches!(cap, Err(ProviderError::Rejected(_))), "{cap:?}");
    // A second attempt (new key) is a new intent and may succeed.
    sandbox
        .send(&shop, &authorize("o-3", 2, eur(1002)))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.notification.attempt, 2);
}

#[tokio::test]
async fn decline_every_declines_every_nth_authorization() {
    let (sandbox, mut rx) = start(SandboxConfig {
        decline_every: 2,
        ..quiet()
    });
    let shop = shop_id();
    let mut outcomes = Vec::new();
    for k in 1..=4 {
        let order = format!("o-every-{k}");
        sandbox
            .send(&shop, &authorize(&order, 1, eur(100)))
            .await
            .unwrap();
        outcomes.push(next(&mut rx).await.notification.kind == NotificationKind::Failed);
    }
    assert_eq!(outcomes, [false, true, false, true]);
}

/// `request` under another idempotency key (refused requests are recorded under theirs, like a
/// provider's 400s, so each probe needs its own).
fn probe(mut request: ProviderRequest, n: u32) -> ProviderRequest {
    request.idempotency_key = format!("{}:probe-{n}", request.idempotency_key);
    request
}

#[tokio::test]
async fn requests_a_provider_would_refuse_are_refused() {
    let (sandbox, mut rx) = start(quiet());
    let shop = shop_id();
    let pay = payment("o-4");
    // Unknown attempts. Not recorded: the same key works once the attempt exists.
    assert!(matches!(
        sandbox.fetch(&shop, &pay, 1).await,
        Err(ProviderError::NotFound)
    ));
    let unknown = sandbox.send(&shop, &capture("o-4", 1, eur(100))).await;
    assert!(
        matches!(unknown, Err(ProviderError::NotFound)),
        "{unknown:?}"
    );

    // Not authorized yet: the bank has not answered.
    sandbox
        .send(&shop, &authorize("o-4", 1, eur(100)))
        .await
        .unwrap();
    let early = sandbox
        .send(&shop, &probe(capture("o-4", 1, eur(100)), 1))
        .await;
    assert!(
        matches!(early, Err(ProviderError::Rejected(_))),
        "{early:?}"
    );
    next(&mut rx).await;
    // Another shop cannot see or touch it.
    let other = super::id("elsewhere");
    assert!(matches!(
        sandbox.fetch(&other, &pay, 1).await,
        Err(ProviderError::NotFound)
    ));
    let theirs = sandbox
        .send(&other, &probe(capture("o-4", 1, eur(100)), 2))
        .await;
    assert!(matches!(theirs, Err(ProviderError::NotFound)), "{theirs:?}");
    // Refund before capture, capture above the authorization.
    let early = sandbox.send(&shop, &refund("o-4", 1, 1, eur(10))).await;
    assert!(
        matches!(early, Err(ProviderError::Rejected(_))),
        "{early:?}"
    );
    let above = sandbox
        .send(&shop, &probe(capture("o-4", 1, eur(101)), 3))
        .await;
    assert!(
        matches!(above, Err(ProviderError::Rejected(_))),
        "{above:?}"
    );
    // A refused request stays refused under its key, even once it would be accepted.
    let again = sandbox
        .send(&shop, &probe(capture("o-4", 1, eur(100)), 1))
        .await;
    assert!(
        matches!(again, Err(ProviderError::Rejected(_))),
        "{again:?}"
    );

    sandbox
        .send(&shop, &capture("o-4", 1, eur(100)))
        .await
        .unwrap();
    next(&mut rx).await;
    // A captured intent cannot be cancelled.
    let late_void = sandbox.send(&shop, &void("o-4", 1)).await;
    assert!(
        matches!(late_void, Err(ProviderError::Rejected(_))),
        "{late_void:?}"
    );
}

#[tokio::test]
async fn a_void_before_the_bank_answers_cancels_the_intent() {
    let (sandbox, mut rx) = start(SandboxConfig {
        latency_ms: 30,
        ..quiet()
    });
    let shop = shop_id();
    sandbox
        .send(&shop, &authorize("o-5", 1, eur(100)))
        .await
        .unwrap();
    sandbox.send(&shop, &void("o-5", 1)).await.unwrap();
    // Both settle after the same latency; the authorization first (it was first), then the
    // void releases it.
    let mut kinds = vec![next(&mut rx).await.notification.kind];
    if kinds[0] != NotificationKind::Voided {
        kinds.push(next(&mut rx).await.notification.kind);
    }
    assert_eq!(kinds.last(), Some(&NotificationKind::Voided));
    let s = sandbox.fetch(&shop, &payment("o-5"), 1).await.unwrap();
    assert_eq!((s.status, s.authorized), (SnapshotStatus::Voided, eur(0)));
}

/// With duplicates, reordering and late deliveries, every notification still arrives (at least
/// once), and every fetch is consistent in itself and at least as new as every notification
/// already received.
#[tokio::test]
async fn misdelivery_still_delivers_everything_and_fetches_stay_consistent() {
    let config = SandboxConfig {
        seed: 42,
        latency_ms: 5,
        jitter_ms: 10,
        duplicate_per_mille: 300,
        reorder_per_mille: 300,
        late_per_mille: 300,
        late_ms: 60,
        ..quiet()
    };
    let (sandbox, mut rx) = start(config);
    let shop = shop_id();
    const ORDERS: u32 = 12;
    for k in 0..ORDERS {
        sandbox
            .send(&shop, &authorize(&format!("o-m{k}"), 1, eur(1000)))
            .await
            .unwrap();
    }
    // Per payment: the event ids seen per kind name, and the highest sequence seen.
    let mut seen: BTreeMap<String, BTreeMap<&'static str, BTreeSet<String>>> = BTreeMap::new();
    let mut duplicates = 0;
    let expected_per_payment = 4; // authorized, captured, two refunds
    let done = |seen: &BTreeMap<String, BTreeMap<&'static str, BTreeSet<String>>>| {
        seen.len() == ORDERS as usize
            && seen.values().all(|kinds| {
                kinds.values().map(BTreeSet::len).sum::<usize>() == expected_per_payment
            })
    };
    while !done(&seen) {
        let n = next(&mut rx).await.notification;
        let order = n.payment.as_str().trim_end_matches("#1").to_owned();
        let (name, first) = {
            let kinds = seen.entry(order.clone()).or_default();
            let name = match n.kind {
                NotificationKind::Authorized { .. } => "authorized",
                NotificationKind::Captured { .. } => "captured",
                NotificationKind::Refunded { .. } => "refunded",
                ref other => panic!("unexpected {other:?}"),
            };
            (
                name,
                kinds
                    .entry(name)
                    .or_default()
                    .insert(n.event.as_str().to_owned()),
            )
        };
        if !first {
            duplicates += 1;
            continue;
        }
        let s = sandbox.fetch(&shop, &n.payment, 1).await.unwrap();
        assert!(
            s.sequence >= n.sequence,
            "a fetch is never older than a delivered notification"
        );
        assert!(s.captured.minor() <= s.authorized.minor() || s.status != SnapshotStatus::Captured);
        let refunds: i64 = s.refunds.iter().map(|r| r.amount.minor()).sum();
        assert!(refunds <= s.captured.minor());
        match name {
            "authorized" => {
                sandbox
                    .send(&shop, &capture(&order, 1, eur(1000)))
                    .await
                    .unwrap();
            }
            "captured" => {
                // Two refunds in flight at once, so that reordering has something to swap.
                sandbox
                    .send(&shop, &refund(&order, 1, 1, eur(400)))
                    .await
                    .unwrap();
                sandbox
                    .send(&shop, &refund(&order, 1, 2, eur(600)))
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    for k in 0..ORDERS {
        let s = sandbox
            .fetch(&shop, &payment(&format!("o-m{k}")), 1)
            .await
            .unwrap();
        assert_eq!(s.status, SnapshotStatus::Captured);
        assert_eq!(s.sequence, 4);
        assert!(
            s.refunds
                .iter()
                .all(|r| r.status == RefundStatus::Succeeded)
        );
    }
    // With these rates and this seed some duplicates did arrive (the test would prove less
    // without them).
    assert!(duplicates > 0, "no duplicates were delivered");
}

#[tokio::test]
async fn the_same_seed_gives_the_same_outcomes() {
    let outcomes = |seed| async move {
        let (sandbox, mut rx) = start(SandboxConfig {
            seed,
            decline_per_mille: 500,
            ..quiet()
        });
        let shop = shop_id();
        let mut declined = Vec::new();
        for k in 0..16 {
            sandbox
                .send(&shop, &authorize(&format!("o-s{k}"), 1, eur(100)))
                .await
                .unwrap();
            declined.push(next(&mut rx).await.notification.kind == NotificationKind::Failed);
        }
        declined
    };
    let a = outcomes(1).await;
    assert_eq!(a, outcomes(1).await);
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
}
