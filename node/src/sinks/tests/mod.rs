//! Sink tests against the real embedded store in a temporary directory, a real HTTP receiver
//! on loopback and a real `nats-server` process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use piazza_protocol::{Money, UserId};

use super::outbox::{self, EVENT_TYPES, envelope_bytes, last_outbox_seq, outbox_write};
use super::{ShopCursor, commit, read_cursor};
use crate::commerce::actor::{Actor, StaffRole};
use crate::commerce::event::CommerceEvent;
use crate::commerce::ids::{CouponCode, OrderId, PaymentId, RefundId, ShopId};
use crate::commerce::payment::PaymentPlan;
use crate::storage::{EmbeddedStorage, KvTable, Storage};

mod nats;
mod webhook;

/// Every bounded wait in these tests: far above what any step takes on a busy machine.
const WAIT: Duration = Duration::from_secs(20);

fn open_store(dir: &Path) -> Arc<dyn Storage> {
    Arc::new(EmbeddedStorage::open(dir, 1024, 256).unwrap())
}

async fn close_store(storage: Arc<dyn Storage>) {
    tokio::task::spawn_blocking(move || storage.close().unwrap())
        .await
        .unwrap();
}

fn shop(id: &str) -> ShopId {
    id.parse().unwrap()
}

fn order(id: &str) -> OrderId {
    id.parse().unwrap()
}

fn user(id: &str) -> UserId {
    id.parse().unwrap()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().unwrap())
}

/// Appends `events` to the shop's outbox after its last event, as the shop actor does.
async fn append(storage: &dyn Storage, shop: &ShopId, events: &[CommerceEvent]) {
    let last = last_outbox_seq(storage, shop).unwrap();
    let writes = events
        .iter()
        .enumerate()
        .map(|(i, event)| outbox_write(shop, last + 1 + i as u64, 1_767_225_600_000, event))
        .collect();
    commit(storage, writes).await.unwrap();
}

/// A simple event of `order`.
fn paid(order_id: &str) -> CommerceEvent {
    CommerceEvent::OrderPaid {
        order: order(order_id),
    }
}

/// Polls `check` until it holds, for at most [`WAIT`].
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let polled = tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting for {what}");
}

/// Waits until `sink`'s cursor of `shop` is at `next` with nothing pending.
async fn wait_cursor(storage: &dyn Storage, sink: &str, shop: &ShopId, next: u64) {
    wait_until(&format!("{sink} cursor of {shop} at {next}"), || {
        read_cursor(storage, sink, shop).unwrap() == ShopCursor::at(next)
    })
    .await;
}

/// One event of every type.
fn every_event() -> Vec<CommerceEvent> {
    let o = order("o-1");
    let payment = PaymentId::new(&o, 1);
    let refund = RefundId::new(&payment, 1);
    let code: CouponCode = "SUMMER-10".parse().unwrap();
    let staff = Actor::Staff {
        user: user("bob"),
        role: StaffRole::Manager,
    };
    vec![
        CommerceEvent::OrderPlaced {
            order: o.clone(),
            customer: user("alice"),
            lines: 2,
            subtotal: eur(2500),
            discount: eur(250),
            total: eur(2250),
        },
        CommerceEvent::StockReserved { order: o.clone() },
        CommerceEvent::StockReleased { order: o.clone() },
        CommerceEvent::StockCommitted { order: o.clone() },
        CommerceEvent::StockRestored { order: o.clone() },
        CommerceEvent::CouponRedeemed {
            order: o.clone(),
            code: code.clone(),
            discount: eur(250),
        },
        CommerceEvent::CouponReleased {
            order: o.clone(),
            code,
        },
        CommerceEvent::OrderAccepted {
            order: o.clone(),
            by: staff.clone(),
        },
        CommerceEvent::OrderRejected {
            order: o.clone(),
            by: staff.clone(),
            reason: "sold out".into(),
        },
        CommerceEvent::PaymentRequested {
            order: o.clone(),
            plan: PaymentPlan::Instalments {
                count: 3,
                interval_ms: 2_592_000_000,
            },
            total: eur(2250),
        },
        CommerceEvent::PaymentAuthorized {
            order: o.clone(),
            payment: payment.clone(),
            attempt: 1,
            amount: eur(750),
        },
        CommerceEvent::PaymentSucceeded {
            order: o.clone(),
            payment: payment.clone(),
            attempt: 1,
            amount: eur(750),
        },
        CommerceEvent::PaymentFailed {
            order: o.clone(),
            payment: payment.clone(),
            attempt: 2,
        },
        CommerceEvent::PaymentVoided {
            order: o.clone(),
            payment: payment.clone(),
            attempt: 2,
        },
        CommerceEvent::OrderPaid { order: o.clone() },
        CommerceEvent::OrderFulfilled {
            order: o.clone(),
            by: staff.clone(),
            tracking: None,
        },
        CommerceEvent::OrderDelivered {
            order: o.clone(),
            by: Actor::System,
        },
        CommerceEvent::OrderCompleted {
            order: o.clone(),
            by: Actor::Customer(user("alice")),
        },
        CommerceEvent::OrderCancelled {
            order: o.clone(),
            by: Actor::Customer(user("alice")),
            reason: "changed my mind".into(),
        },
        CommerceEvent::OrderExpired { order: o.clone() },
        CommerceEvent::RefundRequested {
            order: o.clone(),
            payment: payment.clone(),
            refund: refund.clone(),
            amount: eur(100),
        },
        CommerceEvent::RefundIssued {
            order: o.clone(),
            payment: payment.clone(),
            refund: refund.clone(),
            amount: eur(100),
        },
        CommerceEvent::RefundFailed {
            order: o.clone(),
            payment,
            refund,
            amount: eur(100),
        },
        CommerceEvent::OrderRefunded { order: o },
    ]
}

