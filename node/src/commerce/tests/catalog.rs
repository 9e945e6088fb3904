//! Catalog: product rules, prices and offers, stock reservations.

use super::super::catalog::{
    BASIS_POINTS_MAX, Catalog, Change, OFFERS_MAX, Offer, OfferPrice, OfferTarget, PRODUCTS_MAX,
    ReservationState, Section, Stock, TITLE_BYTES_MAX, VARIANTS_MAX, percent_off,
};
use super::super::error::Error;
use super::super::ids::{OfferId, OrderId};
use super::{catalog, eur, id, item, jpy, key, product, variant};

fn offer(
    name: &str,
    target: OfferTarget,
    price: OfferPrice,
    starts_ms: u64,
    ends_ms: u64,
) -> Offer {
    Offer {
        id: id(name),
        target,
        price,
        starts_ms,
        ends_ms,
    }
}

fn off(basis_points: u16) -> OfferPrice {
    OfferPrice::PercentOff { basis_points }
}

fn order(name: &str) -> OrderId {
    id(name)
}

fn tracked(catalog: &Catalog, product: &str, variant: Option<&str>) -> (u32, u32) {
    match catalog.stock(&key(product, variant)) {
        Some(Stock::Tracked { on_hand, reserved }) => (on_hand, reserved),
        other => panic!("not tracked: {other:?}"),
    }
}

#[test]
fn product_specs_are_validated() {
    let mut c = catalog();
    let check = |c: &mut Catalog, spec| c.put_product(spec).unwrap_err();

    let mut p = product("x", eur(1));
    p.title = "  ".into();
    assert_eq!(
        check(&mut c, p),
        Error::InvalidField {
            field: "title",
            reason: "must not be empty"
        }
    );
    let mut p = product("x", eur(1));
    p.title = "t".repeat(TITLE_BYTES_MAX);
    c.put_product(p.clone()).unwrap();
    p.title.push('t');
    assert_eq!(
        check(&mut c, p),
        Error::InvalidField {
            field: "title",
            reason: "too long"
        }
    );
    assert_eq!(
        check(&mut c, product("x", eur(-1))),
        Error::InvalidField {
            field: "price",
            reason: "must not be negative"
        }
    );
    let mut p = product("x", eur(1));
    p.catalog = id("nope");
    assert_eq!(check(&mut c, p), Error::Unknown { what: "catalog" });
    let mut p = product("x", eur(1));
    p.categories = vec![id("nope")];
    assert_eq!(check(&mut c, p), Error::Unknown { what: "category" });
    let mut p = product("x", eur(1));
    p.variants = vec![variant("a", None), variant("a", None)];
    assert_eq!(
        check(&mut c, p),
        Error::InvalidField {
            field: "variant id",
            reason: "duplicate"
        }
    );
    let mut p = product("x", eur(1));
    p.variants = vec![variant("a", Some(jpy(5)))];
    assert!(matches!(check(&mut c, p), Error::CurrencyMix { .. }));
    let mut p = product("x", eur(1));
    p.variants = (0..VARIANTS_MAX)
        .map(|i| variant(&format!("v{i}"), None))
        .collect();
    c.put_product(p.clone()).unwrap();
    p.variants.push(variant("one-more", None));
    assert_eq!(
        check(&mut c, p),
        Error::TooMany {
            what: "variants",
            max: VARIANTS_MAX
        }
    );
}

#[test]
fn products_are_bounded() {
    let mut c = Catalog::new();
    c.put_catalog(id("main"), Section { title: "M".into() })
        .unwrap();
    for i in 0..PRODUCTS_MAX {
        c.put_product(product(&format!("p{i}"), eur(1))).unwrap();
    }
    // Replacing an existing product is fine at the limit, a new one is not.
    c.put_product(product("p0", eur(2))).unwrap();
    assert_eq!(
        c.put_product(product("extra", eur(1))),
        Err(Error::TooMany {
            what: "products",
            max: PRODUCTS_MAX
        })
    );
}

#[test]
fn catalogs_and_categories() {
    let mut c = catalog();
    c.put_category(
        id("hot"),
        Section {
            title: "Hot drinks".into(),
        },
    )
    .unwrap();
    let mut tea = c.product(&id("tea")).unwrap().spec().clone();
    tea.categories = vec![id("hot")];
    c.put_product(tea).unwrap();
    assert_eq!(c.products_in_category(&id("hot")).count(), 1);
    assert_eq!(c.products_in_catalog(&id("main")).count(), 6);
    assert_eq!(
        c.remove_catalog(&id("main")),
        Err(Error::InUse { what: "catalog" })
    );
    c.remove_category(&id("hot")).unwrap();
    assert!(c.product(&id("tea")).unwrap().spec().categories.is_empty());
    assert_eq!(
        c.remove_category(&id("hot")),
        Err(Error::Unknown { what: "category" })
    );
}

