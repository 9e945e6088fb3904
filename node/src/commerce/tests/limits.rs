//! Limits at the limit and one past it, and the one mapping of errors to the wire.

use piazza_protocol::{ErrorCode, MediaId};

use super::super::catalog::{
    CATALOGS_MAX, CATEGORIES_MAX, Catalog, DESCRIPTION_BYTES_MAX, OPTION_BYTES_MAX,
    PRODUCT_CATEGORIES_MAX, PRODUCT_MEDIA_MAX, Section, VARIANT_OPTIONS_MAX,
};
use super::super::coupon::{CouponSpec, Discount};
use super::super::error::Error;
use super::super::order::{OrderCommand, REASON_BYTES_MAX, TRACKING_BYTES_MAX};
use super::super::payment::PaymentPlan;
use super::super::promo::{CustomerProfile, LABELS_MAX, PROFILE_PRODUCTS_MAX};
use super::{agent, alice, catalog, command, eur, id, item, place, product, shop, variant};

fn section() -> Section {
    Section { title: "S".into() }
}

#[test]
fn catalog_limits() {
    let mut c = Catalog::new();
    for i in 0..CATALOGS_MAX {
        c.put_catalog(id(&format!("c{i}")), section()).unwrap();
    }
    assert_eq!(
        c.put_catalog(id("extra"), section()),
        Err(Error::TooMany {
            what: "catalogs",
            max: CATALOGS_MAX
        })
    );
    for i in 0..CATEGORIES_MAX {
        c.put_category(id(&format!("k{i}")), section()).unwrap();
    }
    assert!(matches!(
        c.put_category(id("extra"), section()),
        Err(Error::TooMany { .. })
    ));

    let mut c = catalog();
    for i in 0..=PRODUCT_CATEGORIES_MAX {
        c.put_category(id(&format!("k{i}")), section()).unwrap();
    }
    let mut p = product("x", eur(1));
    p.categories = (0..PRODUCT_CATEGORIES_MAX)
        .map(|i| id(&format!("k{i}")))
        .collect();
    c.put_product(p.clone()).unwrap();
    p.categories.push(id(&format!("k{PRODUCT_CATEGORIES_MAX}")));
    assert!(matches!(c.put_product(p), Err(Error::TooMany { .. })));

    let mut p = product("x", eur(1));
    p.media = (0..PRODUCT_MEDIA_MAX)
        .map(|i| MediaId::from_digest(&[u8::try_from(i).unwrap(); 32]))
        .collect();
    c.put_product(p.clone()).unwrap();
    p.media.push(MediaId::from_digest(&[0xff; 32]));
    assert!(matches!(c.put_product(p), Err(Error::TooMany { .. })));

    let mut p = product("x", eur(1));
    p.description = "d".repeat(DESCRIPTION_BYTES_MAX);
    c.put_product(p.clone()).unwrap();
    p.description.push('d');
    assert!(matches!(
        c.put_product(p),
        Err(Error::InvalidField {
            field: "description",
            ..
        })
    ));

    let mut p = product("x", eur(1));
    let mut v = variant("v", None);
    v.options = (0..VARIANT_OPTIONS_MAX)
        .map(|i| (format!("o{i}"), "x".repeat(OPTION_BYTES_MAX)))
        .collect();
    p.variants = vec![v.clone()];
    c.put_product(p.clone()).unwrap();
    v.options[0].1.push('x');
    p.variants = vec![v.clone()];
    assert!(matches!(
        c.put_product(p.clone()),
        Err(Error::InvalidField {
            field: "option value",
            ..
        })
    ));
    v.options[0].1.pop();
    v.options.push(("one".into(), "more".into()));
    p.variants = vec![v];
    assert!(matches!(c.put_product(p), Err(Error::TooMany { .. })));
}

