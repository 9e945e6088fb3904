//! Coupons: rules, atomic redemption, release and settlement.

use super::super::catalog::Change;
use super::super::coupon::{COUPONS_MAX, CouponSpec, Coupons, Discount};
use super::super::error::Error;
use super::super::ids::{CouponCode, OrderId};
use super::{eur, id, jpy, user};

fn spec(code: &str, discount: Discount) -> CouponSpec {
    CouponSpec {
        code: id(code),
        discount,
        starts_ms: 100,
        ends_ms: 200,
        total_max: None,
        per_customer_max: None,
        minimum: None,
    }
}

fn percent(basis_points: u16) -> Discount {
    Discount::Percent { basis_points }
}

fn code(s: &str) -> CouponCode {
    id(s)
}

fn order(s: &str) -> OrderId {
    id(s)
}

#[test]
fn discounts() {
    let mut coupons = Coupons::new();
    coupons.put(spec("ten", percent(1000))).unwrap();
    coupons
        .put(spec("five", Discount::Amount(eur(500))))
        .unwrap();
    let alice = user("alice");
    let redeem = |c: &mut Coupons, k: &str, o: &str, total| {
        c.redeem(&code(k), &alice, &order(o), total, 150)
            .map(|(r, _)| r.discount)
    };
    assert_eq!(redeem(&mut coupons, "ten", "o1", eur(999)), Ok(eur(100)));
    assert_eq!(redeem(&mut coupons, "five", "o2", eur(2000)), Ok(eur(500)));
    // An amount never takes the total below zero.
    assert_eq!(redeem(&mut coupons, "five", "o3", eur(300)), Ok(eur(300)));
    assert_eq!(
        redeem(&mut coupons, "five", "o4", jpy(3000)),
        Err(Error::CurrencyMix {
            expected: eur(0).currency(),
            found: jpy(0).currency()
        })
    );
}

#[test]
fn rules_are_checked() {
    let mut coupons = Coupons::new();
    let mut s = spec("c", percent(1000));
    s.minimum = Some(eur(1000));
    s.total_max = Some(2);
    s.per_customer_max = Some(1);
    coupons.put(s).unwrap();
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let redeem = |c: &mut Coupons, who, o: &str, total, now| {
        c.redeem(&code("c"), who, &order(o), total, now).map(|_| ())
    };
    assert_eq!(
        redeem(&mut coupons, &alice, "o1", eur(2000), 99),
        Err(Error::CouponNotStarted(code("c")))
    );
    assert_eq!(
        redeem(&mut coupons, &alice, "o1", eur(2000), 200),
        Err(Error::CouponExpired(code("c")))
    );
    assert_eq!(
        redeem(&mut coupons, &alice, "o1", eur(999), 150),
        Err(Error::BelowMinimumOrder { minimum: eur(1000) })
    );
    assert_eq!(redeem(&mut coupons, &alice, "o1", eur(1000), 100), Ok(()));
    assert_eq!(
        redeem(&mut coupons, &alice, "o2", eur(1000), 150),
        Err(Error::CouponCustomerLimit(code("c")))
    );
    assert_eq!(redeem(&mut coupons, &bob, "o3", eur(1000), 150), Ok(()));
    assert_eq!(
        redeem(&mut coupons, &carol, "o4", eur(1000), 150),
        Err(Error::CouponExhausted(code("c")))
    );
    coupons.set_enabled(&code("c"), false).unwrap();
    assert_eq!(
        redeem(&mut coupons, &carol, "o4", eur(1000), 150),
        Err(Error::CouponDisabled(code("c")))
    );
    assert_eq!(
        coupons
            .redeem(&code("nope"), &carol, &order("o4"), eur(1), 150)
            .map(|_| ()),
        Err(Error::UnknownCoupon(code("nope")))
    );
    assert_eq!(
        coupons.set_enabled(&code("nope"), true),
        Err(Error::UnknownCoupon(code("nope")))
    );
}

