//! Carts: quantities, limits, typed errors, totals.

use super::super::cart::{CART_LINES_MAX, Cart, LINE_QUANTITY_MAX};
use super::super::catalog::Catalog;
use super::super::error::Error;
use super::{catalog, eur, jpy, key, product, user};

fn cart() -> Cart {
    Cart::new(user("alice"), 0)
}

#[test]
fn add_set_remove_and_totals() {
    let c = catalog();
    let mut cart = cart();
    cart.add(&c, &key("tea", None), 2, 1).unwrap();
    cart.add(&c, &key("tea", None), 1, 2).unwrap();
    cart.add(&c, &key("shirt", Some("m")), 1, 3).unwrap();
    assert_eq!(cart.items().len(), 2);
    assert_eq!(cart.items()[0].quantity, 3);
    assert_eq!(cart.version(), 3);
    assert_eq!(cart.updated_ms(), 3);
    assert_eq!(
        cart.totals(&c, 4).unwrap().subtotal,
        Some(eur(3 * 500 + 2200))
    );
    cart.set_quantity(&c, &key("tea", None), 1, 5).unwrap();
    assert_eq!(cart.totals(&c, 5).unwrap().subtotal, Some(eur(500 + 2200)));
    cart.remove(&key("tea", None), 6).unwrap();
    assert_eq!(cart.remove(&key("tea", None), 7), Err(Error::NotInCart));
    assert_eq!(
        cart.set_quantity(&c, &key("tea", None), 1, 7),
        Err(Error::NotInCart)
    );
    cart.clear(8);
    assert!(cart.is_empty());
    assert_eq!(cart.totals(&c, 8).unwrap().subtotal, None);
    assert_eq!(cart.version(), 6);
}

#[test]
fn bad_quantities_are_typed_errors() {
    let c = catalog();
    let mut cart = cart();
    assert_eq!(
        cart.add(&c, &key("tea", None), 0, 1),
        Err(Error::QuantityNotPositive { quantity: 0 })
    );
    assert_eq!(
        cart.add(&c, &key("tea", None), -3, 1),
        Err(Error::QuantityNotPositive { quantity: -3 })
    );
    cart.add(&c, &key("tea", None), i64::from(LINE_QUANTITY_MAX), 1)
        .unwrap();
    assert_eq!(
        cart.add(&c, &key("tea", None), 1, 1),
        Err(Error::QuantityTooLarge {
            quantity: i64::from(LINE_QUANTITY_MAX) + 1,
            max: LINE_QUANTITY_MAX
        })
    );
    assert_eq!(
        cart.set_quantity(&c, &key("tea", None), 0, 1),
        Err(Error::QuantityNotPositive { quantity: 0 })
    );
    assert_eq!(
        cart.set_quantity(&c, &key("tea", None), i64::MAX, 1),
        Err(Error::QuantityTooLarge {
            quantity: i64::MAX,
            max: LINE_QUANTITY_MAX
        })
    );
    assert_eq!(
        cart.items()[0].quantity,
        LINE_QUANTITY_MAX,
        "nothing changed"
    );
    assert_eq!(cart.version(), 1);
}

#[test]
fn unknown_inactive_variant_and_currency_errors() {
    let c = catalog();
    let mut cart = cart();
    assert_eq!(
        cart.add(&c, &key("nope", None), 1, 1),
        Err(Error::UnknownProduct("nope".parse().unwrap()))
    );
    assert_eq!(
        cart.add(&c, &key("old", None), 1, 1),
        Err(Error::InactiveProduct("old".parse().unwrap()))
    );
    assert_eq!(
        cart.add(&c, &key("shirt", None), 1, 1),
        Err(Error::VariantRequired("shirt".parse().unwrap()))
    );
    cart.add(&c, &key("tea", None), 1, 1).unwrap();
    assert_eq!(
        cart.add(&c, &key("fan", None), 1, 1),
        Err(Error::CurrencyMix {
            expected: eur(0).currency(),
            found: jpy(0).currency()
        })
    );
    assert_eq!(cart.items().len(), 1);
}

#[test]
fn lines_are_bounded() {
    let mut c: Catalog = catalog();
    for i in 0..=CART_LINES_MAX {
        let name = format!("p{i}");
        c.put_product(product(&name, eur(1))).unwrap();
    }
    let mut cart = cart();
    for i in 0..CART_LINES_MAX {
        cart.add(&c, &key(&format!("p{i}"), None), 1, 1).unwrap();
    }
    assert_eq!(
        cart.add(&c, &key(&format!("p{CART_LINES_MAX}"), None), 1, 1),
        Err(Error::TooMany {
            what: "cart lines",
            max: CART_LINES_MAX
        })
    );
    // Adding to an existing line is still fine at the limit.
    cart.add(&c, &key("p0", None), 1, 1).unwrap();
}

#[test]
fn totals_report_lines_that_can_no_longer_be_sold() {
    let mut c = catalog();
    let mut cart = cart();
    cart.add(&c, &key("tea", None), 1, 1).unwrap();
    c.set_active(&"tea".parse().unwrap(), false).unwrap();
    assert_eq!(
        cart.totals(&c, 2),
        Err(Error::InactiveProduct("tea".parse().unwrap()))
    );
    // Changing a line whose product turned inactive is refused; removing it works.
    assert_eq!(
        cart.set_quantity(&c, &key("tea", None), 2, 2),
        Err(Error::InactiveProduct("tea".parse().unwrap()))
    );
    cart.remove(&key("tea", None), 3).unwrap();
}