#[test]
fn prices_come_from_variants_and_the_best_valid_offer() {
    let mut c = catalog();
    assert_eq!(
        c.effective_price(&id("shirt"), Some(&id("s")), 0),
        Ok(eur(2000))
    );
    assert_eq!(
        c.effective_price(&id("shirt"), Some(&id("m")), 0),
        Ok(eur(2200))
    );
    assert_eq!(
        c.effective_price(&id("shirt"), None, 0),
        Err(Error::VariantRequired(id("shirt")))
    );
    assert_eq!(
        c.effective_price(&id("tea"), Some(&id("s")), 0),
        Err(Error::VariantNotExpected(id("tea")))
    );
    assert_eq!(
        c.effective_price(&id("shirt"), Some(&id("xl")), 0),
        Err(Error::UnknownVariant {
            product: id("shirt"),
            variant: id("xl")
        })
    );
    assert_eq!(
        c.effective_price(&id("nope"), None, 0),
        Err(Error::UnknownProduct(id("nope")))
    );

    // A sales period of 10 % on everything in [100, 200).
    c.put_offer(offer("sale", OfferTarget::All, off(1000), 100, 200))
        .unwrap();
    assert_eq!(c.effective_price(&id("tea"), None, 99), Ok(eur(500)));
    assert_eq!(c.effective_price(&id("tea"), None, 100), Ok(eur(450)));
    assert_eq!(c.effective_price(&id("tea"), None, 199), Ok(eur(450)));
    assert_eq!(c.effective_price(&id("tea"), None, 200), Ok(eur(500)));
    // A fixed price on one variant, overlapping: the lower wins, offers do not stack.
    c.put_offer(offer(
        "m-deal",
        OfferTarget::Variant(id("shirt"), id("m")),
        OfferPrice::Fixed(eur(1900)),
        150,
        300,
    ))
    .unwrap();
    assert_eq!(
        c.effective_price(&id("shirt"), Some(&id("m")), 120),
        Ok(eur(1980))
    );
    assert_eq!(
        c.effective_price(&id("shirt"), Some(&id("m")), 160),
        Ok(eur(1900))
    );
    assert_eq!(
        c.effective_price(&id("shirt"), Some(&id("s")), 250),
        Ok(eur(2000))
    );
    // An "offer" above the price never raises it.
    c.put_offer(offer(
        "up",
        OfferTarget::Product(id("tea")),
        OfferPrice::Fixed(eur(900)),
        0,
        1000,
    ))
    .unwrap();
    assert_eq!(c.effective_price(&id("tea"), None, 50), Ok(eur(500)));
    c.remove_offer(&id("up")).unwrap();
    assert_eq!(
        c.remove_offer(&id("up")),
        Err(Error::Unknown { what: "offer" })
    );
    // A catalog-wide offer.
    c.put_offer(offer(
        "cat",
        OfferTarget::Catalog(id("main")),
        off(BASIS_POINTS_MAX),
        500,
        600,
    ))
    .unwrap();
    assert_eq!(c.effective_price(&id("mug"), None, 550), Ok(eur(0)));
}

#[test]
fn offers_are_validated_and_bounded() {
    let mut c = catalog();
    let tea = || OfferTarget::Product(id("tea"));
    assert_eq!(
        c.put_offer(offer("o", tea(), off(10), 5, 5)),
        Err(Error::InvalidField {
            field: "offer window",
            reason: "must end after it starts"
        })
    );
    assert!(matches!(
        c.put_offer(offer("o", tea(), off(0), 0, 1)),
        Err(Error::InvalidField { .. })
    ));
    assert!(matches!(
        c.put_offer(offer("o", tea(), off(BASIS_POINTS_MAX + 1), 0, 1)),
        Err(Error::InvalidField { .. })
    ));
    assert!(matches!(
        c.put_offer(offer("o", tea(), OfferPrice::Fixed(jpy(1)), 0, 1)),
        Err(Error::CurrencyMix { .. })
    ));
    assert!(matches!(
        c.put_offer(offer(
            "o",
            OfferTarget::All,
            OfferPrice::Fixed(eur(1)),
            0,
            1
        )),
        Err(Error::InvalidField {
            field: "offer price",
            ..
        })
    ));
    assert_eq!(
        c.put_offer(offer("o", OfferTarget::Category(id("nope")), off(10), 0, 1)),
        Err(Error::Unknown { what: "category" })
    );
    for i in 0..OFFERS_MAX {
        c.put_offer(offer(&format!("o{i}"), tea(), off(10), 0, 1))
            .unwrap();
    }
    assert_eq!(
        c.put_offer(offer("extra", tea(), off(10), 0, 1)),
        Err(Error::TooMany {
            what: "offers",
            max: OFFERS_MAX
        })
    );
    let first: OfferId = id("o0");
    c.put_offer(offer(first.as_str(), tea(), off(20), 0, 1))
        .unwrap();
}