#[test]
fn redemption_is_idempotent_per_order_and_released_once() {
    let mut coupons = Coupons::new();
    let mut s = spec("c", percent(1000));
    s.total_max = Some(1);
    coupons.put(s).unwrap();
    let alice = user("alice");
    let (first, change) = coupons
        .redeem(&code("c"), &alice, &order("o1"), eur(1000), 150)
        .unwrap();
    assert_eq!(change, Change::Applied);
    let (again, change) = coupons
        .redeem(&code("c"), &alice, &order("o1"), eur(1000), 150)
        .unwrap();
    assert_eq!((again, change), (first, Change::Unchanged));
    assert_eq!(coupons.coupon(&code("c")).unwrap().redeemed(), 1);

    assert_eq!(coupons.release(&code("c"), &order("o1")), Change::Applied);
    assert_eq!(coupons.release(&code("c"), &order("o1")), Change::Unchanged);
    assert_eq!(coupons.coupon(&code("c")).unwrap().redeemed(), 0);
    assert_eq!(coupons.coupon(&code("c")).unwrap().redeemed_by(&alice), 0);

    // Settled redemptions count and cannot be released.
    coupons
        .redeem(&code("c"), &alice, &order("o2"), eur(1000), 150)
        .unwrap();
    assert_eq!(coupons.settle(&code("c"), &order("o2")), Change::Applied);
    assert_eq!(coupons.settle(&code("c"), &order("o2")), Change::Unchanged);
    assert_eq!(coupons.release(&code("c"), &order("o2")), Change::Unchanged);
    assert_eq!(coupons.coupon(&code("c")).unwrap().redeemed(), 1);
    assert_eq!(
        coupons
            .redeem(&code("c"), &user("bob"), &order("o3"), eur(1000), 150)
            .map(|_| ()),
        Err(Error::CouponExhausted(code("c")))
    );
}

#[test]
fn preview_counts_nothing() {
    let mut coupons = Coupons::new();
    let mut s = spec("c", percent(5000));
    s.total_max = Some(1);
    coupons.put(s).unwrap();
    let alice = user("alice");
    assert_eq!(
        coupons.preview(&code("c"), &alice, eur(1000), 150),
        Ok(eur(500))
    );
    assert_eq!(
        coupons.preview(&code("c"), &alice, eur(1000), 150),
        Ok(eur(500))
    );
    assert_eq!(coupons.coupon(&code("c")).unwrap().redeemed(), 0);
}

#[test]
fn specs_are_validated_and_bounded() {
    let mut coupons = Coupons::new();
    let mut s = spec("c", percent(10));
    s.ends_ms = s.starts_ms;
    assert!(matches!(
        coupons.put(s),
        Err(Error::InvalidField {
            field: "coupon window",
            ..
        })
    ));
    assert!(matches!(
        coupons.put(spec("c", percent(0))),
        Err(Error::InvalidField { .. })
    ));
    assert!(matches!(
        coupons.put(spec("c", percent(10_001))),
        Err(Error::InvalidField { .. })
    ));
    assert!(matches!(
        coupons.put(spec("c", Discount::Amount(eur(0)))),
        Err(Error::InvalidField { .. })
    ));
    let mut s = spec("c", percent(10));
    s.total_max = Some(0);
    assert!(matches!(
        coupons.put(s),
        Err(Error::InvalidField {
            field: "coupon limit",
            ..
        })
    ));
    let mut s = spec("c", Discount::Amount(eur(5)));
    s.minimum = Some(jpy(5));
    assert!(matches!(coupons.put(s), Err(Error::CurrencyMix { .. })));
    for i in 0..COUPONS_MAX {
        coupons.put(spec(&format!("c{i}"), percent(10))).unwrap();
    }
    assert_eq!(
        coupons.put(spec("extra", percent(10))),
        Err(Error::TooMany {
            what: "coupons",
            max: COUPONS_MAX
        })
    );
    // Changing an existing coupon keeps working at the limit, and keeps its counters.
    coupons
        .redeem(&code("c0"), &user("alice"), &order("o1"), eur(100), 150)
        .unwrap();
    let mut s = spec("c0", percent(20));
    s.total_max = Some(1);
    coupons.put(s).unwrap();
    assert_eq!(coupons.coupon(&code("c0")).unwrap().redeemed(), 1);
    assert_eq!(
        coupons
            .redeem(&code("c0"), &user("bob"), &order("o2"), eur(100), 150)
            .map(|_| ()),
        Err(Error::CouponExhausted(code("c0")))
    );
}