fn envelope(event: &CommerceEvent) -> serde_json::Value {
    serde_json::from_slice(&envelope_bytes(
        &shop("shop-1"),
        7,
        1_767_225_600_000,
        event,
    ))
    .unwrap()
}

fn data(event: &CommerceEvent) -> serde_json::Value {
    envelope(event)["data"].clone()
}

#[test]
fn envelope_is_exactly_the_documented_json() {
    let event = &every_event()[0];
    let bytes = envelope_bytes(&shop("shop-1"), 7, 1_767_225_600_000, event);
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        concat!(
            r#"{"id":"shop-1:7","type":"OrderPlaced","shop":"shop-1","seq":7,"#,
            r#""created_ms":1767225600000,"order":"o-1","data":{"customer":"alice","#,
            r#""discount":{"currency":"EUR","minor":250},"lines":2,"#,
            r#""subtotal":{"currency":"EUR","minor":2500},"total":{"currency":"EUR","minor":2250}}}"#
        )
    );
}

#[test]
fn event_data_per_type() {
    use serde_json::json;
    let events = every_event();
    let by_type = |name: &str| events.iter().find(|e| e.name() == name).map(data).unwrap();
    let money = |minor: i64| json!({"minor": minor, "currency": "EUR"});
    assert_eq!(by_type("StockReserved"), json!({}));
    assert_eq!(
        by_type("CouponRedeemed"),
        json!({"code": "SUMMER-10", "discount": money(250)})
    );
    assert_eq!(
        by_type("OrderRejected"),
        json!({"by": {"staff": "bob", "role": "manager"}, "reason": "sold out"})
    );
    assert_eq!(
        by_type("PaymentRequested"),
        json!({
            "plan": {"kind": "instalments", "count": 3, "interval_ms": 2_592_000_000u64},
            "total": money(2250),
        })
    );
    assert_eq!(
        by_type("PaymentSucceeded"),
        json!({"payment": "o-1#1", "attempt": 1, "amount": money(750)})
    );
    assert_eq!(
        by_type("PaymentFailed"),
        json!({"payment": "o-1#1", "attempt": 2})
    );
    assert_eq!(
        by_type("OrderFulfilled"),
        json!({"by": {"staff": "bob", "role": "manager"}, "tracking": null})
    );
    assert_eq!(by_type("OrderDelivered"), json!({"by": "system"}));
    assert_eq!(
        by_type("OrderCancelled"),
        json!({"by": {"customer": "alice"}, "reason": "changed my mind"})
    );
    assert_eq!(
        by_type("RefundIssued"),
        json!({"payment": "o-1#1", "refund": "o-1#1#r1", "amount": money(100)})
    );
    let full = CommerceEvent::PaymentRequested {
        order: order("o-2"),
        plan: PaymentPlan::Full,
        total: eur(5),
    };
    assert_eq!(data(&full)["plan"], json!({"kind": "full"}));
    let whole = envelope(&full);
    assert_eq!(whole["order"], "o-2");
    assert_eq!(whole["type"], "PaymentRequested");
}

#[test]
fn event_types_lists_every_name() {
    let names: Vec<&str> = every_event().iter().map(CommerceEvent::name).collect();
    assert_eq!(names, EVENT_TYPES);
}