#[test]
fn percentages_round_half_in_the_customers_favour() {
    assert_eq!(percent_off(eur(999), 1000), eur(899)); // 99.9 off → 100 off
    assert_eq!(percent_off(eur(5), 1000), eur(4)); // 0.5 off → 1 off
    assert_eq!(percent_off(eur(4), 1000), eur(4)); // 0.4 off → 0 off
    assert_eq!(percent_off(eur(i64::MAX), BASIS_POINTS_MAX), eur(0));
    assert_eq!(percent_off(eur(1234), 0), eur(1234));
}

#[test]
fn quotes_check_every_line() {
    let c = catalog();
    let quote = c
        .quote(&[item("tea", None, 3), item("shirt", Some("m"), 1)], 0)
        .unwrap();
    assert_eq!(quote.subtotal, Some(eur(3 * 500 + 2200)));
    assert_eq!(quote.items[1].title, "The shirt – M");
    assert_eq!(c.quote(&[], 0).unwrap().subtotal, None);
    assert_eq!(
        c.quote(&[item("old", None, 1)], 0),
        Err(Error::InactiveProduct(id("old")))
    );
    assert_eq!(
        c.quote(&[item("nope", None, 1)], 0),
        Err(Error::UnknownProduct(id("nope")))
    );
    assert_eq!(
        c.quote(&[item("tea", None, 1), item("fan", None, 1)], 0),
        Err(Error::CurrencyMix {
            expected: eur(0).currency(),
            found: jpy(0).currency()
        })
    );
    let mut big = catalog();
    big.put_product(product("gold", eur(i64::MAX / 2))).unwrap();
    assert_eq!(
        big.quote(&[item("gold", None, 3)], 0),
        Err(Error::AmountOverflow)
    );
}

#[test]
fn reservations_are_all_or_nothing() {
    let mut c = catalog();
    // mug has 2: asking 3 fails and reserves nothing, not even the tea.
    assert_eq!(
        c.reserve(&order("o1"), &[item("tea", None, 4), item("mug", None, 3)]),
        Err(Error::OutOfStock {
            product: id("mug"),
            variant: None,
            requested: 3,
            available: 2
        })
    );
    assert_eq!(tracked(&c, "tea", None), (10, 0));
    assert_eq!(c.reservation(&order("o1")), None);
    // Two lines of the same unit add up.
    assert_eq!(
        c.reserve(&order("o1"), &[item("mug", None, 1), item("mug", None, 2)]),
        Err(Error::OutOfStock {
            product: id("mug"),
            variant: None,
            requested: 3,
            available: 2
        })
    );
    assert_eq!(
        c.reserve(
            &order("o1"),
            &[
                item("tea", None, 4),
                item("mug", None, 2),
                item("ebook", None, 50)
            ]
        ),
        Ok(Change::Applied)
    );
    assert_eq!(tracked(&c, "tea", None), (10, 4));
    assert_eq!(tracked(&c, "mug", None), (2, 2));
    assert_eq!(c.stock(&key("ebook", None)), Some(Stock::Unlimited));
    // The next order cannot have the mugs.
    assert!(matches!(
        c.reserve(&order("o2"), &[item("mug", None, 1)]),
        Err(Error::OutOfStock { available: 0, .. })
    ));
    assert_eq!(c.reserve(&order("o2"), &[]), Err(Error::EmptyCart));
    assert_eq!(
        c.reserve(&order("o2"), &[item("tea", None, 0)]),
        Err(Error::QuantityNotPositive { quantity: 0 })
    );
    assert_eq!(
        c.reserve(&order("o2"), &[item("shirt", None, 1)]),
        Err(Error::VariantRequired(id("shirt")))
    );
}

