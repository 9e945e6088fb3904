//! Tests of the commerce core, driven like state machines without a runtime: unit tests per
//! concept, and property tests (`model.rs`, `props.rs`) of the order/payment state machine
//! against a reference model and a simulated provider, of stock under interleaved orders, of
//! coupon limits and of promotion consent and quotas.

use std::fmt::Debug;
use std::str::FromStr;

use piazza_protocol::{Currency, Money, UserId};

use super::actor::{Actor, StaffRole};
use super::catalog::{Catalog, Item, ProductSpec, Section, StockKey, VariantSpec};
use super::event::{CommerceEvent, Effects};
use super::ids::{CommandId, OrderId, PaymentId};
use super::order::OrderCommand;
use super::payment::{Notification, NotificationKind};
use super::shop::{Notified, Settings, Shop};

mod cart;
mod catalog;
mod coupon;
mod ids;
mod limits;
mod model;
mod order;
mod payment;
mod promo;
mod props;

/// Cases per property test: 256 by default, so `cargo test` stays fast on two cores;
/// `PIAZZA_PROPTEST_CASES` asks for more (a soak run).
fn proptest_cases() -> u32 {
    std::env::var("PIAZZA_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Parses any id (or panics: test input is known good).
fn id<T: FromStr>(s: &str) -> T
where
    T::Err: Debug,
{
    s.parse().unwrap()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, currency("EUR"))
}

fn jpy(minor: i64) -> Money {
    Money::new(minor, currency("JPY"))
}

fn currency(code: &str) -> Currency {
    code.parse().unwrap()
}

fn user(name: &str) -> UserId {
    name.parse().unwrap()
}

fn alice() -> Actor {
    Actor::Customer(user("alice"))
}

fn bob() -> Actor {
    Actor::Customer(user("bob"))
}

fn owner() -> Actor {
    Actor::Staff {
        user: user("olga"),
        role: StaffRole::Owner,
    }
}

fn manager() -> Actor {
    Actor::Staff {
        user: user("mario"),
        role: StaffRole::Manager,
    }
}

fn agent() -> Actor {
    Actor::Staff {
        user: user("ada"),
        role: StaffRole::Agent,
    }
}

fn key(product: &str, variant: Option<&str>) -> StockKey {
    StockKey {
        product: id(product),
        variant: variant.map(id),
    }
}

fn item(product: &str, variant: Option<&str>, quantity: u32) -> Item {
    Item {
        key: key(product, variant),
        quantity,
    }
}

/// An active product of catalog `main` without variants.
fn product(name: &str, price: Money) -> ProductSpec {
    ProductSpec {
        id: id(name),
        catalog: id("main"),
        title: format!("The {name}"),
        description: String::new(),
        price,
        categories: Vec::new(),
        media: Vec::new(),
        variants: Vec::new(),
        active: true,
    }
}

fn variant(name: &str, price: Option<Money>) -> VariantSpec {
    VariantSpec {
        id: id(name),
        title: name.to_uppercase(),
        options: vec![("size".to_owned(), name.to_owned())],
        price,
    }
}

/// A catalog `main` with:
///
/// | product | price | stock |
/// |---|---|---|
/// | tea | 5.00 EUR | 10 |
/// | mug | 12.00 EUR | 2 |
/// | shirt s / m | 20.00 / 22.00 EUR | 1 / 5 |
/// | ebook | 9.00 EUR | unlimited |
/// | fan | 3000 JPY | 5 |
/// | old | 1.00 EUR, inactive | 5 |
fn fill(catalog: &mut Catalog) {
    catalog
        .put_catalog(
            id("main"),
            Section {
                title: "Main".into(),
            },
        )
        .unwrap();
    catalog.put_product(product("tea", eur(500))).unwrap();
    catalog.put_product(product("mug", eur(1200))).unwrap();
    let mut shirt = product("shirt", eur(2000));
    shirt.variants = vec![variant("s", None), variant("m", Some(eur(2200)))];
    catalog.put_product(shirt).unwrap();
    catalog.put_product(product("ebook", eur(900))).unwrap();
    catalog.put_product(product("fan", jpy(3000))).unwrap();
    let mut old = product("old", eur(100));
    old.active = false;
    catalog.put_product(old).unwrap();
    for (k, n) in [
        (key("tea", None), Some(10)),
        (key("mug", None), Some(2)),
        (key("shirt", Some("s")), Some(1)),
        (key("shirt", Some("m")), Some(5)),
        (key("ebook", None), None),
        (key("fan", None), Some(5)),
        (key("old", None), Some(5)),
    ] {
        catalog.set_stock(&k, n).unwrap();
    }
}

fn catalog() -> Catalog {
    let mut catalog = Catalog::new();
    fill(&mut catalog);
    catalog
}

/// A shop with [`fill`]'s catalog and default settings (unpaid orders expire after a day).
fn shop() -> Shop {
    let mut shop = Shop::new(id("corner"), Settings::default());
    fill(shop.catalog_mut());
    shop
}

/// Places `items` for `customer` as order `order` (command id `place-<order>`).
fn place(shop: &mut Shop, customer: &Actor, order: &str, items: Vec<Item>) -> Effects {
    shop.place(
        customer,
        id(&format!("place-{order}")),
        id(order),
        items,
        None,
        1_000,
    )
    .unwrap()
}

/// A command with id `<order>-<n>`.
fn command(
    shop: &mut Shop,
    actor: &Actor,
    order: &str,
    n: u32,
    command: OrderCommand,
) -> Result<Effects, super::error::Error> {
    let command_id: CommandId = id(&format!("{order}-{n}"));
    shop.handle(actor, command_id, &id(order), command, 2_000)
}

/// A notification about attempt `attempt` of payment `<order>#<number>`.
fn notification(
    order: &str,
    number: u32,
    attempt: u32,
    sequence: u64,
    kind: NotificationKind,
) -> Notification {
    let order: OrderId = id(order);
    Notification {
        event: id(&format!("evt-{order}-{number}-{attempt}-{sequence}")),
        payment: PaymentId::new(&order, number),
        attempt,
        sequence,
        kind,
    }
}

/// The effects of an applied notification (panics otherwise).
fn applied(outcome: Notified) -> Effects {
    match outcome {
        Notified::Applied(effects) => effects,
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// The names of the events, for compact assertions.
fn names(effects: &Effects) -> Vec<&'static str> {
    effects.events.iter().map(CommerceEvent::name).collect()
}