#[tokio::test]
async fn outbox_rows_sort_per_shop_and_last_seq_ignores_other_shops() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_store(dir.path());
    let (a, ab, a_dot) = (shop("a"), shop("ab"), shop("a.b"));
    assert_eq!(last_outbox_seq(storage.as_ref(), &a).unwrap(), 0);
    for seq in 1..=300u64 {
        commit(
            storage.as_ref(),
            vec![outbox_write(&a, seq, seq, &paid("o"))],
        )
        .await
        .unwrap();
    }
    append(storage.as_ref(), &ab, &[paid("x"), paid("y")]).await;
    append(storage.as_ref(), &a_dot, &[paid("z")]).await;
    assert_eq!(last_outbox_seq(storage.as_ref(), &a).unwrap(), 300);
    assert_eq!(last_outbox_seq(storage.as_ref(), &ab).unwrap(), 2);
    assert_eq!(last_outbox_seq(storage.as_ref(), &a_dot).unwrap(), 1);
    let (rows, more) = storage
        .kv_scan(KvTable::Outbox, &outbox::shop_prefix(&a), None, 1000)
        .unwrap();
    assert!(!more);
    let seqs: Vec<u64> = rows
        .iter()
        .map(|(key, _)| outbox::split_key(key).unwrap().1)
        .collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    close_store(storage).await;
}

#[test]
fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
    let policy = super::RetryPolicy {
        initial_backoff_ms: 1000,
        max_backoff_ms: 3_600_000,
        max_age_ms: 7 * 24 * 3_600_000,
    };
    assert_eq!(policy.delay_ms(1, 0), 500);
    assert_eq!(policy.delay_ms(1, 500), 1000);
    assert_eq!(policy.delay_ms(2, 1000), 2000);
    assert_eq!(policy.delay_ms(40, 0), 1_800_000);
    for attempts in 1..100 {
        for random in [0, 1, 12_345, u64::MAX] {
            let delay = policy.delay_ms(attempts, random);
            assert!((500..=3_600_000).contains(&delay), "{attempts}: {delay}");
        }
    }
}

#[test]
fn config_is_validated() {
    use super::config::SinksSection;
    let parse = |text: &str| -> Result<SinksSection, String> {
        let section: SinksSection = toml::from_str(text).map_err(|e| e.to_string())?;
        section.validate()?;
        Ok(section)
    };
    let ok = parse(
        r#"
        [[webhooks]]
        url = "http://127.0.0.1:9/hook?x=1"
        secret = "0123456789abcdef"
        event_types = ["OrderPaid"]
        [nats]
        url = "nats://127.0.0.1:4222"
        "#,
    )
    .unwrap();
    assert_eq!(ok.webhooks[0].shop, "*");
    assert_eq!(ok.webhooks[0].max_age_secs, 7 * 24 * 3600);
    let nats = ok.nats.unwrap();
    assert_eq!(
        (nats.stream.as_str(), nats.subject_prefix.as_str()),
        ("PIAZZA", "piazza.events")
    );
    assert!(!format!("{:?}", ok.webhooks[0]).contains("0123456789abcdef"));
    let refused = [
        r#"[[webhooks]]
           url = "https://example.com/"
           secret = "0123456789abcdef""#,
        r#"[[webhooks]]
           url = "http://example.com/"
           secret = "short""#,
        r#"[[webhooks]]
           url = "http://example.com/"
           secret = "0123456789abcdef"
           secret_file = "/x""#,
        r#"[[webhooks]]
           url = "http://example.com/"
           secret = "0123456789abcdef"
           event_types = ["OrderShipped"]"#,
        r#"[[webhooks]]
           url = "http://example.com/"
           shop = "no spaces"
           secret = "0123456789abcdef""#,
        r#"[nats]
           url = "nats://127.0.0.1:4222"
           subject_prefix = "a.*""#,
        r#"[nats]
           url = "tls://127.0.0.1:4222""#,
    ];
    for text in refused {
        assert!(parse(text).is_err(), "accepted {text}");
    }
}

#[test]
fn the_node_config_file_carries_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("piazza.toml");
    std::fs::write(
        &path,
        r#"
        [sinks]
        request_timeout_ms = 5000

        [[sinks.webhooks]]
        name = "erp"
        shop = "shop-1"
        url = "http://127.0.0.1:8080/piazza"
        secret_file = "/etc/piazza/erp-secret"
        event_types = ["OrderPaid"]

        [sinks.nats]
        url = "nats://127.0.0.1:4222"
        "#,
    )
    .unwrap();
    let config = crate::config::Config::load(
        Some(&path),
        std::iter::empty(),
        &crate::config::Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.sinks.request_timeout_ms, 5000);
    assert_eq!(config.sinks.webhooks[0].name(0), "erp");
    assert_eq!(config.sinks.nats.unwrap().stream, "PIAZZA");
    let defaults = crate::config::Config::load(
        None,
        std::iter::empty(),
        &crate::config::Overrides::default(),
    )
    .unwrap();
    assert!(defaults.sinks.webhooks.is_empty() && defaults.sinks.nats.is_none());
}
