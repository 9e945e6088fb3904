//! The adapter and the commerce core together: a whole order paid and refunded through the
//! sandbox, the way the shop actor will drive them — requests from the core's effects sent with
//! their keys, notifications fed to `Shop::handle_notification`, and on `NeedsSync` a fetch
//! applied with `Shop::apply_snapshot`. Once with a quiet sandbox, once with a misbehaving one.

use piazza_protocol::UserId;
use tokio::sync::mpsc;

use super::{WAIT, eur, id, shop_id};
use crate::commerce::actor::{Actor, StaffRole};
use crate::commerce::catalog::{Item, ProductSpec, Section, StockKey};
use crate::commerce::event::Effects;
use crate::commerce::ids::OrderId;
use crate::commerce::order::{OrderCommand, OrderStatus};
use crate::commerce::payment::{PaymentPlan, ProviderRequest};
use crate::commerce::shop::{Notified, Settings, Shop};
use crate::payments::sandbox::{SandboxConfig, SandboxProvider};
use crate::payments::{INBOUND_QUEUE_MAX, Inbound, PaymentProvider};

/// What a run of the loop saw.
#[derive(Debug, Default)]
struct Counts {
    applied: u32,
    duplicate_or_stale_or_unchanged: u32,
    syncs: u32,
}

/// The piece of the shop actor this test stands in for: sends requests, applies notifications,
/// syncs when told to, until `done` holds.
struct Driver {
    shop: Shop,
    provider: SandboxProvider,
    rx: mpsc::Receiver<Inbound>,
    now_ms: u64,
    counts: Counts,
}

impl Driver {
    async fn send_all(&self, requests: &[ProviderRequest]) {
        for request in requests {
            self.provider.send(self.shop.id(), request).await.unwrap();
        }
    }

    async fn effects(&mut self, effects: Effects) {
        self.send_all(&effects.requests).await;
    }

    /// Handles notifications until `done(shop)`.
    async fn run_until(&mut self, done: impl Fn(&Shop) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.shop) {
            let inbound = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("the order settles within the wait")
                .unwrap();
            assert_eq!(&inbound.shop, self.shop.id());
            self.now_ms += 1;
            let outcome = self
                .shop
                .handle_notification(&inbound.notification, self.now_ms)
                .unwrap();
            match outcome {
                Notified::Applied(effects) => {
                    self.counts.applied += 1;
                    self.effects(effects).await;
                }
                Notified::NeedsSync { payment, attempt } => {
                    self.counts.syncs += 1;
                    let snapshot = self
                        .provider
                        .fetch(self.shop.id(), &payment, attempt)
                        .await
                        .unwrap();
                    let effects = self.shop.apply_snapshot(&snapshot, self.now_ms).unwrap();
                    self.effects(effects).await;
                }
                Notified::Duplicate | Notified::Stale | Notified::Unchanged => {
                    self.counts.duplicate_or_stale_or_unchanged += 1;
                }
            }
        }
    }
}

fn owner() -> Actor {
    Actor::Staff {
        user: id::<UserId>("olga"),
        role: StaffRole::Owner,
    }
}

fn alice() -> Actor {
    Actor::Customer(id::<UserId>("alice"))
}

/// A shop selling one product, `tea`, at 10.00 EUR.
fn shop() -> Shop {
    let mut shop = Shop::new(shop_id(), Settings::default());
    let catalog = shop.catalog_mut();
    catalog
        .put_catalog(
            id("main"),
            Section {
                title: "Main".into(),
            },
        )
        .unwrap();
    catalog
        .put_product(ProductSpec {
            id: id("tea"),
            catalog: id("main"),
            title: "Tea".into(),
            description: String::new(),
            price: eur(1000),
            categories: Vec::new(),
            media: Vec::new(),
            variants: Vec::new(),
            active: true,
        })
        .unwrap();
    let tea = StockKey {
        product: id("tea"),
        variant: None,
    };
    catalog.set_stock(&tea, Some(10)).unwrap();
    shop
}

fn status(shop: &Shop, order: &OrderId) -> OrderStatus {
    shop.order(order).unwrap().status()
}