#[test]
fn reservation_steps_are_idempotent_per_order() {
    let mut c = catalog();
    let o = order("o1");
    let lines = [item("tea", None, 4)];
    assert_eq!(c.reserve(&o, &lines), Ok(Change::Applied));
    assert_eq!(c.reserve(&o, &lines), Ok(Change::Unchanged));
    assert_eq!(
        c.reserve(&o, &[item("tea", None, 5)]),
        Err(Error::ReservationMismatch(o.clone()))
    );
    assert_eq!(tracked(&c, "tea", None), (10, 4));

    assert_eq!(c.commit(&o), Ok(Change::Applied));
    assert_eq!(c.commit(&o), Ok(Change::Unchanged));
    assert_eq!(tracked(&c, "tea", None), (6, 0));
    assert_eq!(c.release(&o), Err(Error::ReservationClosed(o.clone())));
    assert_eq!(
        c.reserve(&o, &lines),
        Err(Error::ReservationClosed(o.clone()))
    );
    assert_eq!(c.restore(&o), Ok(Change::Applied));
    assert_eq!(c.restore(&o), Ok(Change::Unchanged));
    assert_eq!(tracked(&c, "tea", None), (10, 0));
    assert_eq!(c.reservation(&o), Some(ReservationState::Restored));

    let o2 = order("o2");
    c.reserve(&o2, &lines).unwrap();
    assert_eq!(c.restore(&o2), Err(Error::ReservationClosed(o2.clone())));
    assert!(!c.forget(&o2), "a held reservation is kept");
    assert_eq!(c.release(&o2), Ok(Change::Applied));
    assert_eq!(c.release(&o2), Ok(Change::Unchanged));
    assert_eq!(c.commit(&o2), Err(Error::ReservationClosed(o2.clone())));
    assert_eq!(tracked(&c, "tea", None), (10, 0));
    assert!(c.forget(&o2));
    assert_eq!(c.release(&o2), Err(Error::UnknownReservation(o2.clone())));
}

#[test]
fn stock_changes_respect_reservations() {
    let mut c = catalog();
    c.reserve(&order("o1"), &[item("shirt", Some("m"), 3)])
        .unwrap();
    assert_eq!(
        c.set_stock(&key("shirt", Some("m")), Some(2)),
        Err(Error::StockBelowReserved {
            requested: 2,
            reserved: 3
        })
    );
    c.set_stock(&key("shirt", Some("m")), Some(3)).unwrap();
    assert_eq!(tracked(&c, "shirt", Some("m")), (3, 3));
    // Unlimited and back: the held units are counted again.
    c.set_stock(&key("shirt", Some("m")), None).unwrap();
    c.set_stock(&key("shirt", Some("m")), Some(7)).unwrap();
    assert_eq!(tracked(&c, "shirt", Some("m")), (7, 3));
    // A variant or product that placed orders hold cannot disappear.
    let mut shirt = c.product(&id("shirt")).unwrap().spec().clone();
    shirt.variants.retain(|v| v.id.as_str() != "m");
    assert_eq!(
        c.put_product(shirt.clone()),
        Err(Error::InUse { what: "variant" })
    );
    assert_eq!(
        c.remove_product(&id("shirt")),
        Err(Error::InUse { what: "product" })
    );
    c.release(&order("o1")).unwrap();
    c.put_product(shirt).unwrap();
    assert_eq!(c.stock(&key("shirt", Some("m"))), None);
    assert_eq!(
        tracked(&c, "shirt", Some("s")),
        (1, 0),
        "kept variants keep their stock"
    );
    c.remove_product(&id("shirt")).unwrap();
    assert_eq!(
        c.set_stock(&key("shirt", Some("s")), Some(1)),
        Err(Error::UnknownProduct(id("shirt")))
    );
}

#[test]
fn deactivation_blocks_new_sales_not_placed_orders() {
    let mut c = catalog();
    c.reserve(&order("o1"), &[item("tea", None, 1)]).unwrap();
    c.set_active(&id("tea"), false).unwrap();
    assert_eq!(
        c.sellable(&key("tea", None)).map(|_| ()),
        Err(Error::InactiveProduct(id("tea")))
    );
    assert_eq!(c.commit(&order("o1")), Ok(Change::Applied));
    assert_eq!(tracked(&c, "tea", None), (9, 0));
}