#[test]
fn order_text_limits() {
    let mut s = shop();
    place(&mut s, &alice(), "o1", vec![item("tea", None, 1)]);
    let long = |n| "r".repeat(n);
    assert!(matches!(
        command(
            &mut s,
            &agent(),
            "o1",
            1,
            OrderCommand::Reject {
                reason: long(REASON_BYTES_MAX + 1)
            }
        ),
        Err(Error::InvalidField {
            field: "reason",
            ..
        })
    ));
    command(&mut s, &agent(), "o1", 2, OrderCommand::Accept).unwrap();
    command(
        &mut s,
        &alice(),
        "o1",
        3,
        OrderCommand::RequestPayment {
            plan: PaymentPlan::Full,
        },
    )
    .unwrap();
    assert!(matches!(
        command(
            &mut s,
            &alice(),
            "o1",
            4,
            OrderCommand::Cancel {
                reason: long(REASON_BYTES_MAX + 1)
            }
        ),
        Err(Error::InvalidField { .. })
    ));
    command(
        &mut s,
        &alice(),
        "o1",
        5,
        OrderCommand::Cancel {
            reason: long(REASON_BYTES_MAX),
        },
    )
    .unwrap();

    // A free order (100 % coupon) is paid at once and can be fulfilled with a tracking note.
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
        id("p2"),
        id("o2"),
        vec![item("tea", None, 1)],
        Some(id("free")),
        1_000,
    )
    .unwrap();
    command(&mut s, &agent(), "o2", 1, OrderCommand::Accept).unwrap();
    command(
        &mut s,
        &alice(),
        "o2",
        2,
        OrderCommand::RequestPayment {
            plan: PaymentPlan::Full,
        },
    )
    .unwrap();
    let fulfil = |n| OrderCommand::Fulfil {
        tracking: Some("t".repeat(n)),
    };
    assert!(matches!(
        command(&mut s, &agent(), "o2", 3, fulfil(TRACKING_BYTES_MAX + 1)),
        Err(Error::InvalidField {
            field: "tracking",
            ..
        })
    ));
    assert!(matches!(
        command(&mut s, &agent(), "o2", 4, fulfil(0)),
        Err(Error::InvalidField {
            field: "tracking",
            ..
        })
    ));
    command(&mut s, &agent(), "o2", 5, fulfil(TRACKING_BYTES_MAX)).unwrap();
}

#[test]
fn profile_limits() {
    let mut p = CustomerProfile::default();
    for i in 0..LABELS_MAX {
        p.add_label(id(&format!("l{i}"))).unwrap();
    }
    p.add_label(id("l0")).unwrap();
    assert!(matches!(
        p.add_label(id("extra")),
        Err(Error::TooMany { .. })
    ));
    for i in 0..=PROFILE_PRODUCTS_MAX {
        p.note_purchase(id(&format!("p{i}")));
        p.note_interest(id(&format!("p{i}")));
    }
    assert_eq!(p.purchased.len(), PROFILE_PRODUCTS_MAX);
    assert_eq!(p.interests.len(), PROFILE_PRODUCTS_MAX);
}

#[test]
fn errors_map_to_the_wire_by_class() {
    let code = |e: Error| ErrorCode::from(e).label();
    assert_eq!(code(Error::QuantityNotPositive { quantity: -1 }), "invalid");
    assert_eq!(code(Error::EmptyCart), "invalid");
    assert_eq!(
        code(Error::CurrencyMix {
            expected: eur(0).currency(),
            found: super::jpy(0).currency()
        }),
        "invalid"
    );
    assert_eq!(code(Error::TooMany { what: "x", max: 1 }), "too_large");
    assert_eq!(code(Error::UnknownProduct(id("p"))), "not_found");
    assert_eq!(code(Error::UnknownOrder(id("o"))), "not_found");
    assert_eq!(code(Error::Forbidden { action: "x" }), "forbidden");
    assert_eq!(code(Error::CouponExhausted(id("c"))), "conflict");
    assert_eq!(code(Error::PaymentInProgress), "conflict");
    assert_eq!(
        code(Error::ProviderInconsistent {
            payment: super::super::ids::PaymentId::new(&id("o"), 1),
            reason: "x"
        }),
        "internal"
    );
    assert_eq!(
        ErrorCode::from(Error::InvalidField {
            field: "title",
            reason: "too long"
        }),
        ErrorCode::invalid("title", "too long")
    );
}