async fn paid_then_refunded_in_two_steps(config: SandboxConfig) -> Counts {
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE_MAX);
    let mut driver = Driver {
        shop: shop(),
        provider: SandboxProvider::start(config, tx).unwrap(),
        rx,
        now_ms: 1_000,
        counts: Counts::default(),
    };
    let order: OrderId = id("o-100");
    let items = vec![Item {
        key: StockKey {
            product: id("tea"),
            variant: None,
        },
        quantity: 2,
    }];
    driver
        .shop
        .place(&alice(), id("c-1"), order.clone(), items, None, 1_000)
        .unwrap();
    driver
        .shop
        .handle(&owner(), id("c-2"), &order, OrderCommand::Accept, 1_001)
        .unwrap();
    let effects = driver
        .shop
        .handle(
            &alice(),
            id("c-3"),
            &order,
            OrderCommand::RequestPayment {
                plan: PaymentPlan::Full,
            },
            1_002,
        )
        .unwrap();
    assert_eq!(effects.requests.len(), 1, "one authorization asked for");
    driver.effects(effects).await;

    // Authorized → the core captures at once → captured: paid.
    driver
        .run_until(|shop| status(shop, &order) == OrderStatus::Paid)
        .await;
    let payments = driver.shop.order(&order).unwrap().payments().unwrap();
    assert_eq!(payments.captured(), eur(2000));

    // A partial refund, then the rest.
    let effects = driver
        .shop
        .handle(
            &owner(),
            id("c-4"),
            &order,
            OrderCommand::Refund { amount: eur(500) },
            2_000,
        )
        .unwrap();
    driver.effects(effects).await;
    driver
        .run_until(|shop| {
            let p = shop.order(&order).unwrap().payments().unwrap();
            p.refunded() == eur(500) && p.refunding() == eur(0)
        })
        .await;
    assert_eq!(status(&driver.shop, &order), OrderStatus::Paid);

    let effects = driver
        .shop
        .handle(
            &owner(),
            id("c-5"),
            &order,
            OrderCommand::Refund { amount: eur(1500) },
            3_000,
        )
        .unwrap();
    driver.effects(effects).await;
    driver
        .run_until(|shop| status(shop, &order) == OrderStatus::Refunded)
        .await;
    let payments = driver.shop.order(&order).unwrap().payments().unwrap();
    assert_eq!(
        (payments.captured(), payments.refunded()),
        (eur(2000), eur(2000))
    );

    // The provider agrees.
    let first = payments.first().unwrap();
    let snapshot = driver
        .provider
        .fetch(driver.shop.id(), first.id(), first.attempt())
        .await
        .unwrap();
    assert_eq!(snapshot.captured, eur(2000));
    assert_eq!(snapshot.refunds.len(), 2);
    driver.counts
}

#[tokio::test]
async fn a_whole_order_is_paid_and_refunded_through_the_sandbox() {
    let counts = paid_then_refunded_in_two_steps(SandboxConfig {
        seed: 1,
        latency_ms: 5,
        jitter_ms: 0,
        decline_every: 0,
        decline_per_mille: 0,
        duplicate_per_mille: 0,
        reorder_per_mille: 0,
        late_per_mille: 0,
        late_ms: 50,
    })
    .await;
    // authorized, captured, two refunds; nothing contradicted the core.
    assert_eq!(counts.applied, 4, "{counts:?}");
    assert_eq!(counts.syncs, 0, "{counts:?}");
}

#[tokio::test]
async fn a_whole_order_survives_a_misbehaving_provider() {
    let mut not_applied = 0;
    for seed in [3, 4, 5] {
        let counts = paid_then_refunded_in_two_steps(SandboxConfig {
            seed,
            latency_ms: 5,
            jitter_ms: 10,
            decline_every: 0,
            decline_per_mille: 0,
            duplicate_per_mille: 500,
            reorder_per_mille: 300,
            late_per_mille: 300,
            late_ms: 40,
        })
        .await;
        assert!(counts.applied >= 1, "seed {seed}: {counts:?}");
        not_applied += counts.duplicate_or_stale_or_unchanged + counts.syncs;
    }
    // The misbehaviour reached the core (duplicates at least), so the test shows it copes.
    assert!(not_applied > 0);
}
